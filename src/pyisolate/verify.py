#!/usr/bin/env python3
"""pyisolate verify: check a PyIsolate release before installing it.

    pyisolate-verify TARBALL [--key cosign.pub] [--cosign PATH]
    pyisolate verify TARBALL [--key cosign.pub] [--cosign PATH]   (the same, installed)

Standard library only, so it runs on any Python ≥ 3.9 before PyIsolate is installed;
needs the `cosign` binary (--cosign, $COSIGN, or on PATH). Beside TARBALL it expects
SHA256SUMS, SHA256SUMS.sigstore.json, TARBALL.sigstore.json and
TARBALL.intoto.sigstore.json (as `nox -s release` writes them). It checks, in order:

  1. the signature on SHA256SUMS, and that SHA256SUMS lists TARBALL with its SHA-256;
  2. the signature on TARBALL;
  3. the SLSA provenance attestation, and that its subject is TARBALL's name and digest;
  4. inside TARBALL, every object listed in bpf/manifest.lock against its SHA-256.

Any mismatch ends with "REFUSED: <reason>" and exit status 1; success prints one line
per check and exit status 0. Signatures are verified offline against the given public
key (no transparency log: these releases are signed with a key, not keylessly).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path


class Refused(Exception):
    pass


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cosign_verify(cosign: str, args: list[str], what: str) -> None:
    proc = subprocess.run([cosign, *args, "--insecure-ignore-tlog=true"], capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no detail"])[-1]
        raise Refused(f"{what}: signature does not verify ({detail})")


def check(tarball: Path, key: Path, cosign: str) -> list[str]:
    folder = tarball.parent
    sums, sums_bundle = folder / "SHA256SUMS", folder / "SHA256SUMS.sigstore.json"
    bundle = folder / f"{tarball.name}.sigstore.json"
    attestation = folder / f"{tarball.name}.intoto.sigstore.json"
    for path in (tarball, key, sums, sums_bundle, bundle, attestation):
        if not path.is_file():
            raise Refused(f"missing {path}")
    done = []

    cosign_verify(cosign, ["verify-blob", "--key", str(key), "--bundle", str(sums_bundle), str(sums)], "SHA256SUMS")
    actual = sha256_file(tarball)
    listed = {}
    for number, line in enumerate(sums.read_text().splitlines(), 1):
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise Refused(f"SHA256SUMS line {number} is malformed")
        listed[name] = digest
    if tarball.name not in listed:
        raise Refused(f"SHA256SUMS does not list {tarball.name}")
    if listed[tarball.name] != actual:
        raise Refused(f"{tarball.name}: SHA-256 is {actual}, SHA256SUMS says {listed[tarball.name]}")
    done.append(f"ok  SHA256SUMS signed, lists {tarball.name} with its digest {actual[:16]}…")

    cosign_verify(cosign, ["verify-blob", "--key", str(key), "--bundle", str(bundle), str(tarball)], tarball.name)
    done.append(f"ok  {tarball.name} signed")

    cosign_verify(
        cosign,
        [
            "verify-blob-attestation",
            "--key",
            str(key),
            "--bundle",
            str(attestation),
            "--type",
            "slsaprovenance1",
            str(tarball),
        ],
        "provenance attestation",
    )
    try:
        envelope = json.loads(attestation.read_text())["dsseEnvelope"]
        statement = json.loads(base64.b64decode(envelope["payload"]))
        subjects = statement["subject"]
    except (KeyError, ValueError, TypeError) as exc:
        raise Refused(f"provenance attestation is malformed: {exc}") from None
    if not any(s.get("name") == tarball.name and s.get("digest", {}).get("sha256") == actual for s in subjects):
        raise Refused(f"provenance subject {subjects!r} is not {tarball.name} with digest {actual}")
    predicate_type = statement.get("predicateType", "")
    done.append(f"ok  provenance ({predicate_type}) attested for this tarball")

    with tarfile.open(tarball) as tar:
        manifests = [m for m in tar.getmembers() if m.isreg() and m.name.endswith("/bpf/manifest.lock")]
        if not manifests:
            done.append("ok  no bpf/manifest.lock in this release (it ships no eBPF objects)")
        for manifest in manifests:
            base = manifest.name.rsplit("/", 1)[0]
            entries = _parse_manifest(tar.extractfile(manifest).read().decode())
            for name, digest in entries.items():
                try:
                    member = tar.getmember(f"{base}/{name}")
                    data = tar.extractfile(member).read()
                except KeyError:
                    raise Refused(f"bpf/manifest.lock lists {name}, which the tarball does not contain") from None
                if hashlib.sha256(data).hexdigest() != digest:
                    raise Refused(f"bpf/{name}: SHA-256 does not match bpf/manifest.lock")
            done.append(f"ok  {len(entries)} eBPF object(s) match bpf/manifest.lock")
    return done


def _parse_manifest(text: str) -> dict[str, str]:
    """bpf/manifest.lock: lines of '<sha256>  <object file name>', '#' comments."""
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            digest, _, name = line.partition("  ")
            if len(digest) != 64 or not name:
                raise Refused(f"bpf/manifest.lock: malformed line {line!r}")
            out[name.strip()] = digest
    return out


def find_cosign(explicit: str | None) -> str:
    for candidate in (explicit, os.environ.get("COSIGN"), shutil.which("cosign")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise Refused("no cosign binary: pass --cosign PATH or set $COSIGN")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line of both `pyisolate-verify` and `pyisolate verify`."""
    parser.add_argument("tarball", type=Path, help="the release tarball (its artefacts beside it)")
    parser.add_argument("--key", type=Path, default=None, help="cosign public key (default: cosign.pub beside it)")
    parser.add_argument("--cosign", default=None, help="path of the cosign binary (default: $COSIGN, then PATH)")


def run(args: argparse.Namespace) -> int:
    """Print each check passed and `verified: NAME` (0), or `REFUSED: reason` (1)."""
    key = args.key or args.tarball.parent / "cosign.pub"
    try:
        for line in check(args.tarball, key, find_cosign(args.cosign)):
            print(line)
    except Refused as exc:
        print(f"REFUSED: {exc}", file=sys.stderr)
        return 1
    print(f"verified: {args.tarball.name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pyisolate-verify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
