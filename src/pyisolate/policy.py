"""Sandbox policies: TOML files, validated whole, held as immutable objects.

A policy file (see `policies/*.toml` for the shipped templates):

    [policy]      name, description
    [filesystem]  read = [paths], write = [paths]        (write implies read)
    [network]     connect = ["IP:PORT", …]               ("*" as IP or port: any)
    [modules]     allow = ["*"] or [names], deny = [names] (deny wins; absent = DEFAULT_DENY)
    [builtins]    enable = [names]                        (re-enable removed builtins)
    [limits]      memory = "256M", cpu_time = 10.0, wall_time = 60.0, open_files = 64, threads = 8
    [guards]      accept_reduced = false                  (true: run even without kernel guards)

An empty list means deny: `read = []` reads nothing beyond the distribution's own
standard library (imports need it; it holds nothing secret). Paths may use placeholders
expanded when a sandbox is created: {stdlib} (the distribution's lib/), {script_dir},
{cwd}, {tmp} (a private temporary directory made for the sandbox).

The kernel enforces the filesystem and network sections too (Landlock on the sandbox's
thread, a seccomp allow-list; see docs/runtime.md "Kernel guards"). When the host cannot
apply them (no Landlock, no seccomp, or a Landlock too old for TCP port rules while the
policy has connect rules), the sandbox is refused, unless `[guards] accept_reduced = true`:
then it runs with the Python-level layer only for what is missing, and the supervisor
says so on stderr and in `Sandbox.guards["reduced"]`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType

from .errors import PolicyError

TEMPLATES = Path(__file__).parent / "policies"

# Modules gone from every sandbox unless a policy's own `deny` list leaves them out.
DEFAULT_DENY = (
    "ctypes",
    "_ctypes",
    "cffi",
    "_cffi_backend",
    "mmap",
    "pickle",
    "_pickle",
    "pickletools",
    "shelve",
    "marshal",
    "subprocess",
    "_posixsubprocess",
    "multiprocessing",
    "_multiprocessing",
    "_posixshmem",
    "concurrent.interpreters",
    "_interpreters",
    "_interpqueues",
    "_interpchannels",
    "socket",
    "_socket",
    "ssl",
    "_ssl",
    "select",
    "selectors",
    "asyncio",
    "signal",
    "_signal",
    "pty",
    "fcntl",
    "termios",
    "resource",
    "faulthandler",
    "tracemalloc",
    "_tracemalloc",
    "gc",
    "code",
    "codeop",
    "pdb",
    "bdb",
    "trace",
    "_testcapi",
    "_testinternalcapi",
    "_testlimitedcapi",
    "_testmultiphase",
    "_testsinglephase",
    "_testbuffer",
    "_testimportmultiple",
    "_testexternalinspection",
    "_remote_debugging",
    "_xxtestfuzz",
    "xxsubtype",
    "_lsprof",
    "cProfile",
    "profile",
    "sys.monitoring",
    "_tkinter",
    "tkinter",
    "idlelib",
    "readline",
    "_curses",
    "curses",
    "_dbm",
    "dbm",
    "_gdbm",
    "webbrowser",
    "antigravity",
    "this",
    "pydoc",
    "ensurepip",
    "venv",
    "pyisolate",
    "_pyisolate",
    "sitecustomize",
)
# Builtins removed from every sandbox; `[builtins] enable` brings named ones back.
REMOVED_BUILTINS = ("open", "breakpoint", "help", "input", "exit", "quit", "copyright", "credits", "license")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_MODULE = re.compile(r"^(\*|[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)$")
_PLACEHOLDERS = ("{stdlib}", "{script_dir}", "{cwd}", "{tmp}")


@dataclass(frozen=True)
class Limits:
    memory: int | None = None  # bytes
    cpu_time: float | None = None  # seconds
    wall_time: float | None = None  # seconds
    open_files: int | None = None
    threads: int | None = None


@dataclass(frozen=True)
class Policy:
    """An immutable, validated policy. Paths may still hold placeholders until `resolve`."""

    name: str
    description: str = ""
    fs_read: tuple[str, ...] = ()
    fs_write: tuple[str, ...] = ()
    net_connect: tuple[tuple[str, str], ...] = ()  # (ip or "*", port or "*")
    modules_allow: tuple[str, ...] = ()
    modules_deny: tuple[str, ...] = DEFAULT_DENY
    builtins_enable: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    accept_reduced: bool = False  # [guards] accept_reduced: run even where kernel guards are missing
    source: str = "<object>"

    def resolve(self, **values: str) -> Policy:
        """Expand path placeholders ({stdlib}, {script_dir}, {cwd}, {tmp})."""

        def expand(paths: tuple[str, ...]) -> tuple[str, ...]:
            out = []
            for p in paths:
                for name in _PLACEHOLDERS:
                    key = name[1:-1]
                    if name in p:
                        if key not in values:
                            raise PolicyError(self.source, f"path {p!r} needs {name}, which this sandbox does not have")
                        p = p.replace(name, values[key])
                out.append(str(Path(p).resolve()))
            return tuple(out)

        return replace(self, fs_read=expand(self.fs_read), fs_write=expand(self.fs_write))

    def to_wire(self) -> dict:
        """Plain data for the cell (JSON-compatible)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "limits"}
        data["limits"] = {f.name: getattr(self.limits, f.name) for f in fields(self.limits)}
        return data

    def explain(self) -> str:
        def show(items) -> str:
            return ", ".join(map(str, items)) if items else "nothing (empty list = deny)"

        lim = self.limits
        reenabled = sorted(set(DEFAULT_DENY) - set(self.modules_deny))
        lines = [
            f"policy {self.name!r} ({self.source})",
            f"  {self.description}" if self.description else "",
            f"  filesystem read:  {show(self.fs_read)} (+ the distribution's stdlib, read-only)",
            f"  filesystem write: {show(self.fs_write)}",
            f"  network connect:  {show(f'{h}:{p}' for h, p in self.net_connect)}",
            f"  modules allowed:  {show(self.modules_allow)}",
            f"  modules denied:   {len(self.modules_deny)} names"
            + (f" (re-enables {', '.join(reenabled)})" if reenabled else ""),
            f"  builtins enabled: {show(self.builtins_enable)} (removed otherwise: {', '.join(REMOVED_BUILTINS)})",
            "  limits:           "
            + ", ".join(
                f"{k}={v}"
                for k, v in (
                    ("memory", _fmt_size(lim.memory)),
                    ("cpu_time", lim.cpu_time),
                    ("wall_time", lim.wall_time),
                    ("open_files", lim.open_files),
                    ("threads", lim.threads),
                )
            ),
            "  kernel guards:    "
            + (
                "ACCEPTS REDUCED GUARANTEES (runs even where seccomp/Landlock cannot be applied)"
                if self.accept_reduced
                else "required (the sandbox is refused where seccomp/Landlock cannot be applied)"
            ),
        ]
        return "\n".join(line for line in lines if line)


