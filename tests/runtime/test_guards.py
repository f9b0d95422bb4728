"""Kernel guards: watch the KERNEL refuse, independently of the Python-level layer.

The guests here run under a test-only policy that re-enables ctypes (`[modules] deny = []`),
so they call libc directly (`ctypes.CDLL(None).open(...)`, `.socket`, `.execve`, …): the
audit hook never sees those calls. What refuses them is Landlock (EACCES) and the seccomp
allow-list (EPERM) on the sandbox's own thread, and the cell's base filter.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from conftest import need

LIBC_HELPERS = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.ptrace.restype = ctypes.c_long
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]

def err(result):
    # 0 when the call worked, else its errno (what the kernel answered)
    return ctypes.get_errno() if result == -1 else 0

def try_open(path, flags=os.O_RDONLY):
    fd = libc.open(path.encode(), flags, 0o600)
    if fd >= 0:
        libc.close(fd)
    return err(fd)
"""


def policy_file(tmp_path, name: str, read=(), write=(), connect=(), extra: str = "") -> str:
    """A test-only policy: ctypes allowed (no module denied), so guests reach libc."""
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"""
[policy]
name = "{name}"
description = "test only: ctypes re-enabled to call libc past the audit hook"
[filesystem]
read = {json.dumps(list(read))}
write = {json.dumps(list(write))}
[network]
connect = {json.dumps(list(connect))}
[modules]
allow = ["*"]
deny = []
{extra}
"""
    )
    return str(path)


def run(sb, code: str):
    sb.exec(LIBC_HELPERS + code)
    return sb.recv(timeout=30)


@pytest.fixture
def guarded(supervisor):
    """The host must have what the guards need (the cell says so in its hello)."""

    def check(sb):
        need(sb.cell.guards.mode != "none", f"kernel guards unavailable here: {dict(sb.cell.guards.details)}")
        return sb

    return check


@pytest.fixture
def dirs(tmp_path):
    inside, outside, scratch = tmp_path / "inside", tmp_path / "outside", tmp_path / "scratch"
    for d in (inside, outside, scratch):
        d.mkdir()
        (d / "file.txt").write_text(d.name)
    return inside, outside, scratch


def test_landlock_refuses_open_outside_the_policy(supervisor, guarded, dirs, tmp_path):
    inside, outside, scratch = dirs
    assert os.access(outside / "file.txt", os.R_OK) and os.access("/etc/hostname", os.R_OK)  # to us, yes
    missing = tmp_path / "not-there"
    pol = policy_file(tmp_path, "fs", read=[str(inside), str(missing)], write=[str(scratch)])
    sb = guarded(supervisor.spawn("fs", pol))
    result = run(
        sb,
        f"""
post({{
    "inside": try_open({str(inside / "file.txt")!r}),
    "outside": try_open({str(outside / "file.txt")!r}),
    "etc": try_open("/etc/hostname"),
    "write_inside_read_root": try_open({str(inside / "new.txt")!r}, os.O_WRONLY | os.O_CREAT),
    "write_scratch": try_open({str(scratch / "new.txt")!r}, os.O_WRONLY | os.O_CREAT),
    "unlink_outside": err(libc.unlink({str(outside / "file.txt")!r}.encode())),
    "unlink_scratch": err(libc.unlink({str(scratch / "file.txt")!r}.encode())),
    "mkdir_outside": err(libc.mkdir({str(outside / "d")!r}.encode(), 0o700)),
    "chmod_outside": err(libc.chmod({str(outside / "file.txt")!r}.encode(), 0o777)),
}})
""",
    )
    assert result == {
        "inside": 0,
        "outside": errno.EACCES,
        "etc": errno.EACCES,
        "write_inside_read_root": errno.EACCES,
        "write_scratch": 0,
        "unlink_outside": errno.EACCES,
        "unlink_scratch": 0,
        "mkdir_outside": errno.EACCES,
        "chmod_outside": errno.EPERM,  # seccomp: Landlock cannot confine mode changes
    }
    assert (outside / "file.txt").exists() and not (scratch / "file.txt").exists()
    assert oct((outside / "file.txt").stat().st_mode & 0o777) == oct(0o644 & ~0o022)
    report = sb.guards
    assert report["landlock"]["abi"] >= 1 and report["seccomp"]["kind"] == "allow-list"
    assert report["reduced"] == []
    assert report["landlock"]["skipped"] == [[str(missing), "No such file or directory"]]


