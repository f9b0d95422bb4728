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
  4. inside TARBALL, every eBPF object against the manifest.lock beside it (the
     runtime's pyisolate/bpf-objects/, or a bpf/ folder); an object no manifest lists is
     refused too.

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

    done += _check_bpf_objects(tarball)
    return done


MANIFEST_DIRS = ("bpf", "bpf-objects")  # the checkout's bpf/; the runtime's pyisolate/bpf-objects/


def _check_bpf_objects(tarball: Path) -> list[str]:
    """Every *.bpf.o in the tarball sits beside a manifest.lock that records its SHA-256."""
    done = []
    with tarfile.open(tarball) as tar:
        members = {m.name: m for m in tar.getmembers() if m.isreg()}
        top = tarball.name.removesuffix(".tar.xz") + "/"
        covered = set()
        for path in sorted(members):
            folder, _, leaf = path.rpartition("/")
            if leaf != "manifest.lock" or folder.rpartition("/")[2] not in MANIFEST_DIRS:
                continue
            where = folder.removeprefix(top)
            entries = _parse_manifest(tar.extractfile(members[path]).read().decode(), f"{where}/manifest.lock")
            for name, digest in entries.items():
                member = members.get(f"{folder}/{name}")
                if member is None:
                    raise Refused(f"{where}/manifest.lock lists {name}, which the tarball does not contain")
                if hashlib.sha256(tar.extractfile(member).read()).hexdigest() != digest:
                    raise Refused(f"{where}/{name}: SHA-256 does not match {where}/manifest.lock")
                covered.add(member.name)
            done.append(f"ok  {len(entries)} eBPF object(s) match {where}/manifest.lock")
        stray = sorted(name.removeprefix(top) for name in members if name.endswith(".bpf.o") and name not in covered)
        if stray:
            raise Refused(f"eBPF object(s) without a manifest entry: {', '.join(stray)}")
        if not done:
            done.append("ok  no eBPF objects in this release")
    return done


def _parse_manifest(text: str, where: str) -> dict[str, str]:
    """manifest.lock (TOML): one [objects."NAME.bpf.o"] table per object with its sha256.
    Read line by line (the standard library has no TOML reader before Python 3.11)."""
    out, current = {}, None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[objects.") and line.endswith("]"):
            current = line[len("[objects.") : -1].strip().strip('"')
            out[current] = ""
        elif line.startswith("sha256") and current is not None:
            digest = line.partition("=")[2].strip().strip('"')
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise Refused(f"{where} line {number}: malformed sha256 {digest!r}")
            out[current] = digest
        elif not line.startswith("size") or current is None:
            raise Refused(f"{where} line {number}: unexpected {line!r}")
    missing = [name for name, digest in out.items() if not digest]
    if missing:
        raise Refused(f"{where}: no sha256 for {', '.join(missing)}")
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
