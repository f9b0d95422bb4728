"""The pyisolate API against real cells running the built interpreter."""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

import pyisolate as iso
from pyisolate import framing
from pyisolate import policy as policy_mod
from pyisolate.errors import CellCrashed, SandboxClosed, SandboxError, SandboxTimeout


def test_readme_example(cell_python):
    with iso.spawn("demo", policy="stdlib-readonly") as sb:
        sb.exec("from math import sqrt\npost(sqrt(2))")
        assert sb.recv(timeout=10) == 1.4142135623730951
        assert sb.call("statistics.mean", [1, 2, 3]) == 2
    assert sb.closed
    assert sb.cell.proc.wait(timeout=10) is not None  # the private supervisor stopped its cell


def test_readme_example_runs_inside_the_distribution(python):
    code = (
        "import pyisolate as iso\n"
        "with iso.spawn('demo', policy='stdlib-readonly') as sb:\n"
        "    sb.exec('from math import sqrt\\npost(sqrt(2))')\n"
        "    print(sb.recv(timeout=10), sb.call('statistics.mean', [1, 2, 3]))\n"
    )
    out = subprocess.run([str(python), "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1.4142135623730951", "2"]


def test_guest_exception_is_typed(supervisor):
    sb = supervisor.spawn("e")
    with pytest.raises(SandboxError) as info:
        sb.exec("def f():\n    raise KeyError('missing')\nf()")
    err = info.value
    assert err.type_name == "KeyError" and err.message == "'missing'" and err.sandbox == "e"
    assert "line 2, in f" in err.traceback
    with pytest.raises(SandboxError) as info:
        sb.call("math.sqrt", -1)
    assert info.value.type_name == "ValueError"
    # The sandbox stays usable after guest errors.
    assert sb.call("math.factorial", 5) == 120


def test_call_result_must_be_plain_data(supervisor):
    sb = supervisor.spawn("p")
    with pytest.raises(SandboxError, match="not plain data"):
        sb.call("builtins.object")
    with pytest.raises(SandboxError, match="plain data"):
        sb.exec("post(object())")


def test_state_persists_between_execs(supervisor):
    sb = supervisor.spawn("s")
    sb.exec("counter = 41")
    sb.exec("counter += 1\npost(counter)")
    assert sb.recv(timeout=5) == 42


def test_recv_timeout_leaves_supervisor_usable(supervisor):
    sb = supervisor.spawn("t")
    with pytest.raises(SandboxTimeout):
        sb.recv(timeout=0.2)
    assert sb.call("operator.add", 2, 3) == 5


def test_exec_timeout_is_typed_and_others_keep_working(supervisor):
    slow = supervisor.spawn("slow")
    other = supervisor.spawn("other")
    start = time.monotonic()
    with pytest.raises(SandboxTimeout, match="slow"):
        slow.exec("while True: pass", timeout=0.5)
    assert time.monotonic() - start < 5
    assert other.call("operator.mul", 6, 7) == 42  # same cell, its own thread
    fresh = supervisor.spawn("fresh", tenant="someone-else")
    assert fresh.call("operator.mul", 3, 3) == 9


def test_warm_pool_hands_out_interpreters(supervisor):
    first = supervisor.spawn("w1")
    time.sleep(1.0)  # let the pool refill in the background
    second = supervisor.spawn("w2")
    assert second.spawn_info["warm"] is True and second.spawn_info["origin"] == "pool"
    assert first.cell is second.cell
    assert first.spawn_info["origin"] in ("pool", "new")  # a pooled cell makes no spare


def test_a_cell_without_pool_makes_its_first_interpreter_while_it_starts(cell_python):
    """cell.Spare: created between hello and go (only the distribution's modules run in it
    before go), then used by the cell's first sandbox like one made on demand."""
    with iso.Supervisor(python=cell_python, pool=0) as sup:
        first, second = sup.spawn("first", "compute-only"), sup.spawn("second", "compute-only")
        assert (first.spawn_info["origin"], second.spawn_info["origin"]) == ("spare", "new")
        assert first.spawn_info["warm"] is False
        assert first.call("operator.mul", 6, 7) == 42 and second.call("operator.mul", 3, 3) == 9
        assert first.guards["seccomp"] == second.guards["seccomp"] and first.guards["landlock"]
        with pytest.raises(SandboxError, match="not allowed"):
            first.exec("import socket")  # the boot's gate holds in the spare as in any other
        solo = sup.spawn("solo", "compute-only", isolation="process")
        assert solo.spawn_info["origin"] == "spare" and solo.cell is not first.cell


def test_tenants_get_different_cells_and_process_isolation(supervisor):
    a = supervisor.spawn("a", tenant="alice")
    b = supervisor.spawn("b", tenant="bob")
    a2 = supervisor.spawn("a2", tenant="alice")
    p = supervisor.spawn("p", tenant="alice", isolation="process")
    assert a.cell is a2.cell
    assert len({a.cell.pid, b.cell.pid, p.cell.pid}) == 3


def test_cell_death_is_reported_and_others_keep_serving(supervisor):
    doomed = supervisor.spawn("d1", tenant="doomed")
    sibling = supervisor.spawn("d2", tenant="doomed")
    survivor = supervisor.spawn("s", tenant="survivor")
    os.kill(doomed.cell.pid, signal.SIGKILL)
    with pytest.raises(CellCrashed) as info:
        doomed.call("operator.add", 1, 1, timeout=10)
    err = info.value
    assert err.status == "killed by SIGKILL"
    assert set(err.sandboxes) == {"d1", "d2"}
    with pytest.raises(CellCrashed):
        sibling.exec("pass")
    with pytest.raises(SandboxClosed):
        sibling.recv(timeout=1)
    assert survivor.call("operator.add", 1, 1) == 2


def test_guest_segfault_is_a_cell_crash(supervisor, tmp_path):
    # A test-only policy that re-enables ctypes, to crash the cell for real.
    pol = tmp_path / "crasher.toml"
    pol.write_text('[policy]\nname = "crasher"\n[modules]\nallow = ["*"]\ndeny = []\n')
    sb = supervisor.spawn("crash", pol, tenant="crash")
    with pytest.raises(CellCrashed) as info:
        sb.exec("import ctypes\nctypes.string_at(0)", timeout=20)
    assert info.value.status == "killed by SIGSEGV"
    assert supervisor.spawn("after").call("operator.neg", 1) == -1


def test_many_sandboxes_in_parallel(supervisor):
    tenants = [f"tenant{i}" for i in range(4)]
    sandboxes = [supervisor.spawn(f"sb{i}", "compute-only", tenant=tenants[i % 4]) for i in range(100)]
    assert len({sb.cell.pid for sb in sandboxes}) == 4
    results: dict[str, object] = {}

    def work(sb):
        sb.exec(f"post({sb.name!r})\npost(sum(range({int(sb.name[2:])} * 1000)))")
        results[sb.name] = (sb.recv(timeout=60), sb.recv(timeout=60), sb.call("math.factorial", int(sb.name[2:]) % 20))

    threads = [threading.Thread(target=work, args=(sb,)) for sb in sandboxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i in range(100):
        name = f"sb{i}"
        import math

        assert results[name] == (name, sum(range(i * 1000)), math.factorial(i % 20)), name


def test_closed_sandbox_refuses(supervisor):
    sb = supervisor.spawn("c")
    sb.close()
    with pytest.raises(SandboxClosed):
        sb.exec("pass")
    assert "c" not in sb.cell.sandboxes


def test_tmp_is_private_and_goes_with_its_sandbox(cell_python, monkeypatch):
    """{tmp}: a new 0700 directory per sandbox under $TMPDIR, its cell's own; removed when
    the sandbox closes, whether the guest left files in it or not; a $TMPDIR where none
    can be made is named in the error."""
    base = tempfile.mkdtemp(prefix="pyisolate-tmpdir-", dir="/var/tmp")
    os.chmod(base, 0o755)  # the cells' uids pass through it, as through /tmp
    policy = policy_mod.loads(
        '[policy]\nname = "tmp"\n[filesystem]\nread = ["{tmp}"]\nwrite = ["{tmp}"]\n[modules]\nallow = ["*"]\n',
        "<tmp>",
    )
    try:
        monkeypatch.setenv("TMPDIR", base)
        with iso.Supervisor(python=cell_python, pool=0) as sup:
            used, empty = sup.spawn("used", policy), sup.spawn("empty", policy)
            made = {p.name.rsplit("-", 1)[0]: p for p in Path(base).iterdir()}
            assert sorted(made) == ["pyisolate-empty", "pyisolate-used"], made
            for sb, path in ((used, made["pyisolate-used"]), (empty, made["pyisolate-empty"])):
                st = path.stat()
                assert stat.S_IMODE(st.st_mode) == 0o700
                assert st.st_uid == (sb.cell.user.uid if sb.cell.user.uid is not None else os.getuid())
            used.exec("import io, os, tempfile\nio.open(os.path.join(tempfile.gettempdir(), 'left'), 'w').write('x')")
            assert (made["pyisolate-used"] / "left").read_text() == "x"
            used.close()
            empty.close()
            assert list(Path(base).iterdir()) == []
        monkeypatch.setenv("TMPDIR", f"{base}/missing")
        with (
            iso.Supervisor(python=cell_python, pool=0) as sup,
            pytest.raises(iso.PyIsolateError, match=r"nowhere: cannot make its \{tmp\} directory under .*/missing"),
        ):
            sup.spawn("nowhere", policy)
    finally:
        shutil.rmtree(base)


def test_guards_attach_before_any_guest_code(supervisor):
    sb = supervisor.spawn("g")
    sb.exec("post(1)")
    stats = sb.cell.request({"op": "stats"}, timeout=10)
    assert stats["first_code_at"] is not None
    assert sb.cell.guards_attached_at < stats["go_at"] <= stats["first_code_at"]


def test_cell_refuses_everything_before_go(cell_python):
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [cell_python, "-I", "-B", "-m", "pyisolate.cell", str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        env={"PYISOLATE_CELL": "1"},
    )
    theirs.close()
    channel = framing.Channel(ours)
    try:
        assert channel.recv()["op"] == "hello"
        for i, msg in enumerate(
            [
                {"op": "create", "sb": "x", "policy": {}},
                {"op": "exec", "sb": "x", "code": "import os; os.system('touch /tmp/pyisolate-pwned')"},
            ]
        ):
            channel.send({"id": i, **msg})
            reply = channel.recv()
            assert reply["ok"] is False and reply["error"]["type"] == "NotReady"
        channel.send({"id": 9, "op": "stats"})
        assert channel.recv()["error"]["type"] == "NotReady"
    finally:
        channel.close()
        proc.wait(timeout=10)
    assert not os.path.exists("/tmp/pyisolate-pwned")


def test_no_pickle_on_the_wire(supervisor):
    sb = supervisor.spawn("n")
    sb.exec("post({'a': [1, 2.5, None, 'x'], 'b': True})")
    assert sb.recv(timeout=5) == {"a": [1, 2.5, None, "x"], "b": True}
    assert json.dumps(sb.call("json.loads", '{"z": 1}')) == '{"z": 1}'
