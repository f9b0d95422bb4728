"""Host BPF guards (bpf/guard.bpf.c, pyisolate/bpf.py): the real programs, loaded from the
built distribution into this kernel, and the kernel refusing.

The supervisor must run on the distribution's interpreter (the loader is in its
`_pyisolate`) as root, so each test runs a small driver script with it and reads back
JSON. Sandbox guests use a test-only policy that re-enables ctypes, calling libc's
connect() directly: the audit hook never sees it. Landlock allows the policy's PORTS
(any host), so a connect to an allowed port on another host reaching the kernel is
refused by cgroup/connect4 alone, with EPERM (Landlock would say EACCES).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import need

DRIVER_PRELUDE = r"""
import json, os, socket, subprocess, sys, tempfile
from pathlib import Path
from pyisolate import Supervisor, bpf

def policy(name, connect):
    path = Path(tempfile.mkdtemp()) / f"{name}.toml"
    path.write_text(f'''
[policy]
name = "{name}"
description = "test only: ctypes re-enabled to call libc past the audit hook"
[network]
connect = {json.dumps(connect)}
[modules]
allow = ["*"]
deny = []
''')
    return str(path)

def listener(host, port=0):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.bind((host, port))
    s.listen()
    return s
"""

GUEST_LIBC = r"""
import ctypes, socket, struct, threading
libc = ctypes.CDLL(None, use_errno=True)

def connect(host, port):
    # errno of libc connect() (0: connected); ("socket", errno) when socket() failed
    v6 = ":" in host
    family = socket.AF_INET6 if v6 else socket.AF_INET
    fd = libc.socket(family, socket.SOCK_STREAM, 0)
    if fd < 0:
        return ["socket", ctypes.get_errno()]
    if v6:
        addr = struct.pack("=H", family) + struct.pack("!HI16sI", port, 0, socket.inet_pton(family, host), 0)
    else:
        addr = struct.pack("=H", family) + struct.pack("!H4s8x", port, socket.inet_aton(host))
    rc = libc.connect(fd, addr, len(addr))
    e = ctypes.get_errno() if rc != 0 else 0
    libc.close(fd)
    return e