def test_seccomp_refuses_exec_ptrace_bpf_socket_fork(supervisor, guarded, tmp_path):
    sb = guarded(supervisor.spawn("sc", policy_file(tmp_path, "sc")))
    result = run(
        sb,
        """
PROT_RWX, MAP_ANON_PRIVATE = 7, 0x22
argv = (ctypes.c_char_p * 2)(b"/bin/true", None)
anon_exec = libc.mmap(None, 4096, PROT_RWX, MAP_ANON_PRIVATE, -1, 0)
fd = os.open(os.__file__, os.O_RDONLY)  # the stdlib is readable
file_rwx = libc.mmap(None, 4096, PROT_RWX, 2, fd, 0)  # MAP_PRIVATE
file_rwx_errno = ctypes.get_errno()
file_rx = libc.mmap(None, 4096, 5, 2, fd, 0)  # PROT_READ | PROT_EXEC: how extension modules load
os.close(fd)
post({
    "execve": err(libc.execve(b"/bin/true", argv, None)),
    "ptrace": err(libc.ptrace(0, 0, None, None)),           # PTRACE_TRACEME
    "bpf": err(libc.syscall(321, 0, None, 0)),               # SYS_bpf, BPF_MAP_CREATE
    "socket_inet": err(libc.socket(2, 1, 0)),                # AF_INET, SOCK_STREAM
    "socket_unix": err(libc.socket(1, 1, 0)),                # AF_UNIX
    "fork": err(libc.fork()),
    "x32_getpid": err(libc.syscall(0x40000000 | 39)),        # the x32 ABI bit
    "anon_exec_mmap": ctypes.get_errno() if anon_exec in (None, 2**64 - 1) else 0,
    "file_rwx_mmap": file_rwx_errno if file_rwx in (None, 2**64 - 1) else 0,
    "file_rx_mmap": 0 if file_rx not in (None, 2**64 - 1) else ctypes.get_errno(),
    "getpid": 0 if libc.getpid() > 0 else ctypes.get_errno(),
})
""",
    )
    assert result == {
        "execve": errno.EPERM,
        "ptrace": errno.EPERM,
        "bpf": errno.EPERM,
        "socket_inet": errno.EPERM,
        "socket_unix": errno.EPERM,
        "fork": errno.EPERM,
        "x32_getpid": errno.EPERM,
        "anon_exec_mmap": errno.EPERM,
        "file_rwx_mmap": errno.EPERM,
        "file_rx_mmap": 0,
        "getpid": 0,
    }


def test_guest_threads_inherit_the_guards(supervisor, guarded, dirs, tmp_path):
    inside, outside, _ = dirs
    sb = guarded(supervisor.spawn("th", policy_file(tmp_path, "th", read=[str(inside)])))
    result = run(
        sb,
        f"""
import threading
out = {{}}
def worker():
    out["inside"] = try_open({str(inside / "file.txt")!r})
    out["outside"] = try_open({str(outside / "file.txt")!r})
    out["socket"] = err(libc.socket(2, 1, 0))
    out["execve"] = err(libc.execve(b"/bin/true", None, None))
t = threading.Thread(target=worker)
t.start(); t.join()
post(out)
""",
    )
    assert result == {"inside": 0, "outside": errno.EACCES, "socket": errno.EPERM, "execve": errno.EPERM}


def test_other_sandbox_threads_keep_their_own_policy(supervisor, guarded, dirs, tmp_path):
    inside, outside, _ = dirs
    a = guarded(supervisor.spawn("a", policy_file(tmp_path, "a", read=[str(inside)])))
    b = supervisor.spawn("b", policy_file(tmp_path, "b", read=[str(outside)]))
    assert a.cell is b.cell  # same tenant, same cell process, different threads
    probe = f"post([try_open({str(inside / 'file.txt')!r}), try_open({str(outside / 'file.txt')!r})])"
    assert run(a, probe) == [0, errno.EACCES]
    assert run(b, probe) == [errno.EACCES, 0]
    assert run(a, probe) == [0, errno.EACCES]


def test_cell_threads_are_not_restricted(supervisor, guarded, tmp_path):
    sb = guarded(supervisor.spawn("first", policy_file(tmp_path, "first")))
    pid = sb.cell.pid
    # The kernel's view: every thread has the cell's base filter; the sandbox thread has
    # its allow-list on top; the main (control) thread has no Landlock/allow-list.
    main = _status(f"/proc/{pid}/status")
    assert main["Seccomp"] == "2" and main["NoNewPrivs"] == "1" and main["Seccomp_filters"] == "1"
    assert sb.guards["status"] == {"seccomp": 2, "seccomp_filters": 2, "no_new_privs": 1}
    # … so the cell still does what its own threads need: new interpreters and sandboxes.
    later = supervisor.spawn("later", "stdlib-readonly")
    assert later.cell is sb.cell
    later.exec("import json\npost(json.dumps([1]))")
    assert later.recv(timeout=30) == "[1]"
    report = sb.cell.guards
    assert report.mode == "landlock"
    assert {"no-new-privs", "seccomp-base", "landlock", "seccomp", "rlimits"} <= set(report.attached)
    assert "bpf-lsm" in report.missing
    # The cell's cgroup (quotas): attached where the host has memory and pids controllers.
    from pyisolate import cgroups

    found = cgroups.detect()
    has_groups = found["memory"] is not None and found["pids"] is not None
    assert ("cgroup" in report.attached) == has_groups and ("cgroup" in report.missing) != has_groups


