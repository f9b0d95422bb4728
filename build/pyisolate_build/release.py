"""Release artefacts from a built prefix: a deterministic tarball, SHA256SUMS, cosign
signature bundles and an SLSA v1 provenance attestation.

The tarball is a function of the tree's contents and SOURCE_DATE_EPOCH only: entries
sorted, numeric owner 0, normalised modes, every mtime set to the epoch, GNU format (no
pax atime/ctime records), hard links recorded against the first path in sort order, and
one fixed xz configuration. Timestamp-based .pyc headers are rewritten to the epoch too,
so they stay valid after extraction (and do not carry build times).

Set, not clamped: a prefix reused from the build cache may predate the commit (the cache
is keyed by inputs, not commits), and clamping would keep its build times.
"""

from __future__ import annotations

import io
import json
import lzma
import os
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from . import fetch, lock
from .errors import BuildError

TARGET = "x86_64-linux-gnu"
XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6}]
# Not shipped: CPython's own test suite and GUI tooling (tests run against the build).
EXCLUDE_PREFIXES = (
    "lib/python3.14t/test/",
    "lib/python3.14t/idlelib/",
    "lib/python3.14t/tkinter/",
    "lib/python3.14t/turtledemo/",
)
# Shipped at the top of the tarball (repository path → path in the tarball): the security
# policy and the RFC 9116 contact file, so an unpacked release says how to report a flaw.
SHIPPED_DOCS = {"SECURITY.md": "SECURITY.md", ".well-known/security.txt": ".well-known/security.txt"}
SIGNING_CONFIG = {  # offline, key-based: no Fulcio, no Rekor, no TSA
    "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
    "caUrls": [],
    "oidcUrls": [],
    "rekorTlogUrls": [],
    "tsaUrls": [],
    "rekorTlogConfig": {"selector": "ANY"},
    "tsaConfig": {"selector": "ANY"},
}


def source_date_epoch(repo_root: Path) -> int:
    if env := os.environ.get("SOURCE_DATE_EPOCH"):
        return int(env)
    out = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=repo_root, capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        raise BuildError("SOURCE_DATE_EPOCH is not set and the last commit's time is unavailable")
    return int(out.stdout.strip())


def _normalised_pyc(data: bytes, source_mtime: int) -> bytes:
    """A timestamp .pyc (flags 0) records its source's mtime: make it the one packed."""
    if len(data) >= 16 and int.from_bytes(data[4:8], "little") == 0:
        return data[:8] + (source_mtime & 0xFFFFFFFF).to_bytes(4, "little") + data[12:]
    return data


def _members(prefix: Path, extra: dict[str, Path]) -> list[tuple[str, Path | None]]:
    """(path in the tarball, file) pairs in byte order; None marks a directory that only
    exists to hold an extra file."""
    out: dict[str, Path | None] = {}
    for dirpath, dirnames, filenames in os.walk(prefix):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(prefix).as_posix()
            if any((rel + "/").startswith(x) for x in EXCLUDE_PREFIXES):
                continue
            out[rel] = path
    for rel, path in extra.items():
        if rel in out:
            raise BuildError(f"{rel}: shipped from {path}, but the prefix has it too")
        if not path.is_file():
            raise BuildError(f"{path}: missing (it is shipped in the tarball as {rel})")
        out[rel] = path
        parent = rel.rpartition("/")[0]
        while parent and parent not in out:
            out[parent] = None
            parent = parent.rpartition("/")[0]
    return sorted(out.items(), key=lambda item: item[0].encode())