"""


@pytest.fixture
def driver(python, cell_python, tmp_path):
    """Run a driver script on the distribution's interpreter (as the supervisor)."""
    need(os.geteuid() == 0, "loading BPF programs needs root")
    site = Path(python).parent.parent / "lib" / "python3.14t" / "site-packages" / "pyisolate"
    need((site / "bpf-objects" / "guard.bpf.o").is_file(), "the distribution ships no BPF objects; run `./dev dist`")
    need(Path("/sys/kernel/btf/vmlinux").is_file(), "the kernel exposes no BTF (tp_btf programs need it)")

    def run(body: str, timeout: float = 120, env: dict | None = None) -> dict:
        script = tmp_path / "driver.py"
        script.write_text(DRIVER_PRELUDE + textwrap.dedent(body))
        proc = subprocess.run(
            [str(python), "-I", "-B", str(script)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYISOLATE_PYTHON": str(python), **(env or {})},
        )
        assert proc.returncode == 0, f"driver failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout.strip().splitlines()[-1])

    return run


def test_tampered_object_is_refused(driver, python, tmp_path):
    shipped = Path(python).parent.parent / "lib" / "python3.14t" / "site-packages" / "pyisolate" / "bpf-objects"
    tampered = tmp_path / "objects"
    tampered.mkdir()
    for f in shipped.iterdir():
        (tampered / f.name).write_bytes(f.read_bytes())
    data = bytearray((tampered / "guard.bpf.o").read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the middle of the programs
    (tampered / "guard.bpf.o").write_bytes(bytes(data))
    expected = hashlib.sha256((shipped / "guard.bpf.o").read_bytes()).hexdigest()
    actual = hashlib.sha256(bytes(data)).hexdigest()
    out = driver(
        f"""
        try:
            bpf.Guard(Path({str(tampered)!r}))
        except bpf.BpfIntegrityError as exc:
            refused = {{"message": str(exc), "expected": exc.expected, "actual": exc.actual}}
        else:
            refused = None
        intact = bpf.Guard(Path({str(shipped)!r}))  # the shipped object loads and attaches
        # A supervisor whose objects were tampered with starts no cell, and no guest runs.
        bpf.OBJECTS = Path({str(tampered)!r})
        try:
            with Supervisor(pool=0) as sup:
                sup.spawn("never", "compute-only")
        except bpf.BpfIntegrityError as exc:
            spawn = str(exc)
        else:
            spawn = None
        print(json.dumps({{"refused": refused, "attached": list(intact.attached), "spawn": spawn}}))
        """
    )
    refused = out["refused"]
    assert refused is not None, "the tampered object was loaded"
    assert refused["expected"] == expected and refused["actual"] == actual
    assert "guard.bpf.o" in refused["message"] and expected in refused["message"] and actual in refused["message"]
    assert out["spawn"] is not None and actual in out["spawn"], "a supervisor used the tampered object"
    assert set(out["attached"]) == {
        "tp_btf/sched_process_fork",
        "tp_btf/sys_enter",
        "cgroup/sock_create",
        "cgroup/connect4",
        "cgroup/connect6",
    }


def test_connect_gated_per_sandbox_thread(driver):
    """Two sandboxes of one cell, different rules: each connects only where its own
    policy says; a thread the guest starts inherits the mark; denials are reported."""
    out = driver(
        f"""
        GUEST = {GUEST_LIBC!r}
        a = listener("127.0.0.1")
        port = a.getsockname()[1]
        b = listener("127.0.0.2", port)
        with Supervisor(pool=0) as sup:
            one = sup.spawn("one", policy("one", [f"127.0.0.1:{{port}}"]))
            two = sup.spawn("two", policy("two", [f"127.0.0.2:{{port}}", "[::1]:*"]))
            assert one.cell is two.cell
            one.exec(GUEST + '''
        def in_thread(box):
            box.append(threading.get_native_id())
            box.append(connect("127.0.0.2", PORT))
        box = []
        t = threading.Thread(target=in_thread, args=(box,))
        t.start(); t.join()
        post({{"tid": threading.get_native_id(), "allowed": connect("127.0.0.1", PORT),
               "other_host": connect("127.0.0.2", PORT), "v6": connect("::1", PORT),
               "thread_tid": box[0], "thread_other_host": box[1]}})
        '''.replace("PORT", str(port)))
            r1 = one.recv(timeout=30)
            two.exec(GUEST + '''
        post({{"tid": threading.get_native_id(), "allowed": connect("127.0.0.2", PORT),
               "other_host": connect("127.0.0.1", PORT), "v6_any_port": connect("::1", 9)}})
        '''.replace("PORT", str(port)))
            r2 = two.recv(timeout=30)
            guard = bpf.shared()
            marks = {{"one": guard.thread_mark(r1["tid"]), "two": guard.thread_mark(r2["tid"])}}
            reports = {{"one": one.guards["bpf"], "two": two.guards["bpf"]}}
            cell = {{"attached": list(one.cell.guards.attached), "mode": one.cell.guards.mode}}
            events = sup.guard_events()
            own = one.guard_events()
        # The supervisor's own (unmarked) process connects anywhere.
        s = socket.create_connection(("127.0.0.2", port)); s.close()
        print(json.dumps({{"port": port, "one": r1, "two": r2, "marks": marks, "reports": reports,
                          "events": events, "own": own, "cell": cell}}))
        """
    )
    port, one, two = out["port"], out["one"], out["two"]
    assert one["allowed"] == 0 and two["allowed"] == 0
    assert one["other_host"] == errno.EPERM  # cgroup/connect4 (Landlock allows the port)
    assert two["other_host"] == errno.EPERM
    assert one["v6"] == errno.EPERM  # cgroup/connect6: no IPv6 rule in "one"
    assert two["v6_any_port"] == errno.ECONNREFUSED  # "[::1]:*" allows it; nobody listens on 9
    assert one["thread_other_host"] == errno.EPERM and one["thread_tid"] != one["tid"]
    assert {"cgroup-bpf", "exec-kill"} <= set(out["cell"]["attached"]) and out["cell"]["mode"] == "landlock"
    r_one, r_two = out["reports"]["one"], out["reports"]["two"]
    assert r_one["attached"] and r_two["attached"] and r_one["policy"] != r_two["policy"]
    assert out["marks"]["one"] == [r_one["policy"], 0x3] and out["marks"]["two"] == [r_two["policy"], 0x3]
    refused = {(e["hook"], e["tid"], e.get("address")) for e in out["events"]}
    assert ("connect4", one["tid"], f"127.0.0.2:{port}") in refused
    assert ("connect4", one["thread_tid"], f"127.0.0.2:{port}") in refused  # the inherited mark
    assert ("connect6", one["tid"], f"[::1]:{port}") in refused
    assert ("connect4", two["tid"], f"127.0.0.1:{port}") in refused
    assert all(e["policy"] == r_one["policy"] for e in out["own"]) and len(out["own"]) == 3


HELPER = r"""
import os, socket, sys
sys.stdin.readline()  # marked by now
what = sys.argv[1]
if what == "socket":
    try:
        socket.socket().close()
        print("socket ok", flush=True)
    except OSError as exc:
        print(f"socket errno {exc.errno}", flush=True)
elif what == "exec":
    os.execv("/bin/true", ["true"])
"""


def test_marked_task_reaching_execve_is_killed(driver):
    """Sandbox threads cannot reach execve (seccomp); a plain helper process without
    seccomp, marked through the test-only path, shows what happens to a task that does."""
    out = driver(
        f"""
        guard = bpf.shared()
        policy_id = guard.add_policy([])
        results = {{}}
        for name, flags in (("marked", bpf.MARK_KILL), ("unmarked", None)):
            proc = subprocess.Popen([sys.executable, "-I", "-c", {HELPER!r}, "exec"], stdin=subprocess.PIPE, text=True)
            if flags is not None:
                guard.mark_thread(proc.pid, policy_id, flags)
            proc.stdin.write("go\\n"); proc.stdin.flush()
            results[name] = proc.wait(timeout=30)
        events = [e for e in guard.events() if e["policy"] == policy_id]
        print(json.dumps({{"results": results, "events": events}}))
        """
    )
    assert out["results"] == {"marked": -signal.SIGKILL, "unmarked": 0}
    kills = [e for e in out["events"] if e["hook"] == "exec-kill"]
    assert len(kills) == 1 and kills[0]["syscall"] == "execve"


def test_socket_refused_by_task_mark_and_by_cgroup_mark(driver):
    """cgroup/sock_create: a marked task without connect rules gets no IPv4/IPv6 socket,
    whether marked itself (task storage) or through its cgroup v2 (the fallback)."""
    out = driver(
        f"""
        guard = bpf.shared()
        policy_id = guard.add_policy([])
        def helper():
            return subprocess.Popen([sys.executable, "-I", "-c", {HELPER!r}, "socket"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        def finish(proc):
            out, _ = proc.communicate("go\\n", timeout=30)
            return out.strip()
        results = {{}}
        proc = helper()
        guard.mark_thread(proc.pid, policy_id, 0)
        results["task"] = finish(proc)
        cg = Path(bpf.cgroup2_root()) / f"pyisolate-test-{{os.getpid()}}"
        cg.mkdir()
        try:
            proc = helper()
            (cg / "cgroup.procs").write_text(str(proc.pid))
            guard.mark_cgroup(cg.stat().st_ino, policy_id, 0)
            results["cgroup"] = finish(proc)
            guard.mark_cgroup(cg.stat().st_ino, policy_id, None)
            proc = helper()
            (cg / "cgroup.procs").write_text(str(proc.pid))
            results["cgroup_unmarked"] = finish(proc)
        finally:
            cg.rmdir()
        events = [e for e in guard.events() if e["policy"] == policy_id]
        print(json.dumps({{"results": results, "events": events}}))
        """
    )
    assert out["results"] == {
        "task": f"socket errno {errno.EPERM}",
        "cgroup": f"socket errno {errno.EPERM}",
        "cgroup_unmarked": "socket ok",
    }
    sources = sorted(e["marked_by"] for e in out["events"] if e["hook"] == "sock_create")
    assert sources == ["cgroup", "task"]


def test_launcher_sandbox_is_gated(driver, dist, tmp_path):
    """pyisolate-python (the one-sandbox supervisor) marks its sandbox the same way."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    policy = tmp_path / "launch.toml"
    policy.write_text(
        f"""
[policy]
name = "launch"
description = "test only: ctypes re-enabled to call libc past the audit hook"
[network]
connect = ["127.0.0.1:{port}"]
[modules]
allow = ["*"]
deny = []
"""
    )
    code = GUEST_LIBC + f"print(connect('127.0.0.1', {port}), connect('127.0.0.2', {port}))"
    proc = subprocess.run(
        [str(dist / "bin" / "pyisolate-python"), "--policy", str(policy), "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    server.close()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", str(errno.EPERM)]


def test_reload_swaps_a_sandboxs_rules(driver):
    """bpf.replace_sandbox_rules (for policy reloads): the running sandbox's threads get the
    new connect rules in one map update."""
    out = driver(
        f"""
        GUEST = {GUEST_LIBC!r}
        a = listener("127.0.0.1")
        port = a.getsockname()[1]
        b = listener("127.0.0.2", port)
        probe = 'post([connect("127.0.0.1", PORT), connect("127.0.0.2", PORT)])'.replace("PORT", str(port))
        with Supervisor(pool=0) as sup:
            sb = sup.spawn("sb", policy("sb", [f"127.0.0.1:{{port}}"]))
            sb.exec(GUEST)
            sb.exec(probe)
            before = sb.recv(timeout=30)
            swapped = bpf.replace_sandbox_rules(sb.guards["bpf"], [("127.0.0.2", str(port))])
            sb.exec(probe)
            after = sb.recv(timeout=30)
        print(json.dumps({{"before": before, "swapped": swapped, "after": after}}))
        """
    )
    assert out["before"] == [0, errno.EPERM]
    assert out["swapped"] is True
    assert out["after"] == [errno.EPERM, 0]


# The driver's own BPF links and programs, in the kernel's words: /proc/self/fdinfo of its
# bpf_link fds (link_type, tp_name of a tracepoint link, attach_type of a cgroup one), and
# the name of each program it holds (bpf(BPF_OBJ_GET_INFO_BY_FD) on its bpf-prog fds:
# struct bpf_prog_info's name is at byte 64).
KERNEL_VIEW = r"""
import ctypes, struct

def kernel_view():
    libc = ctypes.CDLL(None, use_errno=True)
    links, programs = [], []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in info.splitlines())}
        if target == "anon_inode:bpf_link":
            links.append([fields.get("link_type"), fields.get("tp_name") or fields.get("attach_type")])
        elif target == "anon_inode:bpf-prog":
            buf = ctypes.create_string_buffer(256)
            attr = ctypes.create_string_buffer(struct.pack("=IIQ", int(fd), len(buf), ctypes.addressof(buf)), 128)
            if libc.syscall(321, 15, attr, 128) != 0:  # bpf(BPF_OBJ_GET_INFO_BY_FD)
                raise OSError(ctypes.get_errno(), "BPF_OBJ_GET_INFO_BY_FD")
            programs.append(buf.raw[64:80].split(b"\0")[0].decode())
    return {"links": sorted(links), "programs": sorted(programs)}
