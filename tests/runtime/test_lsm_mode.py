"""Mode "full" (the BPF-LSM programs through pyisolate/lsm.py) as the host sees it.

The kernel decides: where it refuses LSM program loads (the development hosts: EPERM even
as root) or does not run the bpf LSM, the runtime must say "landlock" and why, in the
kernel's words; where it runs them, "full". The programs themselves, the runtime in
mode "full", its reloads and the A/B reload stress are proven in QEMU guests
(`./dev vmtest`, tests/vm/guest_full.py: the `full.*` checks).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import test_bpf_guards

from pyisolate import lsm
from pyisolate import policy as policy_mod

driver = test_bpf_guards.driver  # a script run as the supervisor, on the distribution


def test_mode_is_what_the_kernel_does_with_lsm_programs(driver):
    out = driver(
        """
        from pyisolate import lsm
        probe = bpf.probe()["lsm"]
        why = lsm.why_not()
        with Supervisor(pool=0) as sup:
            sb = sup.spawn("m", "compute-only")
            g = sb.cell.guards
            print(json.dumps({"probe": probe, "why": why, "mode": g.mode, "attached": list(g.attached),
                              "missing": list(g.missing), "detail": g.details["bpf-lsm"], "lsm": sb.guards["lsm"],
                              "runs": sb.call("math.prod", [6, 7])}))
        """
    )
    assert out["runs"] == 42
    if out["why"] is None:  # a kernel running the bpf LSM: everything of mode "landlock", plus BPF-LSM
        assert out["mode"] == "full" and "bpf-lsm" in out["attached"], out
        assert out["lsm"]["attached"] and out["lsm"]["marked_via"] in ("PIDFD_THREAD", "pending"), out
        return
    # Here: the sandbox runs in mode "landlock", and every report says why, truthfully.
    assert out["mode"] == "landlock" and "bpf-lsm" in out["missing"], out
    assert out["detail"] == f"BPF-LSM programs not loaded: {out['why']}"
    assert out["lsm"] == {"attached": False, "why": out["why"]}
    if not out["probe"]["loads"]:  # the kernel's own answer to the probe load, quoted
        assert out["probe"]["why"] in out["why"], out
    else:  # loads, but the kernel does not call bpf LSM programs
        assert "bpf LSM" in out["why"], out


def test_tampered_lsm_object_is_refused_even_where_lsm_does_not_load(driver, python, tmp_path):
    shipped = Path(python).parent.parent / "lib" / "python3.14t" / "site-packages" / "pyisolate" / "bpf-objects"
    tampered = tmp_path / "objects"
    tampered.mkdir()
    for f in shipped.iterdir():
        (tampered / f.name).write_bytes(f.read_bytes())
    data = bytearray((tampered / "lsm.bpf.o").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tampered / "lsm.bpf.o").write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    out = driver(
        f"""
        bpf.OBJECTS = Path({str(tampered)!r})  # guard.bpf.o intact there, lsm.bpf.o one bit off
        try:
            with Supervisor(pool=0) as sup:
                sup.spawn("never", "compute-only")
        except bpf.BpfIntegrityError as exc:
            spawn = {{"name": exc.name, "actual": exc.actual, "message": str(exc)}}
        else:
            spawn = None
        print(json.dumps({{"spawn": spawn}}))
        """
    )
    assert out["spawn"] is not None, "a supervisor started a cell with a tampered lsm.bpf.o"
    assert out["spawn"]["name"] == "lsm.bpf.o" and out["spawn"]["actual"] == actual, out


def test_path_rules_come_from_the_resolved_policy(tmp_path):
    """What lsm.mark_sandbox puts into fs_rules: (dev, ino) of each root, read for the
    stdlib, fs_read and the dynamic loader's files; read+write+unlink for fs_write;
    roots that do not exist are listed, not guessed."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    pol = policy_mod.loads(
        f"""
[policy]
name = "rules"
description = "x"
[filesystem]
read = ["{tmp_path}/in", "{tmp_path}/absent"]
write = ["{tmp_path}/out"]
[network]
connect = ["127.0.0.1:80", "*:443"]
""",
        "rules",
    ).resolve(stdlib=os.path.dirname(os.__file__))
    fs, net, missing = lsm.policy_rules(pol, os.path.dirname(os.__file__))

    def key(p):
        st = os.stat(p)
        return (st.st_dev, st.st_ino)

    assert fs[key(tmp_path / "in")] == lsm.FS_READ
    assert fs[key(tmp_path / "out")] == lsm.FS_READ | lsm.FS_WRITE | lsm.FS_UNLINK
    assert fs[key(os.path.dirname(os.__file__))] == lsm.FS_READ
    assert missing == [f"{tmp_path}/absent"]
    assert sorted(net) == sorted([(2, bytes([127, 0, 0, 1]), 80), (0, b"", 443)])
