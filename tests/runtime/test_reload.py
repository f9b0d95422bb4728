"""Policy hot-reload: validated first, old-or-new never a mix, honest about the kernel."""

import errno
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
import test_bpf_guards

from conftest import need
from pyisolate import policy as policy_mod
from pyisolate import reload
from pyisolate.errors import ReloadRefused, SandboxError


def _policy(name: str, read: list[str], **extra) -> policy_mod.Policy:
    read_list = "[" + ", ".join(f'"{p}"' for p in read) + "]"
    lines = ["[policy]", f'name = "{name}"', "[filesystem]", f"read = {read_list}", "[modules]", 'allow = ["*"]']
    for table, body in extra.items():
        lines += [f"[{table}]", body]
    return policy_mod.loads("\n".join(lines), f"<{name}>")


driver = test_bpf_guards.driver  # the BPF tests' fixture: a script run as the supervisor


@pytest.fixture
def dirs(tmp_path):
    out = {}
    for key in ("a", "b", "c"):
        d = tmp_path / key
        d.mkdir()
        (d / "f").write_text(key)
        out[key] = str(d)
    return out


def _exec_read(sb, path: str) -> str:
    sb.exec(f"import io\nwith io.open({path!r}) as f:\n    post(f.read())")
    return sb.recv(timeout=10)


def test_reload_narrows_a_running_sandbox_at_its_next_check(supervisor, dirs):
    both = _policy("reloadable", [dirs["a"], dirs["b"]])
    sb = supervisor.spawn("r1", both)
    assert _exec_read(sb, dirs["b"] + "/f") == "b"

    report = supervisor.reload_policy(_policy("reloadable", [dirs["a"]]))
    assert report.version == 2 and report.book_versions == {"r1": 2}
    (change,) = report.plans[0].changes
    assert (change.field, change.disposition) == ("fs_read", reload.PYTHON_ONLY)
    with pytest.raises(SandboxError, match=r"reading .*/b/f is not allowed by the policy \(version 2\)"):
        _exec_read(sb, dirs["b"] + "/f")
    assert _exec_read(sb, dirs["a"] + "/f") == "a"
    # Back to the spawn-time rules: the kernel and the Python layer agree again.
    report = supervisor.reload_policy(both)
    assert report.plans[0].changes[0].disposition == reload.APPLIED
    assert _exec_read(sb, dirs["b"] + "/f") == "b"


def test_invalid_policy_changes_nothing(supervisor, dirs, tmp_path):
    sb = supervisor.spawn("r2", _policy("stable", [dirs["a"]]))
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "stable"\n[filesystem]\nread = "not-a-list"\n')
    with pytest.raises(ReloadRefused, match=r"invalid policy: .*bad\.toml"):
        supervisor.reload_policy(bad)
    assert "stable" not in supervisor.policies
    assert _exec_read(sb, dirs["a"] + "/f") == "a"
    with pytest.raises(SandboxError, match=r"version 1\)"):
        _exec_read(sb, dirs["b"] + "/f")


def test_widening_beyond_the_kernel_domain_is_refused_or_reported(supervisor, dirs):
    sb = supervisor.spawn("r3", _policy("narrow", [dirs["a"]]))
    wider = _policy("narrow", [dirs["a"], dirs["b"]], limits="wall_time = 5.0")
    with pytest.raises(ReloadRefused, match=r"nothing changed: r3: fs_read .*beyond the kernel domain"):
        supervisor.reload_policy(wider)
    assert sb.policy.limits.wall_time is None and "narrow" not in supervisor.policies

    report = supervisor.reload_policy(wider, running="best-effort")
    dispositions = {c.field: c.disposition for c in report.plans[0].changes}
    assert dispositions == {"fs_read": reload.NOT_APPLIED, "limits.wall_time": reload.APPLIED}
    assert sb.policy.limits.wall_time == 5.0  # applied by the supervisor
    assert dirs["b"] not in sb.policy.fs_read  # the rule book never claims what the kernel refuses
    with pytest.raises(SandboxError, match="not allowed"):
        _exec_read(sb, dirs["b"] + "/f")
    # A sandbox spawned now gets the whole new policy, its kernel domain included.
    fresh = supervisor.spawn("r3-new", "narrow")
    assert _exec_read(fresh, dirs["b"] + "/f") == "b"


