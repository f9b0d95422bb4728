"""The `cfi` flavour (out/dist/cfi): clang-19 ThinLTO with cross-DSO control-flow
integrity in trap mode.

- CPython's regression subset (the same files as test_regrtest.py, plus the ones CFI used
  to kill: expat handlers, co_extra) passes on it;
- an extension module built against a distribution with the flags that distribution hands
  to extension builds (sysconfig's CC, CFLAGS, CCSHARED, LDSHARED) dies with SIGILL when it
  calls a function through a pointer of the wrong type on the cfi build, and runs on the
  gcc builds (hardened and plain);
- a third-party-style extension built without CFI (plain gcc) imports and works on the
  cfi build, and is not protected: CFI checks neither its calls nor calls into it.
"""

import json
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from test_regrtest import SUBSET

from conftest import ROOT, flavour_dist, need
from pyisolate_build import audit, profiles

FLAVOURS = profiles.load(ROOT / "build" / "profiles.toml")
CFI_EXTRA = ["test_pyexpat", "test_xml_etree", "test_minidom", "test_plistlib", "test_code"]

# The extension: one correct indirect call and four forged ones. Every function pointer
# is read from a volatile, so the compiler cannot see the target and must emit a real
# indirect call (and, under CFI, its check).
EXTENSION = r"""
#include <Python.h>

struct point { int x; };
struct other { int y; };

static long add(long a, long b) { return a + b; }
static int get_x(struct point *p) { return p->x; }

static long (*volatile add_ptr)(long, long) = add;
static int (*volatile get_x_ptr)(struct point *) = get_x;
static PyObject *(*volatile from_long_ptr)(long) = PyLong_FromLong;

static PyObject *
right(PyObject *module, PyObject *unused)
{
    struct point p = {37};
    return PyLong_FromLong(add_ptr(2, 3) + get_x_ptr(&p));
}

/* A call through int (*)(double) to long add(long, long). */
static PyObject *
wrong_signature(PyObject *module, PyObject *unused)
{
    int (*forged)(double) = (int (*)(double))add_ptr;
    return PyLong_FromLong(forged(1.0) != 0);
}

/* Same shape, different pointee type: int (*)(struct other *) to get_x(struct point *). */
static PyObject *
wrong_pointee(PyObject *module, PyObject *unused)
{
    struct other o = {7};
    int (*forged)(struct other *) = (int (*)(struct other *))get_x_ptr;
    return PyLong_FromLong(forged(&o));
}

/* Across objects: the interpreter's PyLong_FromLong called as PyObject *(*)(double). */
static PyObject *
wrong_into_interpreter(PyObject *module, PyObject *unused)
{
    PyObject *(*forged)(double) = (PyObject *(*)(double))from_long_ptr;
    PyObject *value = forged(1.0);
    Py_DECREF(value);
    return PyLong_FromLong(1);
}

/* Registered as METH_NOARGS (called as PyObject *(*)(PyObject *, PyObject *)) but
   defined with one parameter: the interpreter's call into this module is forged. */
static PyObject *
one_parameter(PyObject *module)
{
    return PyLong_FromLong(1);
}

static PyMethodDef methods[] = {
    {"right", right, METH_NOARGS, NULL},
    {"wrong_signature", wrong_signature, METH_NOARGS, NULL},
    {"wrong_pointee", wrong_pointee, METH_NOARGS, NULL},
    {"wrong_into_interpreter", wrong_into_interpreter, METH_NOARGS, NULL},
    {"wrong_from_interpreter", (PyCFunction)(void (*)(void))one_parameter, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "forge", NULL, 0, methods};

PyMODINIT_FUNC
PyInit_forge(void)
{
    return PyModuleDef_Init(&module);
}
"""
FORGED = ["wrong_signature", "wrong_pointee", "wrong_into_interpreter", "wrong_from_interpreter"]
RIGHT = 5 + 37


