"""Build flavours from `build/profiles.toml`: the one place hardening flags live."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LockError

_AUDIT_BOOLS = ("pie", "relro", "nx_stack", "stack_protector", "fortify")
_CET = ("require", "report", "off")
_CFI = ("require", "report", "off")
# Variables the driver itself sets from the flavour's other keys; `env` may not set them.
DRIVER_VARS = frozenset(
    ["CC", "OPT", "CFLAGS", "LDFLAGS", "LINKFORSHARED", "CFLAGS_NODIST", "LDFLAGS_NODIST", "LC_ALL"]
)
# Placeholders the build-only flags may use, filled in by the driver at build time. Both
# stand for paths that are the same on every machine and checkout, because configure
# records these flags in sysconfig and clang in every object's compile record: {build} is
# the fixed build root, {repo}/PATH a checkout file that the driver copies into the
# (fixed) build tree. Their values never join the cache key; the content of a file named
# with {repo}/PATH does (see `repo_files`).
PLACEHOLDERS = ("{build}", "{repo}")
_REPO_FILE = re.compile(r"\{repo\}/([^\s,=]+)")


@dataclass(frozen=True)
class AuditPolicy:
    pie: bool = True
    relro: bool = True
    nx_stack: bool = True
    stack_protector: bool = True
    fortify: bool = True
    cet: str = "report"
    cfi: str = "report"


@dataclass(frozen=True)
class Flavour:
    name: str
    description: str
    cc: str
    opt: str
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    exe_ldflags: tuple[str, ...]
    configure: tuple[str, ...]
    audit: AuditPolicy = field(default_factory=AuditPolicy)
    build_cflags: tuple[str, ...] = ()
    build_ldflags: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def key(self) -> dict:
        """Everything of the flavour that changes the built bytes."""
        key = {
            "cc": self.cc,
            "opt": self.opt,
            "cflags": list(self.cflags),
            "ldflags": list(self.ldflags),
            "exe_ldflags": list(self.exe_ldflags),
            "configure": list(self.configure),
        }
        # Only when set, so that flavours without them keep the keys they always had.
        for name in ("build_cflags", "build_ldflags"):
            if getattr(self, name):
                key[name] = list(getattr(self, name))
        if self.env:
            key["env"] = dict(self.env)
        return key

    def expand(self, flags: tuple[str, ...], build_root: Path, tree: Path) -> list[str]:
        """`flags` with {build} as `build_root` and {repo} as `tree`, the build tree that
        holds the copies of the checkout files the flags name."""
        return [flag.replace("{build}", str(build_root)).replace("{repo}", str(tree)) for flag in flags]

    def repo_files(self) -> list[str]:
        """Checkout files the build-only flags name ({repo}/PATH), as PATHs."""
        return sorted({m for flag in self.build_cflags + self.build_ldflags for m in _REPO_FILE.findall(flag)})


def load(path: Path) -> dict[str, Flavour]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LockError(path, "file", f"cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise LockError(path, "syntax", str(exc)) from exc
    flavours = {}
    for name, raw in data.get("flavour", {}).items():
        where = f"[flavour.{name}]"

        def strings(key: str, raw: dict = raw, where: str = where) -> tuple[str, ...]:
            value = raw.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise LockError(path, where, f"'{key}' must be a list of strings")
            return tuple(value)

        for key in ("description", "cc", "opt"):
            if not isinstance(raw.get(key), str):
                raise LockError(path, where, f"missing or non-string '{key}'")
        flag_keys = ("cflags", "ldflags", "exe_ldflags", "configure", "build_cflags", "build_ldflags")
        for key in flag_keys:
            for flag in strings(key):
                if "{" in flag and key not in ("build_cflags", "build_ldflags"):
                    raise LockError(path, where, f"'{key}': placeholders are only for build_cflags/build_ldflags")
                if "{" in flag and not any(p in flag for p in PLACEHOLDERS):
                    raise LockError(path, where, f"'{key}': unknown placeholder in {flag!r}; known: {PLACEHOLDERS}")
        env = raw.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise LockError(path, where, "'env' must be a table of strings")
        for var in env:
            if not var.isidentifier() or var.upper() != var:
                raise LockError(path, f"{where}.env", f"{var!r} is not an environment variable name")
            if var in DRIVER_VARS:
                raise LockError(path, f"{where}.env", f"{var} is set by the driver from the flavour's other keys")
        unknown_keys = set(raw) - {"description", "audit", "env", *flag_keys, "cc", "opt"}
        if unknown_keys:
            raise LockError(path, where, f"unknown keys {sorted(unknown_keys)}")
        audit_raw = raw.get("audit", {})
        unknown = set(audit_raw) - set(_AUDIT_BOOLS) - {"cet", "cfi"}
        if unknown:
            raise LockError(path, f"{where}.audit", f"unknown keys {sorted(unknown)}")
        for key in _AUDIT_BOOLS:
            if not isinstance(audit_raw.get(key, True), bool):
                raise LockError(path, f"{where}.audit", f"'{key}' must be true or false")
        if audit_raw.get("cet", "report") not in _CET:
            raise LockError(path, f"{where}.audit", f"'cet' must be one of {_CET}")
        if audit_raw.get("cfi", "report") not in _CFI:
            raise LockError(path, f"{where}.audit", f"'cfi' must be one of {_CFI}")
        flavours[name] = Flavour(
            name=name,
            description=raw["description"],
            cc=raw["cc"],
            opt=raw["opt"],
            cflags=strings("cflags"),
            ldflags=strings("ldflags"),
            exe_ldflags=strings("exe_ldflags"),
            configure=strings("configure"),
            audit=AuditPolicy(**audit_raw),
            build_cflags=strings("build_cflags"),
            build_ldflags=strings("build_ldflags"),
            env=tuple(sorted(env.items())),
        )
    if not flavours:
        raise LockError(path, "flavour", "no [flavour.NAME] tables")
    return flavours
