"""A subset of CPython's own regression tests, run with the built interpreter."""

import subprocess

# Chosen to cover the parser, core containers, threads and the free-threaded runtime,
# common C extensions (whose fortified calls must not trip), and the C API (through _testcapi).
SUBSET = [
    "test_grammar",
    "test_dict",
    "test_list",
    "test_set",
    "test_threading",
    "test_json",
    "test_re",
    "test_free_threading",
    "test_capi",
    "test_sys",
    "test_os",
    "test_sqlite3",
    "test_zlib",
    "test_hashlib",
    "test_ctypes",
    "test_struct",
    "test_bytes",
    "test_str",
]


def test_cpython_regression_subset(python, tmp_path):
    proc = subprocess.run(
        [str(python), "-B", "-m", "test", "-j2", "--timeout=600", *SUBSET],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    tail = "\n".join(proc.stdout.splitlines()[-40:])
    assert proc.returncode == 0, tail + proc.stderr[-2000:]
    assert "Result: SUCCESS" in proc.stdout, tail
