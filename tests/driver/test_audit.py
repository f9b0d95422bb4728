"""The ELF audit reads real binaries: objects built here with and without the hardening
flags, checked property by property."""

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import ROOT
from pyisolate_build import audit, profiles
from pyisolate_build.errors import AuditError

HARDENED = profiles.load(ROOT / "build" / "profiles.toml")["hardened"]
POLICY = HARDENED.audit

SOURCE = r"""
#include <string.h>
#include <stdio.h>
int copy(const char *src, size_t n) {
    char buf[64];
    memcpy(buf, src, n);
    buf[63] = 0;
    return snprintf(NULL, 0, "%s", buf);
}
int main(int argc, char **argv) { return copy(argv[0], strlen(argv[0]) % 64) > 0 ? 0 : 1; }
"""


def cc(tmp_path: Path, name: str, *flags: str) -> Path:
    src = tmp_path / "x.c"
    src.write_text(SOURCE)
    out = tmp_path / name
    subprocess.run(["gcc", "-O2", *flags, str(src), "-o", str(out)], check=True, capture_output=True)
    return out


def statuses(report):
    return {prop: check.status for prop, check in report.checks.items()}


def test_hardened_shared_object_passes(tmp_path):
    so = cc(tmp_path, "good.so", "-shared", "-fPIC", *HARDENED.cflags, *HARDENED.ldflags)
    report = audit.audit_file(so, POLICY)
    assert report.kind == "dso"
    assert audit.failures([report]) == []
    assert report.checks["stack_protector"].detail == "canaries present"
    assert report.checks["fortify"].status == audit.OK  # __memcpy_chk imported


def test_hardened_executable_passes(tmp_path):
    exe = cc(tmp_path, "good", *HARDENED.cflags, *HARDENED.ldflags, *HARDENED.exe_ldflags)
    report = audit.audit_file(exe, POLICY)
    assert report.kind == "exec"
    assert statuses(report)["pie"] == audit.OK
    assert audit.failures([report]) == []


def test_unhardened_shared_object_is_rejected(tmp_path):
    so = cc(
        tmp_path,
        "bad.so",
        "-shared",
        "-fPIC",
        "-fno-stack-protector",
        "-U_FORTIFY_SOURCE",
        "-D_FORTIFY_SOURCE=0",
        "-Wl,-z,execstack",
        "-Wl,-z,norelro",
        "-Wl,-z,lazy",
    )
    report = audit.audit_file(so, POLICY)
    failed = {prop for path, prop, _ in audit.failures([report])}
    assert failed == {"relro", "nx_stack", "stack_protector", "fortify"}
    with pytest.raises(AuditError) as info:
        audit.check([report])
    assert str(so) in str(info.value) and "executable stack" in str(info.value)


def test_non_pie_executable_and_partial_relro(tmp_path):
    exe = cc(tmp_path, "nopie", "-no-pie", "-fno-pie", "-Wl,-z,relro", "-Wl,-z,lazy", *HARDENED.cflags)
    report = audit.audit_file(exe, POLICY)
    assert report.kind == "exec"
    assert report.checks["pie"].status == audit.FAIL
    assert report.checks["relro"].detail == "partial RELRO (no BIND_NOW)"


def test_cet_property_is_read_from_the_note(tmp_path):
    # Without crti.o/crtn.o (bookworm's carry no CET note) the linker keeps the property.
    marked = cc(tmp_path, "cet.so", "-shared", "-fPIC", "-nostartfiles", "-fcf-protection=full")
    plain = cc(tmp_path, "nocet.so", "-shared", "-fPIC", "-nostartfiles", "-fcf-protection=none")
    require = replace(POLICY, cet="require")
    assert statuses(audit.audit_file(marked, require))["ibt"] == audit.OK
    assert statuses(audit.audit_file(marked, require))["shstk"] == audit.OK
    unmarked = audit.audit_file(plain, require)
    assert {p for _, p, _ in audit.failures([unmarked])} >= {"ibt", "shstk"}
    # "report" shows the gap without failing, and never claims the property.
    reported = audit.audit_file(plain, POLICY)
    assert statuses(reported)["ibt"] == audit.WARN and statuses(reported)["shstk"] == audit.WARN