def run(python: Path, *args: str, cwd: Path | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def extension_flags(python: Path) -> dict:
    """What the distribution hands to extension builds (as setuptools reads it)."""
    code = (
        "import json, sysconfig; v = sysconfig.get_config_vars(); "
        "print(json.dumps({k: v.get(k) or '' for k in ('CC', 'CFLAGS', 'CCSHARED', 'LDSHARED', 'EXT_SUFFIX')}"
        " | {'include': sysconfig.get_paths()['include']}))"
    )
    proc = run(python, "-I", "-c", code)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def build_extension(python: Path, out: Path, *, with_sysconfig_flags: bool = True) -> Path:
    """Build `forge` against the distribution of `python`, the way setuptools does
    (CC CFLAGS CCSHARED -I include -c; LDSHARED), or with a bare `gcc -shared -fPIC`."""
    flags = extension_flags(python)
    out.mkdir(parents=True, exist_ok=True)
    src = out / "forge.c"
    src.write_text(EXTENSION)
    obj = out / "forge.o"
    target = out / f"forge{flags['EXT_SUFFIX']}"
    if with_sysconfig_flags:
        compile_cmd = [*shlex.split(flags["CC"]), *shlex.split(flags["CFLAGS"]), *shlex.split(flags["CCSHARED"])]
        link_cmd = shlex.split(flags["LDSHARED"])
    else:
        compile_cmd = ["gcc", "-O2", "-fPIC"]
        link_cmd = ["gcc", "-shared"]
    need(shutil.which(compile_cmd[0]) is not None, f"{compile_cmd[0]} (the distribution's CC) is not installed")
    for cmd in (
        [*compile_cmd, "-I", flags["include"], "-c", str(src), "-o", str(obj)],
        [*link_cmd, str(obj), "-o", str(target)],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{shlex.join(cmd)}\n{proc.stderr}"
    return target


def call(python: Path, ext_dir: Path, name: str) -> subprocess.CompletedProcess:
    """Import `forge` and print right(), then call forge.<name>(), in a fresh process."""
    code = (
        f"import sys; sys.path.insert(0, {str(ext_dir)!r}); import forge; "
        f"print(forge.right(), flush=True); forge.{name}(); print('survived')"
    )
    return run(python, "-I", "-c", code)


# --- the build -----------------------------------------------------------------------------


def test_cfi_interpreter_is_clang_with_cfi(cfi_dist):
    python = cfi_dist / "bin" / "python3.14t"
    proc = run(python, "-I", "-c", "import sys, sysconfig; print(sys.version); print(sys._is_gil_enabled())")
    assert proc.returncode == 0, proc.stderr
    assert "Clang 19" in proc.stdout and proc.stdout.split()[-1] == "False"
    flags = extension_flags(python)
    for flag in ("-flto=thin", "-fsanitize=cfi-icall", "-fsanitize-cfi-cross-dso", "-fstack-protector-strong"):
        assert flag in flags["CFLAGS"].split(), flag
    assert "-fsanitize-cfi-cross-dso" in flags["LDSHARED"].split() and "-fuse-ld=lld" in flags["LDSHARED"].split()
    # Build-only flags (ignore list, ThinLTO cache: paths on the build machine) are not
    # handed to extension builds.
    for var in ("CFLAGS", "LDSHARED"):
        assert "ignorelist" not in flags[var] and "thinlto-cache" not in flags[var], flags[var]
    # The tool configure would otherwise search for (whichever llvm-profdata the build
    # machine has) is named by the flavour, so every builder records the same.
    proc = run(python, "-I", "-c", "import sysconfig; print(sysconfig.get_config_var('LLVM_PROF_MERGER'))")
    assert proc.stdout.startswith("/usr/bin/llvm-profdata-19 merge"), proc.stdout


def test_cfi_build_records_no_checkout_or_cache_path(cfi_dist):
    """The build-only flags name paths that are the same for every checkout and cache (the
    ignore list's copy in the fixed build tree, the ThinLTO cache under the fixed build
    root), so two checkouts build identical bytes. Where they are kept: sysconfig (the
    data module, its JSON twin, the Makefile) and clang's compile record in every ELF."""
    from elftools.elf.elffile import ELFFile

    from pyisolate_build import cache

    stdlib = cfi_dist / "lib" / "python3.14t"
    kept = {p: p.read_bytes() for p in [*stdlib.glob("_sysconfig*"), *stdlib.glob("config-*/Makefile")]}
    for elf in [cfi_dist / "bin" / "python3.14t", *sorted((stdlib / "lib-dynload").glob("*.so"))]:
        with elf.open("rb") as f:
            section = ELFFile(f).get_section_by_name(".GCC.command.line")
            assert section is not None, f"{elf}: no compile record"
            kept[elf] = section.data()
    assert b"cfi-ignorelist.txt" in kept[cfi_dist / "bin" / "python3.14t"]
    for where in (f"{ROOT}/", f"{cache.root()}/"):
        leaking = sorted(str(p.relative_to(cfi_dist)) for p, data in kept.items() if where.encode() in data)
        assert not leaking, f"{where} recorded in {leaking}"


def _host_code(reports):
    """ELF files that run on the host: the BPF objects (programs for the kernel's verifier,
    relocatable, every check n/a) are not."""
    return [r for r in reports if not r.path.endswith(".bpf.o")]


def test_audit_requires_cfi_on_every_elf_of_the_cfi_build(cfi_dist):
    reports = audit.audit_tree(cfi_dist, FLAVOURS["cfi"].audit)
    assert reports
    assert audit.failures(reports) == []
    assert {r.checks["cfi"].status for r in _host_code(reports)} == {audit.OK}
    (interpreter,) = [r for r in reports if r.path == "bin/python3.14t"]
    assert "CFI runtime" in interpreter.checks["cfi"].detail
    assert sum(1 for r in reports if "lib-dynload" in r.path) > 50


def test_audit_reports_no_cfi_on_the_hardened_build(hardened_dist):
    reports = audit.audit_tree(hardened_dist, FLAVOURS["hardened"].audit)
    assert audit.failures(reports) == []
    assert {r.checks["cfi"].status for r in _host_code(reports)} == {audit.WARN}


# The runtime's own extension: every method and getter of its types, and its functions,
# called through CPython's typed slots. A method defined with its object's struct type for
# `self` (rather than PyObject *) is a type mismatch CFI kills: the sealed broker's types
# had exactly that until the cfi build ran the broker.
RUNTIME_EXTENSION = """
import os, _pyisolate as p
i_s, i_p = p.x25519_keypair(); r_s, r_p = p.x25519_keypair()
assert p.x25519_public(i_s) == i_p and p.sodium_version() == "1.0.22"
pk, sk = p.xwing_keypair(os.urandom(32)); ct, ss = p.xwing_encapsulate(pk)
assert p.xwing_decapsulate(ct, sk) == ss
i = p.NoiseHandshake(True, i_s, prologue=b"cfi", remote_static=r_p)
r = p.NoiseHandshake(False, r_s, prologue=b"cfi")
r.read_message(i.write_message(b"hello"))
i.read_message(r.write_message(b"back"))
assert i.finished and r.remote_static == i_p and i.handshake_hash == r.handshake_hash
a, b = i.to_transport(), r.to_transport()
frame = a.seal(b"x" * 1000)
assert a.frame_length(frame[:4]) == len(frame) - 4 and b.open(frame[4:]) == b"x" * 1000
a.rekey(); b.rekey_recv()
assert b.open(a.seal(b"y")[4:]) == b"y"
assert (a.send_nonce, b.recv_nonce, a.closed) == (2, 2, False) and a.rekey_interval > 0
assert len(a.key_digest_for_testing_only()) > 0
a.close(); assert a.closed
del a, b, i, r
print("ok")
"""


def test_runtime_extension_runs_under_cfi(cfi_dist):
    proc = run(cfi_dist / "bin" / "python3.14t", "-I", "-c", RUNTIME_EXTENSION)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


# --- CPython's tests in trap mode --------------------------------------------------------


def test_cpython_regression_subset_on_cfi(cfi_dist, tmp_path):
    python = cfi_dist / "bin" / "python3.14t"
    proc = run(python, "-B", "-m", "test", "-j2", "--timeout=600", *SUBSET, *CFI_EXTRA, cwd=tmp_path, timeout=1800)
    tail = "\n".join(proc.stdout.splitlines()[-40:])
    assert proc.returncode == 0, tail + proc.stderr[-2000:]
    assert "Result: SUCCESS" in proc.stdout, tail
    assert "SIGILL" not in proc.stdout, tail


# --- a forged indirect call ----------------------------------------------------------------


@pytest.fixture(scope="module")
def cfi_extension(cfi_dist, tmp_path_factory) -> Path:
    return build_extension(cfi_dist / "bin" / "python3.14t", tmp_path_factory.mktemp("cfi-ext")).parent


@pytest.fixture(scope="module", params=["hardened", "plain"])
def gcc_build(request, tmp_path_factory) -> tuple[Path, Path]:
    """(prefix, extension directory) of a gcc flavour without CFI, the extension built with
    the flags that flavour hands to extension builds."""
    prefix = flavour_dist(request.param)
    return prefix, build_extension(prefix / "bin" / "python3.14t", tmp_path_factory.mktemp(request.param)).parent


@pytest.fixture(scope="module")
def third_party_extension(cfi_dist, tmp_path_factory) -> Path:
    need(shutil.which("gcc") is not None, "gcc is not installed")
    out = tmp_path_factory.mktemp("plain-ext")
    return build_extension(cfi_dist / "bin" / "python3.14t", out, with_sysconfig_flags=False).parent


def test_extension_built_with_the_cfi_flags_carries_cfi(cfi_dist, cfi_extension):
    (so,) = cfi_extension.glob("forge*.so")
    report = audit.audit_file(so, FLAVOURS["cfi"].audit)
    assert report.checks["cfi"].status == audit.OK, report.checks["cfi"]
    assert "__cfi_slowpath" in report.checks["cfi"].detail  # its forged calls go through the runtime


@pytest.mark.parametrize("name", FORGED)
def test_forged_call_dies_with_sigill_on_cfi(cfi_dist, cfi_extension, name):
    proc = call(cfi_dist / "bin" / "python3.14t", cfi_extension, name)
    assert proc.stdout.splitlines()[:1] == [str(RIGHT)], proc.stderr  # the correct call works
    assert proc.returncode == -signal.SIGILL, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert "survived" not in proc.stdout


@pytest.mark.parametrize("name", FORGED)
def test_forged_call_runs_without_cfi(gcc_build, name):
    """The same source on the gcc flavours (hardened, plain): the forged call goes through."""
    prefix, extension = gcc_build
    proc = call(prefix / "bin" / "python3.14t", extension, name)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.split() == [str(RIGHT), "survived"]


# --- an extension built without CFI ----------------------------------------------------------


def test_third_party_extension_without_cfi_imports_and_works(cfi_dist, third_party_extension):
    (so,) = third_party_extension.glob("forge*.so")
    assert audit.audit_file(so, FLAVOURS["cfi"].audit).checks["cfi"].status == audit.FAIL  # no __cfi_check
    proc = call(cfi_dist / "bin" / "python3.14t", third_party_extension, "right")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(RIGHT), "survived"]


@pytest.mark.parametrize("name", FORGED)
def test_third_party_extension_without_cfi_is_not_protected(cfi_dist, third_party_extension, name):
    # What cross-DSO CFI does not cover (docs/cfi.md): an object without __cfi_check is
    # "unchecked": its own calls are never checked, and calls into it pass any check.
    proc = call(cfi_dist / "bin" / "python3.14t", third_party_extension, name)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.split() == [str(RIGHT), "survived"]
