"""Sub-interpreters on the free-threaded build, which upstream tests less: CPython's own
test_interpreters (skipped upstream when the GIL is disabled) run anyway, plus our own
create/close and concurrent-use stress."""

import shutil
import subprocess
import textwrap


def test_upstream_test_interpreters_on_free_threaded_build(dist, python, tmp_path):
    source = dist / "lib" / "python3.14t" / "test" / "test_interpreters"
    copy = tmp_path / "test_interpreters"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    init = copy / "__init__.py"
    text = init.read_text()
    assert "if Py_GIL_DISABLED:" in text  # the upstream skip we lift
    init.write_text(text.replace("if Py_GIL_DISABLED:", "if False:"))
    modules = sorted(f"test_interpreters.{p.stem}" for p in copy.glob("test_*.py"))
    assert len(modules) >= 5
    proc = subprocess.run(
        [str(python), "-B", "-m", "unittest", *modules], cwd=tmp_path, capture_output=True, text=True, timeout=1200
    )
    tail = proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    ran = next(line for line in proc.stderr.splitlines() if line.startswith("Ran "))
    assert int(ran.split()[1]) >= 150, ran


def test_create_close_and_concurrent_use_stress(python):
    code = textwrap.dedent("""
        import threading, _interpreters
        errors = []
        def churn(n):
            try:
                for i in range(n):
                    iid = _interpreters.create("isolated", reqrefs=False)
                    _interpreters.exec(iid, f"x = sum(range({i} * 100))\\nimport json; json.dumps([x])")
                    _interpreters.destroy(iid)
            except Exception as exc:
                errors.append(repr(exc))
        long_lived = [_interpreters.create("isolated", reqrefs=False) for _ in range(4)]
        def hammer(iid):
            try:
                for _ in range(200):
                    info = _interpreters.exec(iid, "y = [i * i for i in range(500)]")
                    assert info is None, info
            except Exception as exc:
                errors.append(repr(exc))
        threads = [threading.Thread(target=churn, args=(25,)) for _ in range(4)]
        threads += [threading.Thread(target=hammer, args=(i,)) for i in long_lived]
        for t in threads: t.start()
        for t in threads: t.join()
        for iid in long_lived:
            _interpreters.destroy(iid)
        print(len(errors), errors[:3], len(_interpreters.list_all()))
    """)
    proc = subprocess.run([str(python), "-I", "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split(" ", 1)[0] == "0", proc.stdout
    assert proc.stdout.rstrip().endswith(" 1"), proc.stdout  # only the main interpreter is left