"""

GUARD_LINKS_NET = [  # what PYISOLATE_HOST_BPF=net leaves attached: all but sys_enter
    ["cgroup", "10"],  # BPF_CGROUP_INET4_CONNECT
    ["cgroup", "11"],  # BPF_CGROUP_INET6_CONNECT
    ["cgroup", "2"],  # BPF_CGROUP_INET_SOCK_CREATE
    ["raw_tracepoint", "sched_process_fork"],
]

SWITCHED = r'''
a = listener("127.0.0.1")
port = a.getsockname()[1]
b = listener("127.0.0.2", port)
probe = """
box = []
t = threading.Thread(target=lambda: box.append(connect("127.0.0.2", PORT)))
t.start(); t.join()
post({"allowed": connect("127.0.0.1", PORT), "other_host": connect("127.0.0.2", PORT), "thread_other_host": box[0]})
""".replace("PORT", str(port))
with Supervisor(pool=0) as sup:
    sb = sup.spawn("sb", policy("sb", [f"127.0.0.1:{port}"]))
    sb.exec(GUEST)
    sb.exec(probe)
    result = sb.recv(timeout=30)
    report = sb.cell.guards
    guard = bpf.shared()
    out = {
        "result": result,
        "cell": {"mode": report.mode, "attached": list(report.attached), "missing": list(report.missing),
                 "details": dict(report.details)},
        "sandbox": sb.guards["bpf"],
        "view": kernel_view(),
        "switched": bpf.switched(),
        "unavailable": bpf.unavailable(),
        "attached": list(guard.attached) if guard else None,
    }
from pyisolate import doctor
host_guards = doctor.report()["host"]["bpf"]["host_guards"]
out["doctor"] = {"switch": host_guards.get("switch"), "text": doctor.switch_text(host_guards)}
print(json.dumps(out))
'''


def switched(driver, value: str) -> dict:
    """A supervisor started with PYISOLATE_HOST_BPF=value: one sandbox with one connect rule,
    its guest (and a thread the guest starts) connecting to the allowed host and to another
    on the same port (Landlock allows the port); the reports and the kernel's view."""
    return driver(f"GUEST = {GUEST_LIBC!r}\n" + KERNEL_VIEW + SWITCHED, env={"PYISOLATE_HOST_BPF": value})


