"""pyisolate: the administration command.

pyisolate policy check FILE|NAME   validate a policy and explain what it grants
pyisolate policy list              the shipped policy templates
pyisolate policy reload FILE --socket PATH [--running strict|best-effort|new-only]
                                   publish a new version to a running supervisor
pyisolate doctor [--json]          each security guarantee and what provides it on this host
pyisolate verify TARBALL [--key K] check a release's sums, signatures, provenance and eBPF manifest
"""

from __future__ import annotations

import argparse
import sys

from . import policy as policy_mod
from . import verify
from .errors import PolicyError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyisolate", description="PyIsolate administration.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_policy = sub.add_parser("policy", help="work with sandbox policies")
    policy_sub = p_policy.add_subparsers(dest="action", required=True)
    p_check = policy_sub.add_parser(
        "check",
        help="validate a policy file (or template name) and explain it",
        description=policy_mod.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p_check.add_argument("policy", help="a policy file, or a template name (see `pyisolate policy list`)")
    policy_sub.add_parser("list", help="list the shipped policy templates")
    p_reload = policy_sub.add_parser(
        "reload",
        help="publish a new version of a policy to a running supervisor (its owner only)",
        description="Send FILE to the supervisor listening on --socket (Supervisor.serve_control). It "
        "validates the policy completely before anything changes; running sandboxes switch at their next "
        "check as far as their kernel guards allow (docs/reload.md).",
    )
    p_reload.add_argument("policy", help="the policy file (its [policy] name says which policy it replaces)")
    p_reload.add_argument("--socket", required=True, help="the supervisor's control socket")
    p_reload.add_argument(
        "--running",
        choices=("strict", "best-effort", "new-only"),
        default="strict",
        help="what running sandboxes get (default strict: all of it, or nothing changes)",
    )
    p_doctor = sub.add_parser(
        "doctor",
        help="each guarantee of the security contract, and what provides it on this host",
        description="Probe this host's kernel (Landlock ABI, seccomp, BPF-LSM, cgroups) and print each "
        "guarantee of PyIsolate's security contract with the mechanism that provides it here, or why it "
        "is missing.",
    )
    p_doctor.add_argument("--json", action="store_true", help="machine-readable output")
    p_verify = sub.add_parser(
        "verify",
        help="check a release tarball (sums, cosign signatures, provenance, eBPF manifest) before installing it",
        description=verify.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_arguments(p_verify)
    args = parser.parse_args(argv)

    if args.command == "verify":
        return verify.run(args)

    if args.command == "doctor":
        import json

        from . import doctor

        data = doctor.report()
        if args.json:
            print(json.dumps(data, indent=1))
        else:
            doctor.render(data)
        return 0

    if args.command == "policy" and args.action == "list":
        for path in sorted(policy_mod.TEMPLATES.glob("*.toml")):
            pol = policy_mod.load(path)
            print(f"{pol.name:18} {pol.description}")
        return 0
    if args.command == "policy" and args.action == "reload":
        from . import control
        from .errors import PyIsolateError

        try:
            reply = control.reload(args.socket, args.policy, args.running)
        except OSError as exc:
            print(f"cannot read {args.policy}: {exc.strerror}", file=sys.stderr)
            return 1
        except PyIsolateError as exc:
            print(f"reload refused: {exc}", file=sys.stderr)
            return 1
        print(reply["text"])
        return 0
    if args.command == "policy" and args.action == "check":
        try:
            pol = policy_mod.load(args.policy)
        except PolicyError as exc:
            print(f"invalid policy: {exc}", file=sys.stderr)
            return 1
        print("valid")
        print(pol.explain())
        return 0
    parser.error("unknown command")
    return 2


if __name__ == "__main__":
    sys.exit(main())