def test_reload_lowers_a_running_memory_cap_and_never_raises_it(supervisor):
    from pyisolate.errors import QuotaExceeded

    sb = supervisor.spawn("mem", _policy("mem", [], limits='memory = "256M"'))
    need("per-interpreter cap" in str(sb.quota_info.get("memory", "")), f"no memory cap patch: {sb.quota_info}")
    sb.exec("x = bytearray(96 << 20)\ndel x")  # fits under the creation-time cap

    report = supervisor.reload_policy(_policy("mem", [], limits='memory = "64M"'))
    (change,) = report.plans[0].changes
    assert (change.field, change.disposition) == ("limits.memory", reload.APPLIED)
    assert "per-interpreter cap 67108864 bytes" in report.memory_caps["mem"]
    assert sb.stats()["memory"]["cap"] == 64 << 20 and sb.policy.limits.memory == 64 << 20
    with pytest.raises(QuotaExceeded) as info:
        sb.exec("x = bytearray(96 << 20)")  # what fitted before the reload
    assert info.value.quota == "memory" and info.value.limit == 64 << 20
    assert sb.call("operator.mul", 6, 7) == 42  # it runs on under the lower cap

    # The allocator cap only tightens: raising it is refused whole, or kept in best effort.
    higher = _policy("mem", [], limits='memory = "512M"')
    with pytest.raises(ReloadRefused, match=r"nothing changed: mem: limits.memory \(.*only tightens\)"):
        supervisor.reload_policy(higher)
    report = supervisor.reload_policy(higher, running="best-effort")
    assert report.plans[0].changes[0].disposition == reload.NOT_APPLIED and "mem" not in report.memory_caps
    assert sb.stats()["memory"]["cap"] == 64 << 20 and sb.policy.limits.memory == 64 << 20


def test_new_only_leaves_running_sandboxes_alone(supervisor, dirs):
    sb = supervisor.spawn("r4", _policy("later", [dirs["a"], dirs["b"]]))
    report = supervisor.reload_policy(_policy("later", [dirs["a"]]), running="new-only")
    assert report.skipped == {"r4": "running='new-only'"} and not report.plans
    assert _exec_read(sb, dirs["b"] + "/f") == "b"


def test_alternating_reloads_are_never_seen_mixed(supervisor, dirs):
    """Thousands of A/B reloads while the sandbox checks paths without pause. A is "a and c",
    B is "b and c", published as rule-book versions 2, 3, 4, … (even = A, odd = B).
    Every denial names the version it was decided under; a decision that does not match
    that version's rules, or a refusal of c (allowed by every version), would be a mixed
    or half-written view."""
    base = _policy("ab", [dirs["a"], dirs["b"], dirs["c"]])
    only_a, only_b = _policy("ab", [dirs["a"], dirs["c"]]), _policy("ab", [dirs["b"], dirs["c"]])
    sb = supervisor.spawn("stress", base)
    fa, fb, fc = dirs["a"] + "/f", dirs["b"] + "/f", dirs["c"] + "/f"
    sb.exec(
        "import io, re\n"
        "def probe(paths, rounds):\n"
        "    seen = []\n"
        "    for _ in range(rounds):\n"
        "        for p in paths:\n"
        "            try:\n"
        "                io.open(p).close()\n"
        "                seen.append((p, 'ok', 0))\n"
        "            except PermissionError as e:\n"
        "                seen.append((p, 'denied', int(re.search(r'version (\\d+)', str(e)).group(1))))\n"
        "    return seen\n"
    )
    reloads = 2000
    done = threading.Event()
    results: list = []

    def probe(rounds: int) -> list:
        sb.exec(f"post(probe([{fc!r}, {fa!r}, {fb!r}], {rounds}))")
        return sb.recv(timeout=30)

    def checker():
        while not done.is_set():
            results.extend(probe(50))

    thread = threading.Thread(target=checker)
    thread.start()
    try:
        for i in range(reloads):
            supervisor.reload_policy(only_a if i % 2 == 0 else only_b)
    finally:
        done.set()
        thread.join()
    results.extend(probe(5))

    denials = [(p, v) for p, verdict, v in results if verdict == "denied"]
    assert all(p != fc for p, _ in denials), "the path every version allows was refused"
    assert len(denials) > 100, "the checks did not overlap the reloads"
    for path, version in denials:
        assert version >= 2
        expected_denied = fb if version % 2 == 0 else fa  # even: only a; odd: only b
        assert path == expected_denied, f"{path} denied under version {version}: a mixed view"
    versions = {v for _, v in denials}
    assert len(versions) > 20, f"too few versions observed: {sorted(versions)[:10]}"
    final = reloads + 1  # versions 2..reloads+1
    assert max(versions) == final