def test_switch_net_leaves_out_the_exec_kill(driver):
    """PYISOLATE_HOST_BPF=net: tp_btf/sys_enter is neither loaded nor attached (the kernel
    shows no sys_enter link and no such program in the supervisor), the report says why,
    and connect gating and mark propagation still refuse (EPERM)."""
    out = switched(driver, "net")
    assert out["switched"] == "net" and out["unavailable"] is None
    # The kernel refuses as before: cgroup/connect4, the thread through the fork program.
    assert out["result"] == {"allowed": 0, "other_host": errno.EPERM, "thread_other_host": errno.EPERM}
    cell = out["cell"]
    assert "cgroup-bpf" in cell["attached"] and "exec-kill" not in cell["attached"]
    assert "exec-kill" in cell["missing"] and cell["mode"] == "landlock"
    why = cell["details"]["exec-kill"]
    assert "PYISOLATE_HOST_BPF=net" in why and "operator" in why and "seccomp still refuses" in why
    sandbox = out["sandbox"]
    assert (
        sandbox["attached"] and sandbox["exec_kill"] is False and "PYISOLATE_HOST_BPF=net" in sandbox["exec_kill_why"]
    )
    assert "tp_btf/sys_enter" not in sandbox["programs"] and "tp_btf/sys_enter" not in out["attached"]
    assert out["view"]["links"] == GUARD_LINKS_NET  # no ["raw_tracepoint", "sys_enter"]
    assert "pyi_fork" in out["view"]["programs"] and "pyi_connect4" in out["view"]["programs"]
    assert "pyi_sys_enter" not in out["view"]["programs"]  # never loaded
    assert out["doctor"]["switch"] == "net" and "no tp_btf/sys_enter" in out["doctor"]["text"]


