"""Release artefacts: the packer is deterministic, and `pyisolate verify` refuses every
tampered artefact (real cosign, real throwaway keys, real tarballs)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import ROOT
from pyisolate_build import cache, release

EPOCH = 1_790_000_000
VERIFY = ROOT / "src" / "pyisolate" / "verify.py"


def make_tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "lib" / "python3.14t" / "test").mkdir(parents=True)
    (root / "bpf").mkdir()
    (root / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (root / "bin" / "tool").chmod(0o775)
    os.link(root / "bin" / "tool", root / "bin" / "tool-again")
    (root / "bin" / "alias").symlink_to("tool")
    (root / "lib" / "pkg" / "mod.py").write_text("VALUE = 1\n")
    source_mtime = int((root / "lib" / "pkg" / "mod.py").stat().st_mtime)
    header = (
        b"\x00\x00\x0d\x0a"
        + (0).to_bytes(4, "little")
        + source_mtime.to_bytes(4, "little")
        + (10).to_bytes(4, "little")
    )
    (root / "lib" / "pkg" / "__pycache__" / "mod.cpython-314.pyc").write_bytes(header + b"code")
    (root / "lib" / "python3.14t" / "test" / "big.py").write_text("excluded\n")
    (root / "bpf" / "guard.bpf.o").write_bytes(b"\x7fELF fake object")
    digest = hashlib.sha256(b"\x7fELF fake object").hexdigest()
    (root / "bpf" / "manifest.lock").write_text(f'# objects\n[objects."guard.bpf.o"]\nsha256 = "{digest}"\nsize = 16\n')
    return root


def test_pack_is_deterministic_across_paths_times_and_modes(tmp_path):
    a = make_tree(tmp_path / "a")
    first = release.pack(a, tmp_path / "one.tar.xz", "top", EPOCH)
    time.sleep(1.1)
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b, symlinks=True)  # new mtimes, new inodes, new path
    (b / "bin" / "tool-again").unlink()
    os.link(b / "bin" / "tool", b / "bin" / "tool-again")
    (b / "lib" / "pkg" / "mod.py").chmod(0o664)  # a different umask at build time
    second = release.pack(b, tmp_path / "two.tar.xz", "top", EPOCH)
    assert first.read_bytes() == second.read_bytes()


def test_pack_ignores_file_times_before_the_epoch(tmp_path):
    """A prefix reused from the build cache can be older than the commit: its times must
    not reach the tarball (clamping alone would keep them)."""
    a = make_tree(tmp_path / "a")
    first = release.pack(a, tmp_path / "one.tar.xz", "top", EPOCH)
    for path in (a / "bin" / "tool", a / "lib" / "pkg" / "mod.py", a / "lib" / "pkg" / "__pycache__"):
        os.utime(path, (EPOCH - 86400, EPOCH - 86400))
    second = release.pack(a, tmp_path / "two.tar.xz", "top", EPOCH)
    assert first.read_bytes() == second.read_bytes()


def test_pack_normalises_members(tmp_path):
    tree = make_tree(tmp_path / "t")
    tarball = release.pack(tree, tmp_path / "t.tar.xz", "top", EPOCH)
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
        assert not any(m.pax_headers for m in members)
        names = [m.name for m in members]
        assert names == sorted(names, key=str.encode)
        assert "top/lib/python3.14t/test/big.py" not in names
        by_name = {m.name: m for m in members}
        for m in members:
            assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
            assert m.mtime == EPOCH
        assert by_name["top/bin/tool"].mode == 0o755
        assert by_name["top/lib/pkg/mod.py"].mode == 0o644
        assert by_name["top/bin/alias"].issym() and by_name["top/bin/alias"].linkname == "tool"
        assert by_name["top/bin/tool-again"].islnk() and by_name["top/bin/tool-again"].linkname == "top/bin/tool"
        pyc = tar.extractfile("top/lib/pkg/__pycache__/mod.cpython-314.pyc").read()
        assert int.from_bytes(pyc[8:12], "little") == by_name["top/lib/pkg/mod.py"].mtime


@pytest.fixture(scope="module")
def cosign():
    return release.Cosign.ensure(ROOT / "build" / "sources.lock", cache.root())


@pytest.fixture(scope="module")
def keys(cosign, tmp_path_factory):
    return cosign.generate_key_pair(tmp_path_factory.mktemp("keys"), "throwaway")


def make_release(tmp_path, cosign, keys, tree=None, name="pyisolate-test"):
    tree = tree or make_tree(tmp_path / f"tree-{name}")
    predicate = {
        "buildDefinition": {"buildType": "test", "externalParameters": {}},
        "runDetails": {"builder": {"id": "t"}},
    }
    return release.make(
        tree,
        tmp_path / f"release-{name}",
        name=name,
        epoch=EPOCH,
        cosign=cosign,
        key=keys[0],
        public_key=keys[1],
        password="throwaway",
        predicate=predicate,
    )


def verify(made, cosign, key=None):
    proc = subprocess.run(
        [
            sys.executable,
            str(VERIFY),
            str(made.tarball),
            "--cosign",
            str(cosign.binary),
            *(["--key", str(key)] if key else []),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_signed_release_verifies(tmp_path, cosign, keys):
    made = make_release(tmp_path, cosign, keys)
    code, out = verify(made, cosign)
    assert code == 0, out
    assert "1 eBPF object(s) match bpf/manifest.lock" in out and "verified:" in out
    assert sorted(p.name for p in made.tarball.parent.iterdir()) == sorted(
        [
            made.tarball.name,
            "SHA256SUMS",
            "SHA256SUMS.sigstore.json",
            f"{made.tarball.name}.sigstore.json",
            f"{made.tarball.name}.intoto.sigstore.json",
            made.provenance.name,
            "cosign.pub",
            "pyisolate-verify",
        ]
    )


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_tampered_tarball(tmp_path, cosign, keys):
    made = make_release(tmp_path, cosign, keys)
    flip_byte(made.tarball, len(made.tarball.read_bytes()) // 2)
    code, out = verify(made, cosign)
    assert code == 1 and "REFUSED" in out and "SHA256SUMS says" in out


def test_tarball_replaced_and_sums_rewritten(tmp_path, cosign, keys):
    made = make_release(tmp_path, cosign, keys)
    flip_byte(made.tarball, 100)
    digest = hashlib.sha256(made.tarball.read_bytes()).hexdigest()
    made.sums.write_text(f"{digest}  {made.tarball.name}\n")
    code, out = verify(made, cosign)
    assert code == 1 and "REFUSED: SHA256SUMS: signature does not verify" in out


def test_swapped_tarball_bundle(tmp_path, cosign, keys):
    made = make_release(tmp_path, cosign, keys)
    shutil.copy(made.sums.with_name("SHA256SUMS.sigstore.json"), made.bundles[0])
    code, out = verify(made, cosign)
    assert code == 1 and f"REFUSED: {made.tarball.name}: signature does not verify" in out


def test_provenance_of_another_tarball(tmp_path, cosign, keys):
    made = make_release(tmp_path, cosign, keys)
    other_tree = make_tree(tmp_path / "other")
    (other_tree / "bin" / "extra").write_text("different\n")
    other = make_release(tmp_path, cosign, keys, tree=other_tree, name="pyisolate-test-other")
    shutil.copy(other.bundles[2], made.bundles[2])
    code, out = verify(made, cosign)
    assert code == 1 and "REFUSED: provenance attestation" in out


def test_wrong_public_key(tmp_path, cosign, keys):
    made = make_release(tmp_path, cosign, keys)
    _, other_pub = cosign.generate_key_pair(tmp_path / "other-keys", "x")
    code, out = verify(made, cosign, key=other_pub)
    assert code == 1 and "signature does not verify" in out


def test_bpf_object_not_matching_manifest(tmp_path, cosign, keys):
    tree = make_tree(tmp_path / "bpf-tree")
    (tree / "bpf" / "guard.bpf.o").write_bytes(b"\x7fELF swapped object")  # signed, but not what the lock says
    made = make_release(tmp_path, cosign, keys, tree=tree, name="pyisolate-bpf")
    code, out = verify(made, cosign)
    assert code == 1 and "REFUSED: bpf/guard.bpf.o: SHA-256 does not match bpf/manifest.lock" in out


def test_bpf_object_no_manifest_lists(tmp_path, cosign, keys):
    tree = make_tree(tmp_path / "stray-tree")
    (tree / "lib" / "extra.bpf.o").write_bytes(b"\x7fELF unlisted")  # signed, but in no manifest
    made = make_release(tmp_path, cosign, keys, tree=tree, name="pyisolate-stray")
    code, out = verify(made, cosign)
    assert code == 1 and "REFUSED: eBPF object(s) without a manifest entry: lib/extra.bpf.o" in out


def test_malformed_bpf_manifest(tmp_path, cosign, keys):
    tree = make_tree(tmp_path / "bad-manifest")
    (tree / "bpf" / "manifest.lock").write_text('[objects."guard.bpf.o"]\nsha256 = "not-a-digest"\n')
    made = make_release(tmp_path, cosign, keys, tree=tree, name="pyisolate-badmanifest")
    code, out = verify(made, cosign)
    assert code == 1 and "REFUSED: bpf/manifest.lock line 2: malformed sha256 'not-a-digest'" in out


def test_missing_artefact(tmp_path, cosign, keys):
    made = make_release(tmp_path, cosign, keys)
    made.bundles[2].unlink()
    code, out = verify(made, cosign)
    assert code == 1 and "REFUSED: missing" in out


def test_release_of_the_built_distribution(dist, tmp_path, cosign):
    """`release --ephemeral-key` on the real build, verified, unpacked and run elsewhere."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "build"))
    proc = subprocess.run(
        [sys.executable, "-m", "pyisolate_build", "release", "--ephemeral-key"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    tarball = next((ROOT / "out" / "release").glob("pyisolate-*-x86_64-linux-gnu.tar.xz"))
    check = subprocess.run(
        [
            sys.executable,
            str(ROOT / "out" / "release" / "pyisolate-verify"),
            str(tarball),
            "--cosign",
            str(cosign.binary),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    # The runtime ships its eBPF objects with their manifest; every one is checked.
    assert "eBPF object(s) match lib/python3.14t/site-packages/pyisolate/bpf-objects/manifest.lock" in check.stdout
    provenance = json.loads(next((ROOT / "out" / "release").glob("*.provenance.json")).read_text())
    deps = {d["name"]: d["digest"] for d in provenance["buildDefinition"]["resolvedDependencies"]}
    assert deps["cpython"] == {"sha256": "3b48dac8fb59f62eaa67ac83c1eb12bda1b7a08406dd286e252c11a66be27f81"}
    assert any(name.startswith("cpython-patches/") for name in deps)
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path, filter="tar")
    top = tmp_path / tarball.name.removesuffix(".tar.xz")
    run = subprocess.run(
        [str(top / "bin" / "pyisolate-python"), "-c", "import sys; print(sys.prefix)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(top)
    for shipped in ("SECURITY.md", ".well-known/security.txt"):
        assert (top / shipped).read_bytes() == (ROOT / shipped).read_bytes()
    # The released CLI verifies its own release, and refuses a tampered copy of it.
    cli = [str(top / "bin" / "pyisolate"), "verify", "--cosign", str(cosign.binary)]
    ok = subprocess.run([*cli, str(tarball)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and f"verified: {tarball.name}" in ok.stdout, ok.stdout + ok.stderr
    tampered = tmp_path / "tampered"
    shutil.copytree(ROOT / "out" / "release", tampered)
    flip_byte(tampered / tarball.name, tarball.stat().st_size // 3)
    bad = subprocess.run([*cli, str(tampered / tarball.name)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "REFUSED" in bad.stderr and "SHA256SUMS says" in bad.stderr, bad.stderr


def test_security_txt_follows_rfc9116():
    import datetime

    fields = {}
    for line in (ROOT / ".well-known" / "security.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(": ")
            fields.setdefault(key, []).append(value)
    assert fields["Contact"] and all(v.startswith(("mailto:", "https://")) for v in fields["Contact"])
    assert len(fields["Expires"]) == 1
    expires = datetime.datetime.fromisoformat(fields["Expires"][0].replace("Z", "+00:00"))
    now = datetime.datetime.now(datetime.UTC)
    assert now < expires < now + datetime.timedelta(days=400)  # RFC 9116: less than a year ahead is advised


def test_release_ships_security_policy_and_contact(tmp_path, cosign, keys):
    made = make_release(tmp_path, cosign, keys)
    with tarfile.open(made.tarball) as tar:
        by_name = {m.name: m for m in tar.getmembers()}
        for shipped in ("SECURITY.md", ".well-known/security.txt"):
            member = by_name[f"pyisolate-test/{shipped}"]
            assert member.isreg() and member.mode == 0o644 and member.mtime == EPOCH
            assert tar.extractfile(member).read() == (ROOT / shipped).read_bytes()
        assert by_name["pyisolate-test/.well-known"].isdir()


def test_pack_refuses_an_extra_file_the_prefix_has(tmp_path):
    tree = make_tree(tmp_path / "t")
    with pytest.raises(release.BuildError, match="the prefix has it too"):
        release.pack(tree, tmp_path / "t.tar.xz", "top", EPOCH, extra={"bin/tool": ROOT / "SECURITY.md"})
    with pytest.raises(release.BuildError, match="missing"):
        release.pack(tree, tmp_path / "t.tar.xz", "top", EPOCH, extra={"NOTICE": tmp_path / "absent"})
    assert not (tmp_path / "t.tar.xz").exists()


def _swap_bundle(made, tmp_path, cosign, keys):
    shutil.copy(made.sums.with_name("SHA256SUMS.sigstore.json"), made.bundles[0])


def _rewrite_sums(made, tmp_path, cosign, keys):
    flip_byte(made.tarball, 100)
    made.sums.write_text(f"{hashlib.sha256(made.tarball.read_bytes()).hexdigest()}  {made.tarball.name}\n")


def _other_key(made, tmp_path, cosign, keys):
    _, other = cosign.generate_key_pair(tmp_path / "other-keys", "x")
    shutil.copy(other, made.public_key)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda made, *_: flip_byte(made.tarball, made.tarball.stat().st_size // 2), "SHA256SUMS says"),
        (_rewrite_sums, "SHA256SUMS: signature does not verify"),
        (_swap_bundle, "pyisolate-test.tar.xz: signature does not verify"),
        (_other_key, "SHA256SUMS: signature does not verify"),
        (lambda made, *_: made.bundles[2].unlink(), "missing"),
    ],
    ids=["tarball-byte", "sums-rewritten", "bundle-swapped", "key-replaced", "attestation-missing"],
)
def test_pyisolate_verify_subcommand(dist, tmp_path, cosign, keys, tamper, reason):
    """`pyisolate verify` of the built distribution: a signed release passes, each
    tampered copy is refused with the reason, exit status 1."""
    made = make_release(tmp_path, cosign, keys)
    cli = [str(dist / "bin" / "pyisolate"), "verify", str(made.tarball), "--cosign", str(cosign.binary)]
    ok = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "verified: pyisolate-test.tar.xz" in ok.stdout, ok.stdout + ok.stderr
    tamper(made, tmp_path, cosign, keys)
    bad = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert bad.stderr.startswith("REFUSED: ") and reason in bad.stderr, bad.stderr


def test_pyisolate_verify_without_cosign(dist, tmp_path, cosign, keys):
    made = make_release(tmp_path, cosign, keys)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no $COSIGN, none on PATH
    assert shutil.which("cosign", path=env["PATH"]) is None
    proc = subprocess.run(
        [str(dist / "bin" / "pyisolate"), "verify", str(made.tarball)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 1 and "REFUSED: no cosign binary: pass --cosign PATH or set $COSIGN" in proc.stderr
