"""The CPython patch series: `cpython-patches/series` lists patch files in order.

Each patch is first tried with `patch --dry-run`; only a patch whose every hunk applies
(with no fuzz: context must match exactly) is applied for real, so a failure leaves no
half-patched file behind and names the patch and the hunks that failed.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import LockError, PatchError

_HUNK_FAILED = re.compile(r"^Hunk #\d+ FAILED at \d+.*$", re.MULTILINE)
_FILE_LINE = re.compile(r"^(?:patching file|checking file) (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Patch:
    name: str
    path: Path
    sha256: str


def read_series(patch_dir: Path) -> list[Patch]:
    """Read `series`: one patch file name per line; '#' starts a comment."""
    series = patch_dir / "series"
    try:
        lines = series.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LockError(series, "file", f"cannot read: {exc.strerror}") from exc
    patches: list[Patch] = []
    for number, line in enumerate(lines, 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if "/" in name or not name.endswith(".patch"):
            raise LockError(series, f"line {number}", f"{name!r} is not a *.patch file name")
        path = patch_dir / name
        if not path.is_file():
            raise LockError(series, f"line {number}", f"{name} is listed but does not exist")
        if any(p.name == name for p in patches):
            raise LockError(series, f"line {number}", f"{name} is listed twice")
        patches.append(Patch(name, path, hashlib.sha256(path.read_bytes()).hexdigest()))
    return patches


def apply_series(patches: list[Patch], tree: Path) -> list[str]:
    """Apply every patch to `tree` in order; return one summary line per patch."""
    applied = []
    for patch in patches:
        _run_patch(patch, tree, dry_run=True)
        out = _run_patch(patch, tree, dry_run=False)
        files = _FILE_LINE.findall(out)
        applied.append(f"{patch.name}: {len(files)} file(s)")
    return applied


def _run_patch(patch: Patch, tree: Path, *, dry_run: bool) -> str:
    cmd = ["patch", "-p1", "--batch", "--forward", "--fuzz=0", "--no-backup-if-mismatch", "-r", "-"]
    if dry_run:
        cmd.append("--dry-run")
    cmd += ["-i", str(patch.path.resolve())]
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        hunks = _describe_failed_hunks(out)
        detail = "hunks failed" if hunks else out.strip().splitlines()[-1] if out.strip() else "patch failed"
        raise PatchError(patch.name, detail, hunks)
    return out


def _describe_failed_hunks(out: str) -> list[str]:
    """Pair each 'Hunk #N FAILED' line with the file patch was working on."""
    result, current = [], "?"
    for line in out.splitlines():
        m = _FILE_LINE.match(line)
        if m:
            current = m.group(1)
        elif _HUNK_FAILED.match(line):
            result.append(f"{current}: {line.strip()}")
        elif "Reversed (or previously applied) patch detected" in line:
            result.append(f"{current}: already applied (reversed patch detected)")
    return result
