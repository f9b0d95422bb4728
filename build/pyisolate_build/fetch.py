"""The only code that touches the network: fetch a locked source into the download cache.

Size and SHA-256 are checked while streaming; bytes land under a temporary name and are
renamed into place only once they verify, so the cache never holds a partial or wrong file.
A cached file is re-verified before every use.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .errors import FetchError, IntegrityError
from .lock import Source

CHUNK = 1 << 20
TIMEOUT = 30  # seconds without progress before a place is given up on


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(source: Source, path: Path, origin: str) -> None:
    size = path.stat().st_size
    if size != source.size:
        raise IntegrityError(source.filename, "size", source.size, size, origin)
    actual = sha256_file(path)
    if actual != source.sha256:
        raise IntegrityError(source.filename, "sha256", source.sha256, actual, origin)


def fetch(
    source: Source,
    cache_dir: Path,
    log: Callable[[str], None] = lambda _msg: None,
) -> Path:
    """Return the path of the verified file, downloading it if needed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / source.filename
    if target.exists():
        try:
            verify(source, target, f"cached {target}")
            log(f"{source.filename}: cached copy verified")
            return target
        except IntegrityError as exc:
            # A corrupt cache entry is not trusted and not kept.
            log(f"{exc}\n  removing the cached copy and fetching again")
            target.unlink()

    failures: list[str] = []
    for url in source.urls:
        try:
            _download(source, url, target, log)
            return target
        except IntegrityError:
            raise  # wrong bytes from a listed place: stop, do not try to paper over it
        except (OSError, urllib.error.URLError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            failures.append(f"{url}: {reason}")
            log(f"{source.filename}: {url} unavailable ({reason}); trying the next place")
    raise FetchError(f"{source.filename}: no listed place delivered it:\n  " + "\n  ".join(failures))


def _download(source: Source, url: str, target: Path, log: Callable[[str], None]) -> None:
    log(f"{source.filename}: downloading {url}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{source.filename}.", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            for block in iter(lambda: resp.read(CHUNK), b""):
                size += len(block)
                if size > source.size:
                    raise IntegrityError(source.filename, "size", source.size, f"more than {source.size}", url)
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if size != source.size:
            raise IntegrityError(source.filename, "size", source.size, size, url)
        if digest.hexdigest() != source.sha256:
            raise IntegrityError(source.filename, "sha256", source.sha256, digest.hexdigest(), url)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
