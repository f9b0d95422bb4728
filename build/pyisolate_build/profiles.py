"""Build flavours from `build/profiles.toml`: the one place hardening flags live."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LockError

_AUDIT_BOOLS = ("pie", "relro", "nx_stack", "stack_protector", "fortify")
_CET = ("require", "report", "off")


@dataclass(frozen=True)
class AuditPolicy:
    pie: bool = True
    relro: bool = True
    nx_stack: bool = True
    stack_protector: bool = True
    fortify: bool = True
    cet: str = "report"


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

    def key(self) -> dict:
        """Everything of the flavour that changes the built bytes."""
        return {
            "cc": self.cc,
            "opt": self.opt,
            "cflags": list(self.cflags),
            "ldflags": list(self.ldflags),
            "exe_ldflags": list(self.exe_ldflags),
            "configure": list(self.configure),
        }


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
        audit_raw = raw.get("audit", {})
        unknown = set(audit_raw) - set(_AUDIT_BOOLS) - {"cet"}
        if unknown:
            raise LockError(path, f"{where}.audit", f"unknown keys {sorted(unknown)}")
        for key in _AUDIT_BOOLS:
            if not isinstance(audit_raw.get(key, True), bool):
                raise LockError(path, f"{where}.audit", f"'{key}' must be true or false")
        if audit_raw.get("cet", "report") not in _CET:
            raise LockError(path, f"{where}.audit", f"'cet' must be one of {_CET}")
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
        )
    if not flavours:
        raise LockError(path, "flavour", "no [flavour.NAME] tables")
    return flavours
