"""Download tests against a local HTTP server on 127.0.0.1 only; nothing else is contacted."""

import functools
import hashlib
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bayesrnn.data.checksums import KNOWN_SHA256, ChecksumError
from bayesrnn.data.corpora import load_ptb
from bayesrnn.data.download import (
    REGISTRY,
    DownloadError,
    download_file,
    download_polarity,
    download_ptb,
)
from bayesrnn.data.polarity import load_polarity

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 at a free port; yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found: {SHARED_DATA} (files to serve locally)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def data_url(shared_data: Path) -> Iterator[str]:
    with serve(shared_data) as url:
        yield url


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_registry_pins_every_ptb_file():
    for key in ("ptb", "ptb_char"):
        assert len(REGISTRY[key]) == 3
        for remote in REGISTRY[key]:
            assert remote.sha256 == KNOWN_SHA256[remote.filename]
            assert remote.url.startswith("https://") and remote.url.endswith(remote.filename)
    (tarball,) = REGISTRY["rt-polarity"]
    assert tarball.sha256 is None and tarball.url.endswith("rt-polaritydata.tar.gz")


@pytest.mark.parametrize("level", ["word", "char"])
def test_download_ptb_through_local_server(
    level: str, shared_data: Path, data_url: str, tmp_path: Path
):
    key = "ptb" if level == "word" else "ptb_char"
    folder = download_ptb(tmp_path, level=level, base_url=f"{data_url}/{key}/")
    assert folder == tmp_path / key
    for remote in REGISTRY[key]:
        got = (folder / remote.filename).read_bytes()
        assert got == (shared_data / key / remote.filename).read_bytes()
        assert hashlib.sha256(got).hexdigest() == remote.sha256
    assert sorted(p.name for p in folder.iterdir()) == sorted(r.filename for r in REGISTRY[key])
    if level == "word":
        assert load_ptb(tmp_path).sizes()["valid"] == 73_760
    # A second call finds good files and does not download again (the server may be gone).
    assert download_ptb(tmp_path, level=level, base_url=f"http://127.0.0.1:{_closed_port()}")


def test_checksum_mismatch_leaves_no_file(data_url: str, tmp_path: Path):
    dest = tmp_path / "ptb.valid.txt"
    with pytest.raises(ChecksumError, match=r"ptb\.valid\.txt"):
        download_file(f"{data_url}/ptb/ptb.valid.txt", dest, sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_bad_download_keeps_existing_good_file(data_url: str, tmp_path: Path):
    dest = tmp_path / "ptb.test.txt"
    download_file(f"{data_url}/ptb/ptb.test.txt", dest, sha256=KNOWN_SHA256["ptb.test.txt"])
    before = dest.read_bytes()
    with pytest.raises(ChecksumError):
        download_file(f"{data_url}/ptb/ptb.valid.txt", dest, sha256=KNOWN_SHA256[dest.name])
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(f"{data_url}/ptb/nope.txt", dest)
    assert dest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]


def test_unreachable_url_fails_fast(tmp_path: Path):
    url = f"http://127.0.0.1:{_closed_port()}/ptb.train.txt"
    start = time.monotonic()
    with pytest.raises(DownloadError, match="offline") as info:
        download_file(url, tmp_path / "x.txt", timeout=5)
    assert time.monotonic() - start < 5
    assert url in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, OSError)
    assert list(tmp_path.iterdir()) == []


def test_download_file_rejects_non_http(tmp_path: Path):
    with pytest.raises(ValueError, match="http"):
        download_file("file:///etc/hostname", tmp_path / "x")


_MEMBERS = ("rt-polarity.pos", "rt-polarity.neg", "rt-polaritydata.README.1.0.txt")


def _tarball(
    shared_data: Path, path: Path, tamper: bool = False, names: tuple[str, ...] = _MEMBERS
) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            source = shared_data / "rt-polarity" / name
            if tamper and name.endswith(".neg"):
                source = path.parent / name
                source.write_bytes(b"not the data\n")
            folder = "" if name.startswith("rt-polaritydata") else "rt-polaritydata/"
            tar.add(source, arcname=f"{folder}{name}")
    return path


def test_download_polarity_verifies_members(shared_data: Path, tmp_path: Path):
    served = tmp_path / "served"
    served.mkdir()
    _tarball(shared_data, served / "good.tar.gz")
    _tarball(shared_data, served / "bad.tar.gz", tamper=True)
    _tarball(shared_data, served / "partial.tar.gz", names=("rt-polarity.pos",))
    (served / "broken.tar.gz").write_bytes(b"not gzip")
    with serve(served) as url:
        with pytest.raises(ChecksumError, match=r"rt-polarity\.neg"):
            download_polarity(tmp_path / "a", url=f"{url}/bad.tar.gz")
        assert list((tmp_path / "a" / "rt-polarity").iterdir()) == []
        with pytest.raises(DownloadError, match=r"tar\.gz"):
            download_polarity(tmp_path / "a", url=f"{url}/broken.tar.gz")
        with pytest.raises(DownloadError, match=r"rt-polarity\.neg"):
            download_polarity(tmp_path / "a", url=f"{url}/partial.tar.gz")
        assert list((tmp_path / "a" / "rt-polarity").iterdir()) == []
        folder = download_polarity(tmp_path / "b", url=f"{url}/good.tar.gz")
    assert sorted(p.name for p in folder.iterdir()) == [
        "rt-polarity.neg",
        "rt-polarity.pos",
        "rt-polaritydata.README.1.0.txt",
    ]
    assert load_polarity(tmp_path / "b").sizes() == {"train": 8_530, "valid": 1_066, "test": 1_066}


class _CutShort(_QuietHandler):
    """Announces 1000 bytes, sends 100, and closes: a transfer broken part-way."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x" * 100)
        self.wfile.flush()
        self.close_connection = True


def test_a_truncated_transfer_without_a_checksum_is_refused(tmp_path: Path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CutShort)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/file.txt"
        with pytest.raises(DownloadError):
            download_file(url, tmp_path / "file.txt", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert list(tmp_path.iterdir()) == []


def test_downloads_follow_the_umask(data_url: str, tmp_path: Path):
    import os

    dest = download_file(f"{data_url}/ptb/ptb.valid.txt", tmp_path / "v.txt")
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask
