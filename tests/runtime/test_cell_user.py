"""Cells run as a dedicated unprivileged uid when the supervisor is root (celluser.py), and
say so truthfully when they cannot."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import need
from pyisolate import Supervisor, celluser
from pyisolate import policy as policy_mod


def _copy_dist(dist: Path, mode: int) -> Path:
    """The distribution under a fresh directory of `mode` (hard links: a second or so)."""
    home = Path(tempfile.mkdtemp(prefix="pyisolate-celluser-", dir="/var/tmp"))
    os.chmod(home, mode)
    if subprocess.run(["cp", "-al", str(dist), str(home / "prefix")]).returncode != 0:
        shutil.rmtree(home / "prefix", ignore_errors=True)
        subprocess.run(["cp", "-a", str(dist), str(home / "prefix")], check=True)
    return home


@pytest.fixture(scope="module")
def shared_python(dist):
    need(os.geteuid() == 0, "starting a cell as another uid needs root")
    home = _copy_dist(dist, 0o755)
    yield home / "prefix" / "bin" / "python3.14t"
    shutil.rmtree(home)


def _uids(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(v) for v in line.split()[1:]]
    raise AssertionError("no Uid line")


def test_cells_run_as_dedicated_unprivileged_uids(shared_python, tmp_path):
    secret_dir = Path(tempfile.mkdtemp(prefix="pyisolate-secret-", dir="/var/tmp"))
    os.chmod(secret_dir, 0o755)
    (secret_dir / "root-only").write_text("secret")
    os.chmod(secret_dir / "root-only", 0o600)
    policy = policy_mod.loads(
        f"""
[policy]
name = "celluser"
[filesystem]
read = ["{{tmp}}", "{secret_dir}"]
write = ["{{tmp}}"]
[modules]
allow = ["*"]
""",
        "<celluser>",
    )
    try:
        with Supervisor(python=str(shared_python), pool=0) as sup:
            a = sup.spawn("a", policy, tenant="one")
            b = sup.spawn("b", "stdlib-readonly", tenant="two")
            for sb in (a, b):
                uid = sb.cell.user.uid
                assert uid is not None and celluser.BASE <= uid < celluser.BASE + celluser.SPAN
                assert _uids(sb.cell.pid) == [uid] * 4  # real, effective, saved, fs: no way back to root
                assert "unprivileged-uid" in sb.cell.guards.attached
                assert f"Uid {uid} {uid} {uid} {uid}" in sb.cell.guards.details["unprivileged-uid"]
            assert a.cell.user.uid != b.cell.user.uid  # tenants never share a user
            assert b.call("math.factorial", 6) == 720

            # Its private {tmp} is its own: it writes there, as its uid.
            a.exec(
                "import io, os, tempfile\n"
                "p = os.path.join(tempfile.gettempdir(), 'out')\n"
                "with io.open(p, 'w') as f:\n"
                "    f.write('hi')\n"
                "post(os.stat(p).st_uid)"
            )
            assert a.recv(timeout=10) == a.cell.user.uid
            # Root's file stays closed even where the policy opens the directory: the
            # kernel's permission check, not the Python layer, refuses it.
            a.exec(
                f"import io\ntry:\n    io.open({str(secret_dir / 'root-only')!r}).read()\n"
                "    post('read')\nexcept PermissionError as e:\n    post([e.errno, str(e)])"
            )
            code, message = a.recv(timeout=10)
            assert code == errno.EACCES and "sandbox:" not in message
    finally:
        shutil.rmtree(secret_dir)


def test_a_cell_that_cannot_switch_says_so(dist):
    """An interpreter other users cannot reach (here: under a 0700 directory) keeps the cell
    on root, and the guard report names the path instead of claiming the layer."""
    need(os.geteuid() == 0, "the fallback only exists for a root supervisor")
    home = _copy_dist(dist, 0o700)
    try:
        python = home / "prefix" / "bin" / "python3.14t"
        assert celluser.unreachable_part(str(python)) == f"{home} is not searchable by other users"
        with Supervisor(python=str(python), pool=0) as sup:
            sb = sup.spawn("x", "stdlib-readonly")
            assert _uids(sb.cell.pid) == [0, 0, 0, 0]
            assert "unprivileged-uid" in sb.cell.guards.missing
            assert (
                f"runs as ROOT: a cell uid could not start {python} ({home} is not searchable"
                in (sb.cell.guards.details["unprivileged-uid"])
            )
        with Supervisor(python=str(python), pool=0, cell_user="caller") as sup:
            sb = sup.spawn("y", "stdlib-readonly")
            assert "cell_user='caller'" in sb.cell.guards.details["unprivileged-uid"]
    finally:
        shutil.rmtree(home)


def test_cell_user_setting_is_checked():
    with pytest.raises(ValueError, match="cell_user must be 'auto', 'caller' or a uid"):
        celluser.choose("nobody-in-particular", "/usr/bin/python3")
    with pytest.raises(ValueError, match="is not a uid"):
        celluser.choose(-5, "/usr/bin/python3")


def test_a_cell_inherits_only_the_descriptors_passed_on_purpose(supervisor, tmp_path):
    """An inheritable descriptor the supervisor's process happens to hold (a file here)
    does not reach the cell: only stdio and what the supervisor passes on purpose."""
    leak = tmp_path / "supervisor-private"
    leak.write_text("not for cells")
    fd = os.open(leak, os.O_RDONLY)
    os.set_inheritable(fd, True)
    try:
        sb = supervisor.spawn("fds", "stdlib-readonly")
        targets = {}
        for entry in os.listdir(f"/proc/{sb.cell.pid}/fd"):
            try:
                targets[int(entry)] = os.readlink(f"/proc/{sb.cell.pid}/fd/{entry}")
            except FileNotFoundError:
                pass  # closed while we looked
        assert str(leak) not in targets.values(), targets
        kinds = {t.split(":", 1)[0] if ":" in t else "file" for n, t in targets.items() if n > 2}
        # sockets (control, sandboxes), pipes (fault report, heartbeat), the rule books
        # (memfd, until the guest maps and closes it), anonymous inodes (epoll, pidfd)
        assert kinds <= {"socket", "pipe", "anon_inode", "/memfd", "file"}, targets
        assert not [t for n, t in targets.items() if n > 2 and t.startswith("/") and not t.startswith("/memfd")]
    finally:
        os.close(fd)