def test_audit_tree_finds_only_elf_files(tmp_path):
    prefix = tmp_path / "prefix"
    (prefix / "lib").mkdir(parents=True)
    cc(prefix / "lib", "mod.so", "-shared", "-fPIC", *HARDENED.cflags, *HARDENED.ldflags)
    (prefix / "lib" / "script.py").write_text("print(1)\n")
    (prefix / "lib" / "link.so").symlink_to("mod.so")
    reports = audit.audit_tree(prefix, POLICY)
    assert [r.path for r in reports] == ["lib/mod.so"]


# --- cross-DSO CFI: real objects built with clang-19, with and without the flags ----------

CFI = profiles.load(ROOT / "build" / "profiles.toml")["cfi"]

CFI_SOURCE = r"""
static int twice(int x) { return 2 * x; }
int (*volatile hook)(int) = twice;
__attribute__((visibility("default"))) int call_hook(int x) { return hook(x); }  /* checked under CFI */
int main(void) { return call_hook(0); }
"""


def clang(tmp_path: Path, name: str, *flags: str) -> Path:
    from conftest import need

    need(shutil.which("clang-19") is not None, "clang-19 is not installed (build/system-packages.txt)")
    src = tmp_path / "cfi.c"
    src.write_text(CFI_SOURCE)
    out = tmp_path / name
    proc = subprocess.run(["clang-19", "-O2", *flags, str(src), "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


CFI_FLAGS = ("-flto=thin", "-fvisibility=hidden", "-fsanitize=cfi-icall", "-fsanitize-cfi-cross-dso", "-fuse-ld=lld")


def test_cfi_shared_object_is_recognised(tmp_path):
    so = clang(tmp_path, "cfi.so", "-shared", "-fPIC", *CFI_FLAGS)
    report = audit.audit_file(so, CFI.audit)
    assert report.checks["cfi"].status == audit.OK
    # Exports its checker; its checked call reaches the runtime in the executable.
    assert report.checks["cfi"].detail == "__cfi_check; checked calls reach __cfi_slowpath"


def test_cfi_executable_carries_the_runtime(tmp_path):
    exe = clang(tmp_path, "cfi", *CFI_FLAGS)
    report = audit.audit_file(exe, CFI.audit)
    assert report.kind == "exec"
    assert report.checks["cfi"].status == audit.OK
    assert report.checks["cfi"].detail == "__cfi_check + CFI runtime (__cfi_slowpath)"


def test_clang_without_cfi_is_missing_cfi(tmp_path):
    so = clang(tmp_path, "nocfi.so", "-shared", "-fPIC", "-flto=thin", "-fuse-ld=lld")
    required = audit.audit_file(so, CFI.audit)
    assert required.checks["cfi"].status == audit.FAIL
    assert "no __cfi_check" in required.checks["cfi"].detail
    assert (str(so), "cfi") in [(p, prop) for p, prop, _ in audit.failures([required])]
    # The other flavours report it without failing, or do not look.
    assert audit.audit_file(so, POLICY).checks["cfi"].status == audit.WARN
    assert audit.audit_file(so, replace(POLICY, cfi="off")).checks["cfi"].status == audit.NA


def test_cfi_without_cross_dso_is_not_recognised(tmp_path):
    # Single-object CFI checks only calls within one object and gives the runtime nothing
    # to find: with dlopen'd extension modules it is not what the cfi flavour needs.
    so = clang(tmp_path, "local.so", "-shared", "-fPIC", "-flto=thin", "-fvisibility=hidden", "-fsanitize=cfi-icall")
    assert audit.audit_file(so, CFI.audit).checks["cfi"].status == audit.FAIL