def pack(prefix: Path, out: Path, top: str, epoch: int, extra: dict[str, Path] | None = None) -> Path:
    """Write the deterministic tarball of `prefix` under directory `top`; `extra` maps
    paths in the tarball to files from elsewhere (e.g. the checkout's SECURITY.md)."""
    prefix = prefix.resolve()
    extra = extra or {}
    members = _members(prefix, extra)
    tmp = out.with_name(f".{out.name}.partial")
    first_of_inode: dict[tuple[int, int], str] = {}
    with (
        open(tmp, "wb") as raw,
        lzma.open(raw, "w", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, filters=XZ_FILTERS) as xz,
        tarfile.open(fileobj=xz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        tar.addfile(_info(f"{top}", tarfile.DIRTYPE, 0o755, epoch))
        for rel, path in members:
            name = f"{top}/{rel}"
            if path is None:
                tar.addfile(_info(name, tarfile.DIRTYPE, 0o755, epoch))
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                info = _info(name, tarfile.SYMTYPE, 0o777, epoch)
                info.linkname = os.readlink(path)
                tar.addfile(info)
            elif stat.S_ISDIR(st.st_mode):
                tar.addfile(_info(name, tarfile.DIRTYPE, 0o755, epoch))
            elif stat.S_ISREG(st.st_mode):
                mode = 0o755 if st.st_mode & 0o111 else 0o644
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in first_of_inode:
                    info = _info(name, tarfile.LNKTYPE, mode, epoch)
                    info.linkname = first_of_inode[key]
                    tar.addfile(info)
                    continue
                first_of_inode[key] = name
                data = path.read_bytes()
                if rel.endswith(".pyc") and "/__pycache__/" in f"/{rel}":
                    source = path.parent.parent / (path.name.split(".", 1)[0] + ".py")
                    if source.exists():
                        data = _normalised_pyc(data, epoch)
                info = _info(name, tarfile.REGTYPE, mode, epoch)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                raise BuildError(f"{path}: unsupported file type in the prefix")
    os.replace(tmp, out)
    return out


def _info(name: str, kind: bytes, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def sha256(path: Path) -> str:
    return fetch.sha256_file(path)


@dataclass(frozen=True)
class Cosign:
    """The pinned cosign binary, unpacked from its Debian package into the cache."""

    binary: Path

    @classmethod
    def ensure(cls, lock_path: Path, cache_root: Path) -> Cosign:
        source = lock.load(lock_path)["cosign"]
        deb = fetch.fetch(source, cache_root / "downloads")
        unpacked = cache_root / "tools" / f"cosign-{source.version}-{source.sha256[:12]}"
        binary = unpacked / "usr" / "bin" / "cosign"
        if not binary.is_file():
            tmp = unpacked.with_name(unpacked.name + ".partial")
            subprocess.run(["rm", "-rf", str(tmp)], check=True)
            tmp.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
            os.replace(tmp, unpacked)
        return cls(binary)

    def run(self, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ, COSIGN_PASSWORD=password or os.environ.get("COSIGN_PASSWORD", ""))
        return subprocess.run([str(self.binary), *args], capture_output=True, text=True, env=env)

    def generate_key_pair(self, directory: Path, password: str) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        for old in ("cosign.key", "cosign.pub"):
            (directory / old).unlink(missing_ok=True)
        proc = subprocess.run(
            [str(self.binary), "generate-key-pair"],
            cwd=directory,
            capture_output=True,
            text=True,
            env=dict(os.environ, COSIGN_PASSWORD=password),
        )
        if proc.returncode != 0:
            raise BuildError(f"cosign generate-key-pair failed: {proc.stderr.strip()}")
        return directory / "cosign.key", directory / "cosign.pub"

    def _signing(
        self, verb: str, key: Path, blob: Path, bundle: Path, config: Path, password: str | None, *extra: str
    ) -> None:
        """Run `cosign VERB` offline with the key; output is a bundle beside the blob."""
        proc = self.run(
            verb,
            "--yes",
            "--key",
            str(key),
            "--signing-config",
            str(config),
            *extra,
            "--bundle",
            str(bundle),
            str(blob),
            password=password,
        )
        if proc.returncode != 0:
            raise BuildError(f"cosign {verb} {blob.name} failed: {proc.stderr.strip()}")

    def sign_blob(self, key: Path, blob: Path, bundle: Path, config: Path, password: str | None) -> None:
        self._signing("sign-blob", key, blob, bundle, config, password)

    def attest_blob(
        self, key: Path, blob: Path, predicate: Path, bundle: Path, config: Path, password: str | None
    ) -> None:
        self._signing(
            "attest-blob",
            key,
            blob,
            bundle,
            config,
            password,
            "--predicate",
            str(predicate),
            "--type",
            "slsaprovenance1",
        )


def provenance(
    repo_root: Path, lock_path: Path, patch_dir: Path, buildinfo: dict, flavour: str, version: str, epoch: int
) -> dict:
    """The SLSA v1 provenance predicate for a release."""
    sources = lock.load(lock_path)
    deps = [
        {
            "name": s.name,
            "uri": s.urls[0],
            "digest": {"sha256": s.sha256},
            "annotations": {"version": s.version, "mirrors": list(s.urls[1:])},
        }
        for s in sources.values()
    ]
    for patch in sorted(patch_dir.glob("*.patch")):
        deps.append({"name": f"cpython-patches/{patch.name}", "digest": {"sha256": sha256(patch)}})
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root, capture_output=True, text=True).stdout.strip()
    deps.append({"name": "pyisolate", "uri": "git+file://pyisolate", "digest": {"gitCommit": commit}})
    return {
        "buildDefinition": {
            "buildType": "https://pyisolate.dev/build/dist/v1",
            "externalParameters": {"flavour": flavour, "version": version, "target": TARGET},
            "internalParameters": {"buildinfo": buildinfo, "sourceDateEpoch": epoch},
            "resolvedDependencies": deps,
        },
        "runDetails": {
            "builder": {"id": "https://pyisolate.dev/builders/local-nox"},
            "metadata": {"invocationId": f"{commit}-{flavour}"},
        },
    }


def write_sums(paths: list[Path], out: Path) -> Path:
    out.write_text("".join(f"{sha256(p)}  {p.name}\n" for p in sorted(paths)))
    return out


def signing_config(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "signing-config.json"
    path.write_text(json.dumps(SIGNING_CONFIG, indent=1) + "\n")
    return path


@dataclass(frozen=True)
class Artefacts:
    tarball: Path
    sums: Path
    bundles: tuple[Path, ...]
    provenance: Path
    public_key: Path


def version(repo_root: Path) -> str:
    text = (repo_root / "src" / "pyisolate" / "__init__.py").read_text()
    for line in text.splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise BuildError("src/pyisolate/__init__.py has no __version__")


def make(
    prefix: Path,
    out_dir: Path,
    *,
    name: str,
    epoch: int,
    cosign: Cosign,
    key: Path,
    public_key: Path,
    password: str | None,
    predicate: dict,
) -> Artefacts:
    """Pack, sum, sign and attest. Everything lands in `out_dir`; a failure leaves the
    previous contents of `out_dir` as they were (work happens in a staging folder)."""
    staging = out_dir.with_name(out_dir.name + ".staging")
    subprocess.run(["rm", "-rf", str(staging)], check=True)
    staging.mkdir(parents=True)
    repo_root = Path(__file__).resolve().parents[2]
    docs = {inside: repo_root / source for source, inside in SHIPPED_DOCS.items()}
    tarball = pack(prefix, staging / f"{name}.tar.xz", name, epoch, extra=docs)
    config = signing_config(staging.parent / f".{staging.name}-signing")
    prov = staging / f"{name}.provenance.json"
    prov.write_text(json.dumps(predicate, indent=1, sort_keys=True) + "\n")
    cosign.sign_blob(key, tarball, staging / f"{tarball.name}.sigstore.json", config, password)
    cosign.attest_blob(key, tarball, prov, staging / f"{tarball.name}.intoto.sigstore.json", config, password)
    sums = write_sums([tarball], staging / "SHA256SUMS")
    cosign.sign_blob(key, sums, staging / "SHA256SUMS.sigstore.json", config, password)
    (staging / "cosign.pub").write_bytes(public_key.read_bytes())
    verifier = repo_root / "src" / "pyisolate" / "verify.py"
    (staging / "pyisolate-verify").write_bytes(verifier.read_bytes())
    (staging / "pyisolate-verify").chmod(0o755)
    subprocess.run(["rm", "-rf", str(out_dir), str(config.parent)], check=True)
    os.replace(staging, out_dir)
    return Artefacts(
        tarball=out_dir / tarball.name,
        sums=out_dir / "SHA256SUMS",
        bundles=(
            out_dir / f"{tarball.name}.sigstore.json",
            out_dir / "SHA256SUMS.sigstore.json",
            out_dir / f"{tarball.name}.intoto.sigstore.json",
        ),
        provenance=out_dir / prov.name,
        public_key=out_dir / "cosign.pub",
    )