def test_switch_off_loads_nothing(driver):
    """PYISOLATE_HOST_BPF=off: no host guard program or link in the supervisor, the report
    names the switch, and nothing refuses the connect the rules leave out (Landlock only)."""
    out = switched(driver, "off")
    assert out["switched"] == "off" and out["attached"] is None
    assert "PYISOLATE_HOST_BPF=off" in out["unavailable"]
    assert out["result"] == {"allowed": 0, "other_host": 0, "thread_other_host": 0}
    cell = out["cell"]
    assert {"cgroup-bpf", "exec-kill"} <= set(cell["missing"]) and cell["mode"] == "landlock"
    assert all("PYISOLATE_HOST_BPF=off" in cell["details"][name] for name in ("cgroup-bpf", "exec-kill"))
    assert out["sandbox"]["attached"] is False and "PYISOLATE_HOST_BPF=off" in out["sandbox"]["why"]
    guard_programs = {"pyi_fork", "pyi_sys_enter", "pyi_connect4", "pyi_connect6", "pyi_sock_create"}
    assert not guard_programs & set(out["view"]["programs"])
    assert not [link for link in out["view"]["links"] if link[0] in ("cgroup", "raw_tracepoint")]
    assert out["doctor"]["switch"] == "off" and "no host guard" in out["doctor"]["text"]


def test_switch_invalid_value_fails_the_spawn(driver):
    """Any other value: the first cell's spawn fails naming the variable, the value and the
    allowed ones (and so does the next: the error is not cached), and nothing is loaded."""
    out = driver(
        KERNEL_VIEW
        + """
        errors = []
        with Supervisor(pool=0) as sup:
            for attempt in range(2):
                try:
                    sup.spawn(f"never{attempt}", "compute-only")
                except Exception as exc:
                    errors.append([type(exc).__name__, str(exc)])
        print(json.dumps({"errors": errors, "view": kernel_view(), "switched": bpf.switched()}))
        """.replace("\n        ", "\n"),
        env={"PYISOLATE_HOST_BPF": "exec-only"},
    )
    assert len(out["errors"]) == 2, out
    for name, message in out["errors"]:
        assert name == "BpfSwitchError"
        assert "PYISOLATE_HOST_BPF='exec-only'" in message and "all, net, off" in message
    assert out["switched"] is None
    assert not [link for link in out["view"]["links"] if link[0] in ("cgroup", "raw_tracepoint")]
