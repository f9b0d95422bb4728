"""python -m pyisolate_build COMMAND — the distribution build driver.

dist  [--flavour NAME] [--jobs N]   build (or reuse) the prefix; link out/dist/current
audit [PREFIX] [--flavour NAME]     ELF hardening audit of a prefix (default out/dist/current)
deps                                install the system packages the build needs (root)
bpf   [--update-manifest]           compile bpf/*.bpf.c, check them against bpf/manifest.lock
key   [--flavour NAME]              print the cache key and the inputs it hashes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from . import bpf, cache, cpython, dist, profiles, release, system
from .errors import BuildError, StepError
from .progress import Reporter

REPO = cpython.Repo(Path(__file__).resolve().parents[2])


def make_release(args, reporter: Reporter) -> None:
    prefix = REPO.out / "dist" / args.flavour
    if not (prefix / "bin" / "python3.14t").is_file():
        raise BuildError(
            f"{prefix}: no built {args.flavour} distribution; run `./dev dist -- --flavour {args.flavour}`"
        )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO.root, capture_output=True, text=True
    ).stdout.strip()
    if dirty and not args.ephemeral_key:
        raise BuildError(f"the checkout has uncommitted changes; a release is made from a clean tree:\n{dirty}")
    cosign = release.Cosign.ensure(REPO.lock, cache.root())
    key = args.key or (Path(os.environ["PYISOLATE_COSIGN_KEY"]) if os.environ.get("PYISOLATE_COSIGN_KEY") else None)
    password = os.environ.get("COSIGN_PASSWORD")
    if key is None:
        if not args.ephemeral_key:
            raise BuildError(
                "no signing key: pass --key FILE or set PYISOLATE_COSIGN_KEY (and COSIGN_PASSWORD); "
                "`--ephemeral-key` signs with a throwaway key for trying the flow"
            )
        password = os.urandom(16).hex()
        key, _ = cosign.generate_key_pair(REPO.out / "release-ephemeral-key", password)
        reporter.info(f"[bold yellow]signing with a throwaway key[/] ({key.parent}): not for publishing")
    public = key.with_suffix(".pub")
    if not public.is_file():
        raise BuildError(f"{public}: the public key must sit next to the private key")
    epoch = release.source_date_epoch(REPO.root)
    version = release.version(REPO.root)
    name = f"pyisolate-{version}-{release.TARGET}"
    buildinfo = json.loads(_buildinfo(prefix).read_text())
    predicate = release.provenance(REPO.root, REPO.lock, REPO.patches, buildinfo, args.flavour, version, epoch)
    with reporter.phase("release", name):
        made = release.make(
            prefix,
            REPO.out / "release",
            name=name,
            epoch=epoch,
            cosign=cosign,
            key=key,
            public_key=public,
            password=password,
            predicate=predicate,
        )
    for path in (made.tarball, made.sums, *made.bundles, made.provenance, made.public_key):
        reporter.info(f"{path.relative_to(REPO.root)}  {path.stat().st_size} bytes")
    reporter.info(f"sha256 {release.sha256(made.tarball)}  (SOURCE_DATE_EPOCH={epoch})")


def _buildinfo(prefix: Path) -> Path:
    """The CPython artefact's buildinfo.json, found through the overlay's record."""
    real = prefix.resolve()
    overlay = json.loads((real.parent / "overlay.json").read_text())
    return Path(overlay["base"]).parent / "buildinfo.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyisolate_build", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_dist = sub.add_parser("dist", help="build the distribution prefix")
    p_dist.add_argument("--flavour", default=dist.DEFAULT_FLAVOUR)
    p_dist.add_argument("--jobs", type=int, default=None)
    p_audit = sub.add_parser("audit", help="ELF hardening audit of a prefix")
    p_audit.add_argument("prefix", nargs="?", type=Path, default=REPO.out / "dist" / "current")
    p_audit.add_argument("--flavour", default=dist.DEFAULT_FLAVOUR)
    p_deps = sub.add_parser("deps", help="install missing system packages")
    p_deps.add_argument("--list", type=Path, default=None, help="a package list (default: the build's)")
    p_release = sub.add_parser("release", help="make signed release artefacts from a built flavour")
    p_release.add_argument("--flavour", default=dist.DEFAULT_FLAVOUR)
    p_release.add_argument("--key", type=Path, default=None, help="cosign private key (or $PYISOLATE_COSIGN_KEY)")
    p_release.add_argument(
        "--ephemeral-key",
        action="store_true",
        help="sign with a throwaway key made for this run (for trying the flow, never for publishing)",
    )
    p_bpf = sub.add_parser("bpf", help="compile the BPF objects and check bpf/manifest.lock")
    p_bpf.add_argument("--update-manifest", action="store_true", help="record the objects' hashes in the manifest")
    p_key = sub.add_parser("key", help="print the cache key of a flavour")
    p_key.add_argument("--flavour", default=dist.DEFAULT_FLAVOUR)
    args = parser.parse_args(argv)

    console = Console(stderr=True, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=True, highlight=False, width=150)  # logs: keep table rows whole
    reporter = Reporter(REPO.out / "logs", console)
    try:
        if args.command == "dist":
            start = time.monotonic()
            prefix = dist.build(REPO, args.flavour, reporter, args.jobs)
            console.print(
                f"[bold green]dist ready[/] in {time.monotonic() - start:.1f}s: "
                f"{prefix}\n  linked from {REPO.out / 'dist' / args.flavour}"
                + (f" and {REPO.out / 'dist' / 'current'}" if args.flavour == dist.DEFAULT_FLAVOUR else "")
            )
        elif args.command == "audit":
            if not (args.prefix / "bin").is_dir():
                raise BuildError(f"{args.prefix}: not an install prefix (no bin/); run `nox -s dist` first")
            policy = profiles.load(REPO.profiles)[args.flavour].audit
            dist.step_audit(args.prefix.resolve(), policy, REPO.out / "logs", reporter)
        elif args.command == "deps":
            system.ensure_packages(system.read_package_list(args.list or REPO.packages), log=reporter.info)
        elif args.command == "release":
            make_release(args, reporter)
        elif args.command == "bpf":
            artefact = bpf.build(REPO, reporter, update_manifest=args.update_manifest)
            console.print(f"[bold green]bpf objects match {bpf.manifest_path(REPO)}[/]: {artefact}")
        elif args.command == "key":
            the_plan = cpython.plan(REPO, args.flavour)
            print(
                json.dumps(
                    {"key": the_plan.key, "artefact": the_plan.artefact_name, "inputs": the_plan.inputs()}, indent=1
                )
            )
    except StepError as exc:
        console.print(f"[bold red]error:[/] step '{exc.step}' failed (exit {exc.returncode})")
        console.print(exc.tail, markup=False)
        console.print(f"full log: {exc.log}")
        return 1
    except BuildError as exc:
        console.print("[bold red]error:[/] ", end="")
        console.print(str(exc), markup=False)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
