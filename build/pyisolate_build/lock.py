"""`build/sources.lock`: the one list of external inputs, parsed and validated.

A lock that breaks the schema is refused whole, with the file, the entry and the field
that is wrong; the driver never guesses a missing hash or size.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import LockError

SCHEMA = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_REQUIRED = {
    "name": str,
    "version": str,
    "filename": str,
    "size": int,
    "sha256": str,
    "urls": list,
    "license": str,
    "why": str,
    "identity": str,
}


@dataclass(frozen=True)
class Source:
    name: str
    version: str
    filename: str
    size: int
    sha256: str
    urls: tuple[str, ...]
    license: str
    why: str
    identity: str

    def key(self) -> dict:
        """What of this entry determines the bytes (for cache keys)."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


def load(path: Path) -> dict[str, Source]:
    """Parse and validate a lock file; return its sources by name."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LockError(path, "file", f"cannot read: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LockError(path, "syntax", str(exc)) from exc

    if data.get("schema") != SCHEMA:
        raise LockError(path, "schema", f"expected schema = {SCHEMA}, found {data.get('schema')!r}")
    entries = data.get("source")
    if not isinstance(entries, list) or not entries:
        raise LockError(path, "source", "expected at least one [[source]] table")
    unknown_top = set(data) - {"schema", "source"}
    if unknown_top:
        raise LockError(path, "top level", f"unknown keys {sorted(unknown_top)}")

    sources: dict[str, Source] = {}
    for index, entry in enumerate(entries):
        where = f"[[source]] #{index + 1}" + (f" ({entry['name']})" if isinstance(entry.get("name"), str) else "")
        sources_entry = _validate(path, where, entry)
        if sources_entry.name in sources:
            raise LockError(path, where, f"duplicate name {sources_entry.name!r}")
        sources[sources_entry.name] = sources_entry
    return sources


def _validate(path: Path, where: str, entry: dict) -> Source:
    for field, kind in _REQUIRED.items():
        if field not in entry:
            raise LockError(path, where, f"missing required field '{field}'")
        value = entry[field]
        # bool is an int subclass; a size of `true` is not a size.
        if not isinstance(value, kind) or isinstance(value, bool):
            raise LockError(path, where, f"field '{field}' must be {kind.__name__}, found {type(value).__name__}")
    unknown = set(entry) - set(_REQUIRED)
    if unknown:
        raise LockError(path, where, f"unknown fields {sorted(unknown)}")
    if not _NAME.match(entry["name"]):
        raise LockError(path, where, f"field 'name' {entry['name']!r} is not a plain identifier")
    if not _SHA256.match(entry["sha256"]):
        raise LockError(path, where, f"field 'sha256' must be 64 lower-case hex digits, found {entry['sha256']!r}")
    if entry["size"] <= 0:
        raise LockError(path, where, f"field 'size' must be positive, found {entry['size']}")
    if "/" in entry["filename"] or entry["filename"] in {"", ".", ".."}:
        raise LockError(path, where, f"field 'filename' {entry['filename']!r} must be a bare name")
    urls = entry["urls"]
    if not urls or not all(isinstance(u, str) and re.match(r"^(https?|file)://", u) for u in urls):
        raise LockError(path, where, "field 'urls' must be a non-empty list of http(s)/file URLs")
    return Source(
        name=entry["name"],
        version=entry["version"],
        filename=entry["filename"],
        size=entry["size"],
        sha256=entry["sha256"],
        urls=tuple(urls),
        license=entry["license"],
        why=entry["why"],
        identity=entry["identity"],
    )
