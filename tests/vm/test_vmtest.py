"""The BPF-LSM programs in one QEMU guest, from the test suite.

The whole VM test (both kernels, the distribution in the guests, the negative control
without `bpf` in lsm=) is `./dev vmtest`; this runs its newest kernel only, so
`./dev tests` also watches every LSM program refuse a marked task and spare the others.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import need

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "tests" / "vm" / "vmtest.py"


def test_every_lsm_program_refuses_marked_tasks_in_a_guest(tmp_path):
    need(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86_64 (Debian: qemu-system-x86)")
    need(Path("/usr/lib/x86_64-linux-gnu/libbpf.a").is_file(), "libbpf.a for the static guest loader (libbpf-dev)")
    out = tmp_path / "results.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "build"))
    newest = ["--kernel", "6.12", "--no-control", "--no-runtime", "--json", str(out)]
    proc = subprocess.run([sys.executable, str(HARNESS), *newest], env=env, capture_output=True, text=True, timeout=900)
    assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    (boot,) = data["boots"]
    assert "bpf" in boot["active"].split(","), boot["active"]
    names = data["checks"]
    # every program is exercised: a refusal and an event for each hook
    for hook in ("file_open", "inode_unlink", "socket_connect", "bprm_check_security", "ptrace_access_check", "bpf"):
        assert any(n.startswith(f"{hook}.") and n.endswith(".denied") for n in names), hook
        assert f"events.{hook}" in names
    failed = {n: s for n, s in boot["results"].items() if s != "PASS"}
    assert not failed, f"{failed}\n{proc.stdout[-3000:]}"
    assert proc.returncode == 0 and not data["problems"], data["problems"]


def test_a_guest_that_does_not_finish_is_described(tmp_path):
    """A boot cut short (here: a 6-second timeout, while the guest still runs its checks)
    fails and names the kernel functions its vCPUs were in, read through QEMU's monitor:
    what the next person needs when a guest soft-locks under `quiet`."""
    need(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86_64 (Debian: qemu-system-x86)")
    need(Path("/usr/lib/x86_64-linux-gnu/libbpf.a").is_file(), "libbpf.a for the static guest loader (libbpf-dev)")
    out = tmp_path / "results.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "build"))
    cut = ["--kernel", "6.12", "--no-control", "--no-runtime", "--timeout", "6", "--json", str(out)]
    proc = subprocess.run([sys.executable, str(HARNESS), *cut], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    (boot,) = json.loads(out.read_text())["boots"]
    hang = boot["hang"]
    # each vCPU named, in kernel text ("func+0x..") or not ("0x... (outside kernel text)")
    assert re.match(r"sample 0: CPU#0 [^,;]+, CPU#1 [^,;]+; sample 1: .*; sample 2: ", hang), hang
    # at least one vCPU named in the kernel's own symbols (function+offset), not a bare address
    assert re.search(r"CPU#\d [A-Za-z_][\w.]*\+0x[0-9a-f]+", hang), hang
    assert any("did not finish" in p for p in json.loads(out.read_text())["problems"])