def _fmt_size(n: int | None) -> str:
    if n is None:
        return "none"
    for unit in ("T", "G", "M", "K"):
        if n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


def parse_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        return int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    raise ValueError(f"expected a size such as 64M or 1G, found {value!r}")


def load(ref: str | Path) -> Policy:
    """Load a policy from a file path or a shipped template name."""
    path = Path(ref)
    if not path.suffix and not path.exists():
        template = TEMPLATES / f"{ref}.toml"
        if not template.exists():
            names = ", ".join(sorted(p.stem for p in TEMPLATES.glob("*.toml")))
            raise PolicyError(str(ref), f"no such policy file or template (templates: {names})")
        path = template
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(path), f"cannot read: {exc.strerror}") from exc
    return loads(text, str(path))


def loads(text: str, source: str = "<string>") -> Policy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(source, f"TOML syntax: {exc}") from exc
    return _Validator(text, source).policy(data)


class _Validator:
    TABLES = MappingProxyType(
        {
            "policy": {"name", "description"},
            "filesystem": {"read", "write"},
            "network": {"connect"},
            "modules": {"allow", "deny"},
            "builtins": {"enable"},
            "limits": {"memory", "cpu_time", "wall_time", "open_files", "threads"},
            "guards": {"accept_reduced"},
        }
    )

    def __init__(self, text: str, source: str):
        self.lines = text.splitlines()
        self.source = source

    def where(self, table: str, key: str | None = None) -> str:
        """`file:line: [table].key` — the line is found by scanning the text."""
        line = None
        in_table = False
        for number, raw in enumerate(self.lines, 1):
            stripped = raw.strip()
            if stripped.startswith("["):
                in_table = stripped.strip("[] ") == table
                if in_table and key is None:
                    line = number
                    break
            elif in_table and key and re.match(rf"{re.escape(key)}\s*=", stripped):
                line = number
                break
        field_name = f"[{table}]" + (f".{key}" if key else "")
        return f"{self.source}:{line}: {field_name}" if line else f"{self.source}: {field_name}"

    def fail(self, table: str, key: str | None, problem: str):
        raise PolicyError(self.where(table, key), problem)

    def strings(self, data: dict, table: str, key: str, default=()) -> tuple[str, ...]:
        value = data.get(table, {}).get(key, default)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            self.fail(table, key, f"must be a list of non-empty strings, found {value!r}")
        return tuple(value)

    def policy(self, data: dict) -> Policy:
        for table, value in data.items():
            if table not in self.TABLES:
                self.fail(table, None, f"unknown table (known: {', '.join(self.TABLES)})")
            if not isinstance(value, dict):
                self.fail(table, None, "must be a table")
            for key in value:
                if key not in self.TABLES[table]:
                    self.fail(table, key, f"unknown key (known: {', '.join(sorted(self.TABLES[table]))})")
        meta = data.get("policy", {})
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            self.fail("policy", "name", "required: a non-empty string")
        description = meta.get("description", "")
        if not isinstance(description, str):
            self.fail("policy", "description", "must be a string")

        read, write = (self.strings(data, "filesystem", k) for k in ("read", "write"))
        for key, paths in (("read", read), ("write", write)):
            for p in paths:
                bare = p
                for ph in _PLACEHOLDERS:
                    bare = bare.replace(ph, "")
                if "{" in bare or "}" in bare:
                    self.fail("filesystem", key, f"unknown placeholder in {p!r} (known: {', '.join(_PLACEHOLDERS)})")
                if not (p.startswith("/") or p.startswith("{")):
                    self.fail("filesystem", key, f"path {p!r} must be absolute or start with a placeholder")

        connect = []
        for rule in self.strings(data, "network", "connect"):
            host, sep, port = rule.rpartition(":")
            host = host.strip("[]")
            if not sep or not host:
                self.fail("network", "connect", f"rule {rule!r} must be IP:PORT (e.g. 127.0.0.1:8080, [::1]:53)")
            if host != "*":
                import ipaddress  # here: most policies have no connect rules, and start-up counts

                try:
                    ipaddress.ip_address(host)
                except ValueError:
                    self.fail("network", "connect", f"rule {rule!r}: {host!r} is not an IP address or '*'")
            if port != "*" and not (port.isdigit() and 0 < int(port) < 65536):
                self.fail("network", "connect", f"rule {rule!r}: port must be 1-65535 or '*'")
            connect.append((host, port))

        allow = self.strings(data, "modules", "allow")
        deny = self.strings(data, "modules", "deny", DEFAULT_DENY)
        for key, names in (("allow", allow), ("deny", deny)):
            for n in names:
                if not _MODULE.match(n):
                    self.fail("modules", key, f"{n!r} is not a module name")
        enable = self.strings(data, "builtins", "enable")
        for n in enable:
            if n not in REMOVED_BUILTINS:
                self.fail("builtins", "enable", f"{n!r} is not a removable builtin ({', '.join(REMOVED_BUILTINS)})")

        raw_limits = data.get("limits", {})
        limits = {}
        for key, value in raw_limits.items():
            try:
                if key == "memory":
                    limits[key] = parse_size(value)
                elif key in ("cpu_time", "wall_time"):
                    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                        raise ValueError(f"expected a positive number of seconds, found {value!r}")
                    limits[key] = float(value)
                else:
                    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                        raise ValueError(f"expected a positive integer, found {value!r}")
                    limits[key] = value
            except ValueError as exc:
                self.fail("limits", key, str(exc))
        accept_reduced = data.get("guards", {}).get("accept_reduced", False)
        if not isinstance(accept_reduced, bool):
            self.fail("guards", "accept_reduced", f"must be true or false, found {accept_reduced!r}")
        return Policy(
            name=name,
            description=description,
            fs_read=read,
            fs_write=write,
            net_connect=tuple(connect),
            modules_allow=allow,
            modules_deny=deny,
            builtins_enable=enable,
            limits=Limits(**limits),
            accept_reduced=accept_reduced,
            source=self.source,
        )
