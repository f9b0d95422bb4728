"""System packages and toolchain identity: what the build takes from the host."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .errors import SystemDepsError


def read_package_list(path: Path) -> list[str]:
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


EXTERNAL = "external"  # PYISOLATE_SYSTEM_PACKAGES=external: another system (e.g. Nix) provides them


def installed_versions(packages: list[str]) -> dict[str, str | None]:
    """Map each package to its installed version, or None when it is not installed."""
    if os.environ.get("PYISOLATE_SYSTEM_PACKAGES") == EXTERNAL:
        return {name: EXTERNAL for name in packages}
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status} ${Version}\n", *packages],
        capture_output=True,
        text=True,
    )
    found: dict[str, str | None] = {name: None for name in packages}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "installed":
            found[parts[0].split(":")[0]] = parts[2]
    return found


def ensure_packages(packages: list[str], log=print) -> dict[str, str]:
    """Install whatever is missing (as root, with apt-get); return name → version."""
    if os.environ.get("PYISOLATE_SYSTEM_PACKAGES") == EXTERNAL:
        return installed_versions(packages)
    if shutil.which("dpkg-query") is None:
        raise SystemDepsError("not a Debian-like system: dpkg-query not found; install by hand: " + " ".join(packages))
    versions = installed_versions(packages)
    missing = [name for name, version in versions.items() if version is None]
    if missing:
        if os.geteuid() != 0:
            raise SystemDepsError(
                f"missing system packages: {' '.join(missing)}\n"
                f"  run as root: apt-get install -y --no-install-recommends {' '.join(missing)}"
            )
        log(f"installing system packages: {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        versions = installed_versions(packages)
        still = [name for name, version in versions.items() if version is None]
        if still:
            raise SystemDepsError(f"apt-get did not install: {' '.join(still)}")
    return {name: version for name, version in versions.items() if version}


# Variables of a flavour's `env` that name a tool whose output ends up in the binaries.
TOOL_VARS = ("AR", "RANLIB", "NM", "OBJCOPY", "STRIP", "LD")


def toolchain_identity(cc: str, ldflags: tuple[str, ...] = (), tools: dict[str, str] | None = None) -> dict[str, str]:
    """Versions of the tools whose output ends up in the binaries: the compiler, the
    linker it runs (GNU ld, or the one `-fuse-ld=` picks), libc, and the flavour's extra
    tools (`env` in profiles.toml, e.g. AR=llvm-ar-19)."""

    def first_line(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise SystemDepsError(f"cannot run {cmd[0]}: {exc}") from exc
        return out.splitlines()[0].strip() if out else ""

    fuse_ld = [flag for flag in ldflags if flag.startswith("-fuse-ld=")]
    identity = {
        "cc": first_line([cc, "--version"]),
        "ld": first_line([cc, *fuse_ld[-1:], "-Wl,--version"] if fuse_ld else ["ld", "--version"]),
        "libc": first_line(["ldd", "--version"]),
        "machine": first_line([cc, "-dumpmachine"]),
    }
    for name, command in sorted((tools or {}).items()):
        if name in TOOL_VARS:
            identity[f"tool:{name}"] = first_line([command, "--version"])
    return identity
