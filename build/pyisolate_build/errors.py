"""The build driver's exceptions: one shallow tree, each message says what was
expected, what was found, and what to do next."""

from __future__ import annotations

from pathlib import Path


class BuildError(Exception):
    """Base of every error the driver raises on purpose."""


class LockError(BuildError):
    """`sources.lock` (or another driver config file) is malformed."""

    def __init__(self, path: Path | str, where: str, problem: str):
        self.path, self.where, self.problem = str(path), where, problem
        super().__init__(f"{path}: {where}: {problem}")


class FetchError(BuildError):
    """No listed place delivered the file."""


class IntegrityError(BuildError):
    """Downloaded or cached bytes are not the pinned bytes."""

    def __init__(self, name: str, what: str, expected: object, actual: object, origin: str):
        self.name, self.what = name, what
        self.expected, self.actual, self.origin = expected, actual, origin
        super().__init__(
            f"{name}: {what} mismatch for {origin}\n"
            f"  expected: {expected}\n"
            f"  actual:   {actual}\n"
            "  nothing was kept; check build/sources.lock or the mirror"
        )


class PatchError(BuildError):
    """A patch of the series does not apply."""

    def __init__(self, patch: str, detail: str, hunks: list[str] | None = None):
        self.patch, self.detail, self.hunks = patch, detail, hunks or []
        failed = "".join(f"\n  {h}" for h in self.hunks)
        super().__init__(f"patch {patch} does not apply: {detail}{failed}")


class StepError(BuildError):
    """An external build step (configure, make, …) failed; its log says why."""

    def __init__(self, step: str, log: Path, tail: str, returncode: int):
        self.step, self.log, self.tail, self.returncode = step, log, tail, returncode
        super().__init__(f"step '{step}' failed (exit {returncode}); last lines of {log}:\n{tail}")


class AuditError(BuildError):
    """An ELF file of the prefix lacks a required hardening property."""

    def __init__(self, failures: list[tuple[str, str, str]]):
        self.failures = failures
        lines = "".join(f"\n  {path}: {prop}: {detail}" for path, prop, detail in failures)
        super().__init__(f"ELF hardening audit failed for {len(failures)} propert(y/ies):{lines}")


class SystemDepsError(BuildError):
    """System packages the build needs are missing and cannot be installed."""