def test_cell_base_filter_covers_every_thread(python):
    """The filter sitecustomize installs in every cell, applied to a plain process here."""
    script = r"""
import ctypes, json, os, threading, _pyisolate
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def x32():
    return libc.syscall(0x40000000 | 39) == -1 and ctypes.get_errno()
def attempt(fn):
    try:
        fn()
        return 0
    except OSError as exc:
        return exc.errno
out = {"x32_before": x32(), "filter": _pyisolate.seccomp_cell_filter()}
def other_thread():  # started after the filter: TSYNC and inheritance both cover it
    out["thread_execve"] = attempt(lambda: os.execv("/bin/true", ["/bin/true"]))
t = threading.Thread(target=other_thread)
t.start(); t.join()
out["x32_after"] = x32()
out["fork"] = attempt(os.fork)
out["main_execve"] = attempt(lambda: os.execv("/bin/true", ["/bin/true"]))
out["unshare"] = attempt(lambda: os.unshare(os.CLONE_NEWUSER))
out["bpf"] = libc.syscall(321, 0, None, 0) == -1 and ctypes.get_errno()
print(json.dumps(out))
"""
    level = subprocess.run(
        [str(python), "-I", "-c", "import _pyisolate; print(_pyisolate.seccomp_api_level())"],
        capture_output=True,
        text=True,
    )
    need(level.stdout.strip() not in ("", "0"), f"no usable seccomp here: {level.stderr[-300:]}")
    proc = subprocess.run([str(python), "-I", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["x32_before"] == errno.ENOSYS  # no x32 ABI here: the kernel answers ENOSYS …
    assert out["x32_after"] == errno.EPERM  # … the filter answers first
    assert out["filter"]["kind"] == "deny-list" and out["filter"]["tsync"] is True
    for key in ("thread_execve", "fork", "main_execve", "unshare", "bpf"):
        assert out[key] == errno.EPERM, (key, out)


def test_tcp_connect_only_to_policy_ports(supervisor, guarded, tmp_path):
    listeners = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        listeners.append(s)
    allowed, other = (s.getsockname()[1] for s in listeners)
    sb = guarded(supervisor.spawn("net", policy_file(tmp_path, "net", connect=[f"127.0.0.1:{allowed}"])))
    need(sb.guards["landlock"]["abi"] >= 4, "Landlock ABI < 4: no TCP port rules on this kernel")
    try:
        result = run(
            sb,
            f"""
import struct
def connect(port):
    fd = libc.socket(2, 1, 0)
    if fd < 0:
        return ("socket", ctypes.get_errno())
    addr = struct.pack("!HH4s8x", 2, port, bytes([127, 0, 0, 1]))
    addr = struct.pack("=H", 2) + addr[2:]
    rc = libc.connect(fd, addr, len(addr))
    e = err(rc)
    libc.close(fd)
    return ("connect", e)
def bind():
    fd = libc.socket(2, 1, 0)
    addr = struct.pack("=H", 2) + struct.pack("!H4s8x", 0, bytes([127, 0, 0, 1]))
    e = err(libc.bind(fd, addr, len(addr)))
    libc.close(fd)
    return e
post({{"allowed": connect({allowed}), "other": connect({other}), "bind": bind(),
       "udp": err(libc.socket(2, 2, 0))}})
""",
        )
    finally:
        for s in listeners:
            s.close()
    assert result == {
        "allowed": ["connect", 0],
        "other": ["connect", errno.EACCES],  # Landlock: port not in the policy
        "bind": errno.EPERM,  # seccomp: a sandbox is never a server
        "udp": errno.EPERM,  # seccomp: TCP only
    }


def test_rlimits_where_the_cell_is_exclusive(supervisor, guarded, dirs, tmp_path):
    inside, _, _ = dirs
    limits = "[limits]\nopen_files = 16\ncpu_time = 30\nthreads = 2"
    pol = policy_file(tmp_path, "lim", read=[str(inside)], extra=limits)
    alone = guarded(supervisor.spawn("alone", pol, isolation="process"))
    rl = alone.guards["rlimits"]
    assert rl["open_files"].startswith("RLIMIT_NOFILE=") and rl["cpu_time"].startswith("RLIMIT_CPU=")
    assert rl["threads"].startswith("not enforced")
    opened = run(
        alone,
        f"""
fds = []
while len(fds) < 1000:
    fd = libc.open({str(inside / "file.txt")!r}.encode(), os.O_RDONLY)
    if fd < 0:
        break
    fds.append(fd)
e = ctypes.get_errno()
for fd in fds:
    libc.close(fd)
post([len(fds), e])
""",
    )
    assert opened[1] == errno.EMFILE and 12 <= opened[0] <= 16, opened
    shared = supervisor.spawn("shared", pol)
    assert shared.guards["rlimits"]["open_files"].startswith("not enforced")


def test_sandboxes_refused_without_kernel_guards_unless_accepted(cell_python, tmp_path):
    """A copy of the distribution without the native extension: no guards can be applied."""
    prefix, source = tmp_path / "prefix", os.path.realpath(os.path.dirname(os.path.dirname(cell_python)))
    if subprocess.run(["cp", "-al", source, str(prefix)], capture_output=True).returncode != 0:
        shutil.rmtree(prefix, ignore_errors=True)  # another filesystem: no hard links, copy
        subprocess.run(["cp", "-a", source, str(prefix)], check=True)
    site = prefix / "lib" / "python3.14t" / "site-packages"
    modules = list(site.glob("_pyisolate.*.so"))
    need(bool(modules), "the distribution has no _pyisolate extension to take away")
    for module in modules:
        module.unlink()
    from pyisolate import GuardError, Supervisor

    with Supervisor(python=str(prefix / "bin" / "python3.14t"), pool=0, stderr=subprocess.PIPE) as sup:
        with pytest.raises(GuardError, match="accept_reduced"):
            sup.spawn("refused", policy_file(tmp_path, "strict"))
        sb = sup.spawn("accepted", policy_file(tmp_path, "lax", extra="[guards]\naccept_reduced = true"))
        sb.exec("post(6 * 7)")
        assert sb.recv(timeout=30) == 42
        assert sb.cell.guards.mode == "none" and "landlock" in sb.cell.guards.missing
        assert any("landlock" in r for r in sb.guards["reduced"])
    shutil.rmtree(prefix)


def test_accept_reduced_is_validated_and_explained():
    from pyisolate import PolicyError
    from pyisolate import policy as policy_mod

    base = '[policy]\nname = "p"\n'
    assert policy_mod.loads(base).accept_reduced is False
    lax = policy_mod.loads(base + "[guards]\naccept_reduced = true\n")
    assert lax.accept_reduced is True and "ACCEPTS REDUCED GUARANTEES" in lax.explain()
    with pytest.raises(PolicyError, match=r"\[guards\]\.accept_reduced: must be true or false"):
        policy_mod.loads(base + '[guards]\naccept_reduced = "yes"\n')
    with pytest.raises(PolicyError, match="unknown key"):
        policy_mod.loads(base + "[guards]\nrequire = true\n")


def test_doctor_reports_each_guarantee(python, cell_python):
    proc = subprocess.run(
        [str(python.parent / "pyisolate"), "doctor", "--json"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [g["id"] for g in report["guarantees"]] == [1, 2, 3, 4, 5]
    assert all(g["status"] in ("holds", "partial", "missing") and g["mechanism"] for g in report["guarantees"])
    host = report["host"]
    need(host["landlock"]["abi"] > 0 and host["seccomp"]["api"] > 0, "no Landlock or seccomp on this host")
    # The mode follows the kernel: "full" only where the runtime's BPF-LSM object could guard
    # sandboxes (this kind of host refuses LSM loads), and the report says why not.
    why = host["lsm_why_not"]
    assert report["mode"] == ("full" if why is None else "landlock")
    assert report["guarantees"][0]["status"] == ("holds" if why is None else "partial")
    if why is not None:
        assert "BPF-LSM (mode 'full')" in report["guarantees"][0]["missing"]
    assert [g["status"] for g in report["guarantees"][2:4]] == ["holds", "holds"]  # broker, reload
    assert "libsodium 1.0.22" in report["guarantees"][2]["mechanism"]
    text = subprocess.run([str(python.parent / "pyisolate"), "doctor"], capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "Landlock ABI" in text.stdout and "Process containment" in text.stdout
    helped = subprocess.run([str(python.parent / "pyisolate"), "doctor", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--json" in helped.stdout


def _status(path: str) -> dict:
    with open(path) as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