def test_reload_over_the_control_socket_is_for_the_owner_only(supervisor, dirs):
    from pyisolate import control

    need(Path("/usr/bin/python3").exists(), "no /usr/bin/python3 to run a client as another uid")
    sb = supervisor.spawn("r5", _policy("remote", [dirs["a"], dirs["b"]]))
    home = Path(tempfile.mkdtemp(prefix="pyisolate-control-"))  # /tmp: reachable by any uid
    path = home / "control.sock"
    logged: list[str] = []
    server = control.serve(supervisor, path, log=logged.append)
    try:
        assert path.stat().st_mode & 0o777 == 0o600
        assert control.key_path(path).stat().st_mode & 0o777 == 0o600
        new = home / "remote.toml"
        new.write_text(f'[policy]\nname = "remote"\n[filesystem]\nread = ["{dirs["a"]}"]\n[modules]\nallow = ["*"]\n')
        reply = control.reload(path, new)
        assert reply["report"]["version"] == 2 and "fs_read" in reply["text"]
        with pytest.raises(SandboxError, match=r"version 2\)"):
            _exec_read(sb, dirs["b"] + "/f")

        # Another uid: even with the socket file opened up by mistake, the kernel's peer
        # credentials turn it away, and the refusal names who asked. The client runs the
        # system's python3 on a world-readable copy of the package.
        shutil.copytree(Path(control.__file__).parent, home / "pyisolate")
        wider = home / "wider.toml"
        wider.write_text(new.read_text().replace(f'["{dirs["a"]}"]', f'["{dirs["a"]}", "{dirs["b"]}"]'))
        for p in (home, *home.rglob("*")):
            os.chmod(p, 0o666 if p == path else 0o755 if p.is_dir() else 0o644)
        code = (
            "import sys; sys.path[:0] = sys.argv[1:2]\n"
            "from pyisolate import control\n"
            "try:\n"
            "    control.reload(sys.argv[2], sys.argv[3])\n"
            "except Exception as e:\n"
            "    print(type(e).__name__, e)\n"
        )
        out = subprocess.run(
            ["/usr/bin/python3", "-I", "-c", code, str(home), str(path), str(wider)],
            user=65534,
            group=65534,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "ReloadRefused refused: uid 65534 is not the supervisor's owner" in out.stdout, out.stderr
        assert any("refused a connection from pid" in line and "uid 65534" in line for line in logged)
        assert supervisor.policies["remote"][0] == 2  # unchanged by the refused request

        # The owner with the wrong key: the sealed handshake fails, nothing changes.
        from pyisolate import broker

        key = control.key_path(path)
        good_key = key.read_bytes()
        key.write_bytes(broker.SupervisorKeys().issue()[1].to_bytes())
        with pytest.raises(broker.HandshakeError):
            control.reload(path, wider)
        key.write_bytes(good_key)
        assert supervisor.policies["remote"][0] == 2
    finally:
        server.close()
        shutil.rmtree(home)
    assert not path.exists()


def test_pyisolate_policy_reload_command(supervisor, dist, dirs, tmp_path):
    """The distribution's `pyisolate policy reload` against a running supervisor: a valid
    file prints the plan; an invalid one is refused with the file's problem, exit 1."""
    sb = supervisor.spawn("r6", _policy("cli", [dirs["a"], dirs["b"]]))
    path = tmp_path / "control.sock"
    supervisor.serve_control(path)
    good = tmp_path / "cli.toml"
    good.write_text(f'[policy]\nname = "cli"\n[filesystem]\nread = ["{dirs["a"]}"]\n[modules]\nallow = ["*"]\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('[policy]\nname = "cli"\n[limits]\nmemory = "lots"\n')
    command = [str(dist / "bin" / "pyisolate"), "policy", "reload", "--socket", str(path)]

    out = subprocess.run([*command, str(good)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "policy 'cli' is now version 2" in out.stdout and "python-layer" in out.stdout
    with pytest.raises(SandboxError, match=r"version 2\)"):
        _exec_read(sb, dirs["b"] + "/f")

    out = subprocess.run([*command, str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "reload refused: invalid policy:" in out.stderr and "memory" in out.stderr
    assert supervisor.policies["cli"][0] == 2


def test_bpf_rules_switch_whole_under_alternating_reloads(driver):
    """The kernel side of a reload: the sandbox thread's connect rules (host BPF guards)
    switch in one map update, and the old set goes only after an RCU grace period. While
    reloads alternate A = {.1, .3} and B = {.2, .3} as fast as they go, the guest calls
    libc's connect() directly (past the Python layer) without pause: .3 is allowed by
    every version, so a single refusal of it would be a half-written or half-removed set."""
    from test_bpf_guards import GUEST_LIBC

    out = driver(
        f"""
        import threading, time
        GUEST = {GUEST_LIBC!r}
        first = listener("127.0.0.1")
        port = first.getsockname()[1]
        listeners = [first, listener("127.0.0.2", port), listener("127.0.0.3", port)]

        def drain(s):
            while True:
                c, _ = s.accept()
                c.close()

        for s in listeners:
            threading.Thread(target=drain, args=(s,), daemon=True).start()
        hosts = lambda *n: [f"127.0.0.{{i}}:{{port}}" for i in n]
        with Supervisor(pool=0) as sup:
            sb = sup.spawn("sb", policy("ab", hosts(1, 2, 3)))
            a, b = policy("ab", hosts(1, 3)), policy("ab", hosts(2, 3))
            sb.exec(GUEST)
            sb.exec('''
        import time
        def hammer(port, seconds):
            seen = {{}}
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                # Mostly the common destination: every refusal is a ring-buffer event, and
                # a flood the supervisor cannot drain in time ends the cell (fail-closed).
                for host in ("127.0.0.3", "127.0.0.3", "127.0.0.3", "127.0.0.3", "127.0.0.1", "127.0.0.2"):
                    key = f"{{host}} {{connect(host, port)}}"
                    seen[key] = seen.get(key, 0) + 1
            return seen
        ''')
            result = {{}}
            worker = threading.Thread(target=lambda: result.update(sb.call("__main__.hammer", port, 6.0) or {{}}))
            sb.exec("import __main__")  # the call below resolves __main__ by import
            worker.start()
            reloads = 0
            while worker.is_alive():
                report = sup.reload_policy(a if reloads % 2 == 0 else b)
                assert report.bpf_switched == {{"sb": True}}, report.to_wire()
                reloads += 1
            worker.join()
        print(json.dumps({{"reloads": reloads, "seen": result}}))
        """,
        timeout=180,
    )
    seen, eperm = out["seen"], errno.EPERM
    assert out["reloads"] > 500, out
    assert seen.get(f"127.0.0.3 {eperm}", 0) == 0, f"the rule allowed by every version was refused: {seen}"
    assert set(seen) <= {f"127.0.0.{i} {e}" for i in (1, 2, 3) for e in (0, eperm)}, seen
    for host in ("127.0.0.1", "127.0.0.2"):  # each version's own rule was seen both ways
        assert seen.get(f"{host} 0", 0) > 0 and seen.get(f"{host} {eperm}", 0) > 0, seen
