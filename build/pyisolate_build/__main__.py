"""python -m pyisolate_build COMMAND — the distribution build driver.

dist  [--flavour NAME] [--jobs N]   build (or reuse) the prefix; link out/dist/current
audit [PREFIX] [--flavour NAME]     ELF hardening audit of a prefix (default out/dist/current)
deps                                install the system packages the build needs (root)
key   [--flavour NAME]              print the cache key and the inputs it hashes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console

from . import cpython, dist, profiles, system
from .errors import BuildError, StepError
from .progress import Reporter

REPO = cpython.Repo(Path(__file__).resolve().parents[2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyisolate_build", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_dist = sub.add_parser("dist", help="build the distribution prefix")
    p_dist.add_argument("--flavour", default="hardened")
    p_dist.add_argument("--jobs", type=int, default=None)
    p_audit = sub.add_parser("audit", help="ELF hardening audit of a prefix")
    p_audit.add_argument("prefix", nargs="?", type=Path, default=REPO.out / "dist" / "current")
    p_audit.add_argument("--flavour", default="hardened")
    sub.add_parser("deps", help="install missing system packages")
    p_key = sub.add_parser("key", help="print the cache key of a flavour")
    p_key.add_argument("--flavour", default="hardened")
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
                f"{prefix}\n  linked from {REPO.out / 'dist' / 'current'}"
            )
        elif args.command == "audit":
            if not (args.prefix / "bin").is_dir():
                raise BuildError(f"{args.prefix}: not an install prefix (no bin/); run `nox -s dist` first")
            policy = profiles.load(REPO.profiles)[args.flavour].audit
            dist.step_audit(args.prefix.resolve(), policy, REPO.out / "logs", reporter)
        elif args.command == "deps":
            system.ensure_packages(system.read_package_list(REPO.packages), log=reporter.info)
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
