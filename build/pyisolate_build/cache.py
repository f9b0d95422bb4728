"""The build cache outside the checkout, keyed by a hash of every input of a step."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path


def root() -> Path:
    """$PYISOLATE_CACHE, else $XDG_CACHE_HOME/pyisolate, else ~/.cache/pyisolate."""
    if env := os.environ.get("PYISOLATE_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pyisolate"


def key(inputs: dict) -> str:
    """SHA-256 of the canonical JSON of `inputs` (sorted keys, no whitespace)."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def file_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def work_dir(name: str) -> Path:
    """An empty scratch directory for building artefact `name` (a leftover of an
    interrupted build is removed first)."""
    work = root() / "work" / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    return work


def publish(staging: Path, final: Path) -> None:
    """Move a finished artefact into place in one rename; a stale copy is replaced."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        shutil.rmtree(final)
    os.rename(staging, final)
