"""fetch: size and SHA-256 verified while streaming; a mismatch stops with expected and
actual values and leaves nothing in the cache; mirrors are tried in order."""

import hashlib
import http.server
import threading
from dataclasses import replace

import pytest

from pyisolate_build import fetch
from pyisolate_build.errors import FetchError, IntegrityError
from pyisolate_build.lock import Source

PAYLOAD = b"pinned bytes\n" * 1000


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on loopback serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def source(urls, payload=PAYLOAD) -> Source:
    return Source(
        name="thing",
        version="1",
        filename="thing.tar",
        size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(),
        urls=tuple(urls),
        license="MIT",
        why="test",
        identity="test",
    )


def cache_files(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_download_verifies_and_caches(server, tmp_path):
    www, base = server
    (www / "thing.tar").write_bytes(PAYLOAD)
    cache = tmp_path / "cache"
    path = fetch.fetch(source([f"{base}/thing.tar"]), cache)
    assert path.read_bytes() == PAYLOAD
    assert cache_files(cache) == ["thing.tar"]
    (www / "thing.tar").unlink()  # second call must not need the network
    assert fetch.fetch(source([f"{base}/thing.tar"]), cache) == path


def test_unreachable_first_place_falls_back_to_mirror(server, tmp_path):
    www, base = server
    (www / "mirror.tar").write_bytes(PAYLOAD)
    logs = []
    path = fetch.fetch(source([f"{base}/missing.tar", f"{base}/mirror.tar"]), tmp_path / "c", logs.append)
    assert path.read_bytes() == PAYLOAD
    assert any("missing.tar unavailable" in line for line in logs)


def test_hash_mismatch_names_file_and_hashes_and_keeps_nothing(server, tmp_path):
    www, base = server
    evil = PAYLOAD.replace(b"pinned", b"evil!!")  # same size, other bytes
    (www / "thing.tar").write_bytes(evil)
    cache = tmp_path / "cache"
    src = source([f"{base}/thing.tar"])
    with pytest.raises(IntegrityError) as info:
        fetch.fetch(src, cache)
    message = str(info.value)
    assert "thing.tar" in message and "sha256" in message
    assert src.sha256 in message and hashlib.sha256(evil).hexdigest() in message
    assert cache_files(cache) == []  # no partial or temporary file left


def test_oversize_download_is_cut_off(server, tmp_path):
    www, base = server
    (www / "thing.tar").write_bytes(PAYLOAD + b"trailing")
    cache = tmp_path / "cache"
    with pytest.raises(IntegrityError, match="size"):
        fetch.fetch(source([f"{base}/thing.tar"]), cache)
    assert cache_files(cache) == []


def test_short_download_is_refused(server, tmp_path):
    www, base = server
    (www / "thing.tar").write_bytes(PAYLOAD[:-1])
    with pytest.raises(IntegrityError, match="size"):
        fetch.fetch(source([f"{base}/thing.tar"]), tmp_path / "cache")


def test_corrupt_cache_entry_is_replaced(server, tmp_path):
    www, base = server
    (www / "thing.tar").write_bytes(PAYLOAD)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "thing.tar").write_bytes(b"bit rot")
    logs = []
    path = fetch.fetch(source([f"{base}/thing.tar"]), cache, logs.append)
    assert path.read_bytes() == PAYLOAD
    assert any("removing the cached copy" in line for line in logs)


def test_no_place_delivers(tmp_path):
    src = replace(source(["http://127.0.0.1:9/nothing", "file:///nonexistent/thing.tar"]))
    with pytest.raises(FetchError) as info:
        fetch.fetch(src, tmp_path / "cache")
    assert "127.0.0.1:9" in str(info.value) and "nonexistent" in str(info.value)
