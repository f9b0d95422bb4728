"""archives.extract: the "data" filter where tarfile has it, the same refusals by hand
where it does not (Debian bookworm's Python 3.11.2, which the Docker builder runs)."""

import io
import stat
import tarfile

import pytest

from pyisolate_build import archives
from pyisolate_build.errors import BuildError


def make_tar(path, *members):
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def entry(name, kind=tarfile.REGTYPE, mode=0o644, data=b"", linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.uid, info.gid = kind, mode, linkname, 1234, 1234
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (data if kind == tarfile.REGTYPE else None)


def good(path):
    return make_tar(
        path,
        entry("src", tarfile.DIRTYPE, 0o755),
        entry("src/configure", mode=0o4777, data=b"#!/bin/sh\n"),
        entry("src/README", mode=0o000, data=b"hello\n"),
        entry("src/link", tarfile.SYMTYPE, linkname="README"),
    )


@pytest.fixture(params=["filter", "by-hand"])
def mode(request, monkeypatch):
    if request.param == "by-hand":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return request.param


def test_extracts_with_cleaned_modes(tmp_path, mode):
    with tarfile.open(good(tmp_path / "a.tar")) as tar:
        archives.extract(tar, tmp_path / "out")
    tree = tmp_path / "out" / "src"
    assert stat.S_IMODE((tree / "configure").stat().st_mode) == 0o755  # no setuid, no group/other write
    assert stat.S_IMODE((tree / "README").stat().st_mode) == 0o600
    assert (tree / "link").read_text() == "hello\n"
    assert (tree / "README").stat().st_uid != 1234


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (entry("../escape", data=b"x"), "outside"),
        (entry("/etc/absolute", data=b"x"), "outside"),
        (entry("src/out", tarfile.SYMTYPE, linkname="../../outside"), "leaves"),
        (entry("src/abs", tarfile.SYMTYPE, linkname="/etc/passwd"), "leaves"),
        (entry("src/hard", tarfile.LNKTYPE, linkname="../outside"), "leaves"),
        (entry("src/dev", tarfile.CHRTYPE), "device or FIFO"),
        (entry("src/fifo", tarfile.FIFOTYPE), "device or FIFO"),
    ],
    ids=["dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out", "device", "fifo"],
)
def test_refuses_by_hand_what_the_filter_refuses(tmp_path, monkeypatch, member, reason):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    path = make_tar(tmp_path / "bad.tar", entry("src", tarfile.DIRTYPE, 0o755), member)
    with tarfile.open(path) as tar, pytest.raises(BuildError, match=reason):
        archives.extract(tar, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))
