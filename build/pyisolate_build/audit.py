"""ELF hardening audit of an install prefix (pyelftools; no external tools).

For every ELF file it reports:
  PIE      executables are ET_DYN with DF_1_PIE; shared objects are position independent by
           nature, so only the absence of text relocations is checked for them
  RELRO    a PT_GNU_RELRO segment and BIND_NOW (full RELRO)
  NX       a PT_GNU_STACK segment without PF_X
  SSP      imports __stack_chk_fail, or was compiled with -fstack-protector-strong/-all
           (recorded by -frecord-gcc-switches) and no function needed a canary
  FORTIFY  imports a *_chk function; or imports nothing fortifiable (n/a); or, for a file
           whose recorded switches show a hardened compile but no call site had a known
           size, "unproven" (gcc never records -D flags; the toolchain probe proves them)
  IBT/SHSTK the x86 GNU property note (GNU_PROPERTY_X86_FEATURE_1_AND) bits
  CFI      clang's cross-DSO control-flow integrity (-fsanitize=cfi-icall
           -fsanitize-cfi-cross-dso): the file exports __cfi_check (the CFI runtime finds
           each loaded object's checker by that name in .dynsym; an object without it is
           "unchecked": calls into it pass, calls from it are never checked), and an
           executable also carries the runtime itself (defines __cfi_slowpath, which the
           checked call sites of every object call for targets outside themselves)
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.constants import P_FLAGS
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from .errors import AuditError
from .profiles import AuditPolicy

OK, FAIL, WARN, NA, UNPROVEN = "ok", "FAIL", "missing", "n/a", "unproven"

DF_BIND_NOW = 0x8
DF_1_NOW = 0x1
DF_1_PIE = 0x08000000
GNU_PROPERTY_X86_FEATURE_1_AND = 0xC0000002
FEATURE_IBT, FEATURE_SHSTK = 0x1, 0x2

# glibc functions that _FORTIFY_SOURCE can replace with a checked __*_chk variant.
FORTIFIABLE = frozenset(
    [
        "memcpy",
        "memmove",
        "mempcpy",
        "memset",
        "stpcpy",
        "stpncpy",
        "strcat",
        "strcpy",
        "strncat",
        "strncpy",
        "sprintf",
        "snprintf",
        "vsprintf",
        "vsnprintf",
        "fprintf",
        "printf",
        "vfprintf",
        "vprintf",
        "dprintf",
        "vdprintf",
        "asprintf",
        "vasprintf",
        "syslog",
        "vsyslog",
        "read",
        "pread",
        "pread64",
        "recv",
        "recvfrom",
        "readlink",
        "readlinkat",
        "getcwd",
        "getwd",
        "realpath",
        "fgets",
        "fgets_unlocked",
        "fread",
        "fread_unlocked",
        "gets",
        "confstr",
        "getgroups",
        "ttyname_r",
        "gethostname",
        "getdomainname",
        "getlogin_r",
        "mbstowcs",
        "wcstombs",
        "mbsrtowcs",
        "wcsrtombs",
        "wcrtomb",
        "wctomb",
        "wmemcpy",
        "wmemmove",
        "wmempcpy",
        "wmemset",
        "wcscpy",
        "wcpcpy",
        "wcsncpy",
        "wcpncpy",
        "wcscat",
        "wcsncat",
        "poll",
        "ppoll",
        "longjmp",
        "explicit_bzero",
        "ptsname_r",
    ]
)
_SSP_FLAG = re.compile(rb"-fstack-protector-(strong|all)\b")
_OPT_FLAG = re.compile(rb"-O([1-3s]|fast)\b")

COLUMNS = ("pie", "relro", "nx_stack", "stack_protector", "fortify", "ibt", "shstk", "cfi")
CFI_CHECK = "__cfi_check"
CFI_SLOWPATH = ("__cfi_slowpath", "__cfi_slowpath_diag")


@dataclass
class Check:
    status: str
    detail: str = ""


@dataclass
class ElfReport:
    path: str
    kind: str  # "exec", "dso" or "object"
    checks: dict[str, Check] = field(default_factory=dict)


def is_elf(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def audit_file(path: Path, policy: AuditPolicy) -> ElfReport:
    with path.open("rb") as f:
        try:
            elf = ELFFile(f)
            return _audit_elf(elf, str(path), policy)
        except ELFError as exc:
            report = ElfReport(str(path), "?")
            report.checks["pie"] = Check(FAIL, f"unreadable ELF: {exc}")
            return report


def _audit_elf(elf: ELFFile, name: str, policy: AuditPolicy) -> ElfReport:
    etype = elf.header["e_type"]
    segments = list(elf.iter_segments())
    dynamic = _dynamic_tags(elf)
    flags = dynamic.get("DT_FLAGS", 0)
    flags_1 = dynamic.get("DT_FLAGS_1", 0)
    has_interp = any(s["p_type"] == "PT_INTERP" for s in segments)
    if etype == "ET_REL":
        kind = "object"
    elif etype == "ET_EXEC" or has_interp or flags_1 & DF_1_PIE:
        kind = "exec"
    else:
        kind = "dso"
    report = ElfReport(name, kind)
    checks = report.checks

    def require(prop: str, good: bool, ok_detail: str, bad_detail: str, required: bool) -> None:
        if good:
            checks[prop] = Check(OK, ok_detail)
        else:
            checks[prop] = Check(FAIL if required else WARN, bad_detail)

    if kind == "object":
        for prop in COLUMNS:
            checks[prop] = Check(NA, "relocatable object: properties are decided at link time")
        return report

    textrel = "DT_TEXTREL" in dynamic or flags & 0x4
    if kind == "exec":
        require(
            "pie",
            etype == "ET_DYN" and bool(flags_1 & DF_1_PIE) and not textrel,
            "ET_DYN + DF_1_PIE",
            "not a position-independent executable" if not textrel else "has text relocations",
            policy.pie,
        )
    else:
        require("pie", not textrel, "PIC, no text relocations", "has text relocations", policy.pie)

    has_relro = any(s["p_type"] == "PT_GNU_RELRO" for s in segments)
    bind_now = "DT_BIND_NOW" in dynamic or flags & DF_BIND_NOW or flags_1 & DF_1_NOW
    require(
        "relro",
        has_relro and bool(bind_now),
        "PT_GNU_RELRO + BIND_NOW",
        "partial RELRO (no BIND_NOW)" if has_relro else "no PT_GNU_RELRO",
        policy.relro,
    )

    stack = [s for s in segments if s["p_type"] == "PT_GNU_STACK"]
    require(
        "nx_stack",
        bool(stack) and not stack[0]["p_flags"] & P_FLAGS.PF_X,
        "PT_GNU_STACK without PF_X",
        "executable stack" if stack else "no PT_GNU_STACK (stack may be executable)",
        policy.nx_stack,
    )

    imports = _imported_functions(elf)
    switches = _recorded_switches(elf)
    if imports & {"__stack_chk_fail", "__stack_chk_fail_local"}:
        checks["stack_protector"] = Check(OK, "canaries present")
    elif _SSP_FLAG.search(switches):
        checks["stack_protector"] = Check(OK, "built with the stack protector; no function needed a canary")
    else:
        require("stack_protector", False, "", "no canary and no record of -fstack-protector", policy.stack_protector)

    checked = {name for name in imports if name.startswith("__") and name.endswith("_chk")}
    fortifiable = sorted(imports & FORTIFIABLE)
    if checked:
        checks["fortify"] = Check(OK, f"{len(checked)} checked function(s)")
    elif not fortifiable:
        checks["fortify"] = Check(NA, "imports nothing fortifiable")
    elif _SSP_FLAG.search(switches) and _OPT_FLAG.search(switches):
        # gcc records -f/-O switches but never -D ones, so _FORTIFY_SOURCE itself cannot be
        # read back. The record proves the file came through a hardened profile, whose
        # flags the driver's toolchain probe showed to fortify; the binary alone cannot.
        checks["fortify"] = Check(
            UNPROVEN, f"hardened profile recorded; no call site had a compile-time size ({', '.join(fortifiable[:3])})"
        )
    else:
        require("fortify", False, "", f"unchecked {', '.join(fortifiable[:4])}", policy.fortify)

    features = _x86_features(elf)
    for prop, bit, label in (("ibt", FEATURE_IBT, "IBT"), ("shstk", FEATURE_SHSTK, "SHSTK")):
        if policy.cet == "off":
            checks[prop] = Check(NA, "not checked for this flavour")
        else:
            require(prop, bool(features & bit), f"{label} property", f"no {label} property", policy.cet == "require")

    if policy.cfi == "off":
        checks["cfi"] = Check(NA, "not checked for this flavour")
    else:
        good, ok_detail, bad_detail = _cross_dso_cfi(elf, kind, imports)
        require("cfi", good, ok_detail, bad_detail, policy.cfi == "require")
    return report


def _cross_dso_cfi(elf: ELFFile, kind: str, imports: set[str]) -> tuple[bool, str, str]:
    """(present, detail if present, detail if not) for cross-DSO CFI."""
    exported = _defined_dynamic(elf)
    runtime = [name for name in CFI_SLOWPATH if name in exported]
    calls = [name for name in CFI_SLOWPATH if name in imports]
    if CFI_CHECK not in exported:
        if runtime or calls:
            return False, "", f"uses {(runtime or calls)[0]} but exports no {CFI_CHECK} (unchecked as a call target)"
        return False, "", f"no {CFI_CHECK}: not built with cross-DSO CFI"
    if kind == "exec":
        if not runtime:
            return False, "", f"exports {CFI_CHECK} but has no CFI runtime (no {CFI_SLOWPATH[0]} defined)"
        return True, f"{CFI_CHECK} + CFI runtime ({runtime[0]})", ""
    if calls:
        return True, f"{CFI_CHECK}; checked calls reach {calls[0]}", ""
    return True, f"{CFI_CHECK}; no call site needs the cross-DSO slow path", ""


def _dynamic_tags(elf: ELFFile) -> dict[str, int]:
    tags: dict[str, int] = {}
    for section in elf.iter_sections():
        if isinstance(section, DynamicSection):
            for tag in section.iter_tags():
                tags[tag.entry.d_tag] = tag.entry.d_val
    return tags


def _imported_functions(elf: ELFFile) -> set[str]:
    section = elf.get_section_by_name(".dynsym")
    if section is None:
        return set()
    return {sym.name for sym in section.iter_symbols() if sym["st_shndx"] == "SHN_UNDEF" and sym.name}


def _defined_dynamic(elf: ELFFile) -> set[str]:
    section = elf.get_section_by_name(".dynsym")
    if section is None:
        return set()
    return {sym.name for sym in section.iter_symbols() if sym["st_shndx"] != "SHN_UNDEF" and sym.name}


def _recorded_switches(elf: ELFFile) -> bytes:
    section = elf.get_section_by_name(".GCC.command.line")
    return section.data() if section is not None else b""


def _x86_features(elf: ELFFile) -> int:
    """The AND-ed x86 feature bits of the GNU property note (0 when absent)."""
    features = 0
    align = 8 if elf.elfclass == 64 else 4
    for section in elf.iter_sections():
        if section["sh_type"] != "SHT_NOTE":
            continue
        for note in section.iter_notes():
            if note["n_type"] != "NT_GNU_PROPERTY_TYPE_0" or note["n_name"] != "GNU":
                continue
            data = note["n_descdata"]
            offset = 0
            while offset + 8 <= len(data):
                pr_type, size = struct.unpack_from("<II", data, offset)
                if pr_type == GNU_PROPERTY_X86_FEATURE_1_AND and size >= 4:
                    features |= struct.unpack_from("<I", data, offset + 8)[0]
                offset += 8 + ((size + align - 1) // align) * align
    return features


def audit_tree(root: Path, policy: AuditPolicy) -> list[ElfReport]:
    files = sorted(p for p in root.rglob("*") if is_elf(p))
    reports = [audit_file(p, policy) for p in files]
    for r in reports:
        r.path = str(Path(r.path).relative_to(root))
    return reports


def failures(reports: list[ElfReport]) -> list[tuple[str, str, str]]:
    return [(r.path, prop, check.detail) for r in reports for prop, check in r.checks.items() if check.status == FAIL]


def write_json(reports: list[ElfReport], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(r) for r in reports], indent=1) + "\n")


def render(reports: list[ElfReport], console) -> None:
    """Print the audit table with rich."""
    from rich.table import Table

    marks = {
        OK: "[green]✓[/]",
        FAIL: "[bold red]✗[/]",
        WARN: "[yellow]–[/]",
        UNPROVEN: "[yellow]?[/]",
        NA: "[dim]·[/]",
    }
    table = Table(title="ELF hardening audit", show_lines=False, header_style="bold")
    table.add_column("file", overflow="fold")
    table.add_column("kind")
    for col in ("PIE", "RELRO", "NX", "SSP", "FORTIFY", "IBT", "SHSTK", "CFI"):
        table.add_column(col, justify="center")
    for r in reports:
        table.add_row(r.path, r.kind, *(marks[r.checks[c].status] for c in COLUMNS if c in r.checks))
    console.print(table)
    counts = {s: sum(1 for r in reports for c in r.checks.values() if c.status == s) for s in marks}
    console.print(
        f"{len(reports)} ELF files: {counts[OK]} checks passed, {counts[FAIL]} failed, "
        f"{counts[WARN]} reported missing (not required by this flavour), {counts[UNPROVEN]} unprovable "
        f"from the binary, {counts[NA]} not applicable.\n"
        "Legend: ✓ ok  ✗ required but missing  – missing, reported only  ? not provable from the binary  · n/a"
    )


def check(reports: list[ElfReport]) -> None:
    bad = failures(reports)
    if bad:
        raise AuditError(bad)
