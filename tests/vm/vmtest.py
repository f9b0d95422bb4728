"""The VM test of the BPF-LSM programs (`nox -s vmtest`).

This host refuses every LSM program load, so bpf/lsm.bpf.o is tested in QEMU guests
(TCG) booting Debian's stock kernels. Steps:

  1. the kernels (every `vmtest-linux-*` entry of build/sources.lock) and busybox-static,
     fetched and verified by the driver, unpacked into the cache;
  2. the BPF objects built by the driver's bpf step (so the object tested is the one
     bpf/manifest.lock pins), and tests/vm/lsm_test.c linked statically against its
     skeleton, libbpf.a, libelf.a, libz.a, libzstd.a;
  3. an initramfs: busybox, lsm_test, an /init that mounts what it needs and runs it;
  4. each kernel booted with lsm=landlock,lockdown,yama,bpf: every check `lsm_test
     --list` names must print PASS;
  5. with --runtime, the built distribution too (out/dist/current, without its tests):
     tests/vm/guest_runtime.py makes two sandboxes in one cell, lsm_test marks one
     sandbox's thread, and only that thread is refused (the `runtime.*` checks); then
     tests/vm/guest_full.py runs a Supervisor that loads lsm.bpf.o itself (mode "full"),
     with policy reloads and an A/B reload stress (the `full.*` checks);
  6. the negative control: one kernel booted without `bpf` in lsm=. No check whose name
     ends in `.denied` may pass there (a refusal that survives comes from something else
     than our programs), and the run as a whole must fail.

A boot that does not finish within --timeout fails and says where its vCPUs were: three
register samples from QEMU's monitor, named with the kernel's kallsyms (a second boot of
the same kernel prints them; Debian ships no System.map). A soft lockup under `quiet`
prints only the watchdog's line, so this is what tells a kernel hang apart from ours.

    python tests/vm/vmtest.py [--kernel NAME ...] [--no-control] [--runtime] [--json FILE]
(with PYTHONPATH=build; the nox session sets it). Exit status 0 only when all of it held.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import initramfs
from rich.console import Console
from rich.table import Table

from pyisolate_build import bpf, cache, cpython, fetch, lock
from pyisolate_build.progress import Reporter

ROOT = Path(__file__).resolve().parents[2]
REPO = cpython.Repo(ROOT)
HERE = Path(__file__).resolve().parent
LSM_ON = "landlock,lockdown,yama,bpf"
LSM_OFF = "landlock,lockdown,yama"
KERNEL_PREFIX = "vmtest-linux-"
LINK_LIBS = ("-lbpf", "-lelf", "-lz", "-lzstd", "-lpthread")
LINE = re.compile(r"^VMTEST (\S+) (PASS|FAIL) ?(.*)$")
INFO = re.compile(r"VMTEST-INFO kernel=\S+ lsm=(\S*)")
PERF = re.compile(r"VMTEST-PERF open\+close ns: detached=(-?\d+) attached-unmarked=(-?\d+) marked-allowed=(-?\d+)")
EXIT = re.compile(r"VMTEST-EXIT status=\d+ uptime=([0-9.]+)")

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t securityfs securityfs /sys/kernel/security
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmpfs /tmp
ifconfig lo 127.0.0.1 up
echo "VMTEST-INFO kernel=$(uname -r) lsm=$(cat /sys/kernel/security/lsm) uptime=$(cut -d' ' -f1 /proc/uptime)"
if [ -x /dist/bin/python3 ]; then /lsm_test --runtime; else /lsm_test; fi
status=$?
# mode "full": the runtime's own loader, once lsm_test (and its programs) are gone
if [ -x /dist/bin/python3 ]; then
  (cd /tmp && env -i PATH=/bin HOME=/tmp LANG=C.UTF-8 /dist/bin/python3 -I -B /srv/guest_full.py 2)
fi
echo "VMTEST-EXIT status=$status uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
"""


@dataclass(frozen=True)
class Kernel:
    name: str  # the lock entry's name without the prefix: "6.1", "6.12"
    version: str
    vmlinuz: Path


@dataclass
class Boot:
    label: str
    kernel: Kernel
    lsm: str
    seconds: float
    guest_seconds: float | None
    qemu_status: int | None
    lsm_active: str = ""
    results: dict[str, tuple[str, str]] = field(default_factory=dict)
    open_close_ns: dict[str, int] = field(default_factory=dict)  # measured in the guest, not judged
    log: Path | None = None
    hang: str = ""  # where the vCPUs were when the boot timed out (describe)
    samples: list[list[tuple[int, int]]] = field(default_factory=list)  # vcpu_samples

    def status(self, name: str) -> str:
        return self.results.get(name, ("MISSING", ""))[0]


# ---- inputs -----------------------------------------------------------------------------


def _unpack(deb: Path, dest: Path, members: list[str]) -> None:
    """Extract `members` (tar globs) of a .deb into dest, atomically (temp + rename)."""
    if dest.is_dir():
        return
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(tmp), "--wildcards", *members], stdin=tar.stdout, check=True)
    if tar.wait() != 0:
        raise SystemExit(f"{deb}: dpkg-deb failed")
    os.replace(tmp, dest)


def kernels(sources: dict[str, lock.Source], cache_root: Path, log) -> list[Kernel]:
    found = []
    for name, source in sorted(sources.items()):
        if not name.startswith(KERNEL_PREFIX):
            continue
        deb = fetch.fetch(source, cache_root / "downloads", log)
        dest = cache_root / "tools" / f"{name}-{source.sha256[:12]}"
        _unpack(deb, dest, ["./boot/vmlinuz-*", "./boot/config-*"])
        config = next((dest / "boot").glob("config-*")).read_text()
        for option in ("CONFIG_BPF_LSM=y", "CONFIG_DEBUG_INFO_BTF=y", "CONFIG_BPF_SYSCALL=y"):
            if f"\n{option}\n" not in config:
                raise SystemExit(f"{source.filename}: the kernel lacks {option}; it cannot run the test")
        found.append(Kernel(name.removeprefix(KERNEL_PREFIX), source.version, next((dest / "boot").glob("vmlinuz-*"))))
    if not found:
        raise SystemExit(f"{REPO.lock}: no {KERNEL_PREFIX}* entry: no kernel to boot")
    return sorted(found, key=lambda k: tuple(int(p) for p in k.name.split(".")))


def busybox(sources: dict[str, lock.Source], cache_root: Path, log) -> Path:
    source = sources["vmtest-busybox"]
    deb = fetch.fetch(source, cache_root / "downloads", log)
    dest = cache_root / "tools" / f"busybox-{source.sha256[:12]}"
    _unpack(deb, dest, ["./bin/busybox"])
    return dest / "bin" / "busybox"


def build_loader(artefact: Path, work: Path, reporter: Reporter) -> Path:
    """lsm_test, linked statically with the skeleton of the object the bpf step built."""
    out = work / "lsm_test"
    cmd = ["gcc", "-O2", "-Wall", "-Werror", "-static", f"-I{artefact}", f"-I{ROOT / 'bpf'}"]
    cmd += [str(HERE / "lsm_test.c"), "-o", str(out), *LINK_LIBS]
    reporter.run("vmtest-loader", cmd, work)
    return out


def check_names(loader: Path, runtime: bool) -> list[str]:
    names = []
    for flag in ("--list", "--list-runtime") if runtime else ("--list",):
        names += subprocess.run([str(loader), flag], capture_output=True, text=True, check=True).stdout.split()
    if runtime:  # mode "full" through the runtime's own loader (guest_full.py)
        listed = [sys.executable, str(HERE / "guest_full.py"), "--list"]
        names += subprocess.run(listed, capture_output=True, text=True, check=True).stdout.split()
    return names


# What of the distribution the guest does not need (the test suite alone is 160 MB).
DIST_SKIP = {"test", "idlelib", "ensurepip", "tkinter", "turtledemo", "pydoc_data", "include", "share"}


def _libraries(binaries: list[Path]) -> set[Path]:
    """The shared libraries (ldd) the binaries load, the dynamic loader included."""
    libs: set[Path] = set()
    for binary in binaries:
        proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0] if parts else ""
            if path.startswith("/"):
                libs.add(Path(path))
    return libs


def dist_entries(prefix: Path) -> list[initramfs.Entry]:
    """The built distribution under /dist (without its tests and GUI), the host libraries
    its interpreter and extension modules load, and guest_runtime.py."""
    entries: list[initramfs.Entry] = [initramfs.directory("dist")]
    binaries = []
    for path in sorted(prefix.rglob("*")):
        rel = path.relative_to(prefix)
        if DIST_SKIP & set(rel.parts) or rel.name.startswith(("config-", "_tkinter")):
            continue
        where = f"dist/{rel}"
        if path.is_symlink():
            entries.append(initramfs.symlink(where, os.readlink(path)))
        elif path.is_dir():
            entries.append(initramfs.directory(where))
        else:
            entries.append(initramfs.file(where, path.read_bytes(), executable=os.access(path, os.X_OK)))
            if path.suffix == ".so" or (rel.parts[0] == "bin" and path.name.startswith("python")):
                binaries.append(path)
    dirs = set()
    for lib in sorted(_libraries(binaries)):
        for parent in reversed(lib.parent.parents[:-1]):
            dirs.add(str(parent).lstrip("/"))
        dirs.add(str(lib.parent).lstrip("/"))
        entries.append(initramfs.file(str(lib).lstrip("/"), lib.read_bytes(), executable=True))
    entries[:0] = [initramfs.directory(d) for d in sorted(dirs)]
    entries.append(initramfs.file("srv/guest_runtime.py", (HERE / "guest_runtime.py").read_bytes()))
    entries.append(initramfs.file("srv/guest_full.py", (HERE / "guest_full.py").read_bytes()))
    return entries


def make_initramfs(box: Path, loader: Path, out: Path, prefix: Path | None = None) -> None:
    entries = [initramfs.directory(d) for d in ("bin", "dev", "proc", "sys", "tmp", "srv", "srv/data")]
    entries += [
        initramfs.char_device("dev/console", 5, 1),
        initramfs.char_device("dev/null", 1, 3, 0o666),
        initramfs.file("bin/busybox", box.read_bytes(), executable=True),
        initramfs.file("lsm_test", loader.read_bytes(), executable=True),
        initramfs.file("init", INIT.encode(), executable=True),
        initramfs.file("srv/data/public", b"public\n"),
        initramfs.file("srv/data/secret", b"secret\n"),
    ]
    if prefix is not None:
        entries += dist_entries(prefix)
    initramfs.write(entries, out)


# ---- boots ------------------------------------------------------------------------------


def boot(kernel: Kernel, initrd: Path, lsm: str, label: str, logs: Path, timeout: float) -> Boot:
    log = logs / f"{label}.log"
    monitor = logs / f"{label}.monitor"  # QEMU's monitor: the vCPUs' registers if it hangs
    monitor.unlink(missing_ok=True)
    # Single-threaded TCG: with one host thread per vCPU (the default), a vCPU can run
    # stale kernel text after the other patched it (text_poke: static keys, BPF attach):
    # seen as an "Oops: int3" at a jump-label site in a 6.12 guest and as minutes-long soft
    # lockups of both CPUs in 6.1 guests. The guest still has two CPUs, taking turns.
    cmd = ["qemu-system-x86_64", "-accel", "tcg,thread=single", "-cpu", "max", "-smp", "2", "-m", "1G"]
    cmd += ["-nographic", "-no-reboot", "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd)]
    cmd += ["-monitor", f"unix:{monitor},server,nowait"]
    # nokaslr: the same addresses in every boot of a kernel, so kallsyms() names them
    cmd += ["-append", f"console=ttyS0 panic=-1 quiet nokaslr lsm={lsm}"]
    start = time.monotonic()
    status: int | None
    samples: list[list[tuple[int, int]]] = []
    hang = ""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = None
            try:
                samples = vcpu_samples(monitor, logs / f"{label}.registers.txt")
            except OSError as exc:
                samples, hang = [], f"no register dump from QEMU's monitor ({exc})"
            proc.kill()
            proc.wait()
    monitor.unlink(missing_ok=True)
    result = Boot(label, kernel, lsm, time.monotonic() - start, None, status, log=log, hang=hang, samples=samples)
    for raw in log.read_bytes().decode(errors="replace").splitlines():
        line = raw.strip("\r")
        if m := LINE.match(line):
            result.results[m.group(1)] = (m.group(2), m.group(3))
        elif m := INFO.search(line):  # the first line may follow the firmware's escape codes
            result.lsm_active = m.group(1)
        elif m := PERF.search(line):
            cases = ("detached", "attached-unmarked", "marked-allowed")
            result.open_close_ns = dict(zip(cases, map(int, m.groups()), strict=True))
        elif m := EXIT.search(line):
            result.guest_seconds = float(m.group(1))
    return result


def _monitor(path: Path, command: str) -> str:
    """One command to QEMU's human monitor; its answer (up to the next prompt)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(command.encode() + b"\n")
        data = b""
        while data.count(b"(qemu)") < 2:  # the greeting's prompt, then the one after the answer
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace")


def vcpu_samples(monitor: Path, out: Path) -> list[list[tuple[int, int]]]:
    """Where each vCPU runs when a boot times out: (cpu, RIP), three samples a second
    apart, read from QEMU's monitor (from outside: the guest runs as it would). A guest
    that soft-locks prints only the watchdog's line under `quiet`; describe() names the
    functions. The full register dumps go to `out`."""
    rip = re.compile(r"^CPU#(\d+)|RIP=([0-9a-f]{16})", re.M)
    dumps, samples = [], []
    for _ in range(3):
        text = _monitor(monitor, "info registers -a")
        dumps.append(text)
        cpu, seen = None, []
        for m in rip.finditer(text):
            if m.group(1) is not None:
                cpu = int(m.group(1))
            elif cpu is not None:
                seen.append((cpu, int(m.group(2), 16)))
        samples.append(seen)
        time.sleep(1)
    out.write_text("\n".join(dumps))
    return samples


KALLSYMS_INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox grep -i ' t ' /proc/kallsyms > /dev/ttyS1
/bin/busybox poweroff -f
"""


def kallsyms(kernel: Kernel, box: Path, work: Path) -> list[tuple[int, str]]:
    """The kernel's text symbols, sorted by address. Debian's packages carry no System.map
    (only a stub), so the same kernel boots once more, with nokaslr as in boot(), and
    prints /proc/kallsyms to a second serial port."""
    initrd, table = work / f"kallsyms-{kernel.name}.cpio.gz", work / f"kallsyms-{kernel.name}.txt"
    entries = [initramfs.directory(d) for d in ("bin", "dev", "proc")]
    entries += [
        initramfs.char_device("dev/console", 5, 1),
        initramfs.char_device("dev/ttyS1", 4, 65),
        initramfs.file("bin/busybox", box.read_bytes(), executable=True),
        initramfs.file("init", KALLSYMS_INIT.encode(), executable=True),
    ]
    initramfs.write(entries, initrd)
    cmd = ["qemu-system-x86_64", "-accel", "tcg,thread=single", "-cpu", "max", "-m", "1G", "-display", "none"]
    cmd += ["-no-reboot"]
    cmd += ["-serial", "null", "-serial", f"file:{table}", "-monitor", "none"]
    cmd += ["-kernel", str(kernel.vmlinuz), "-initrd", str(initrd), "-append", "console=ttyS0 panic=-1 quiet nokaslr"]
    subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=300, check=True)
    found = []
    for line in table.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] in "tT":
            found.append((int(parts[0], 16), parts[2]))
    return sorted(found)


def describe(samples: list[list[tuple[int, int]]], symbols: list[tuple[int, str]]) -> str:
    addresses = [a for a, _ in symbols]

    def name(addr: int) -> str:
        i = bisect.bisect_right(addresses, addr) - 1
        if i < 0 or addr < 0xFFFF_FFFF_8000_0000:
            return f"{addr:#x} (outside kernel text)"
        if addr - symbols[i][0] > 1 << 20:  # past the last symbol: module space (BPF JIT images too)
            return f"{addr:#x} (outside kernel text: a module or a BPF program)"
        return f"{symbols[i][1]}+{addr - symbols[i][0]:#x}"

    cpus = (", ".join(f"CPU#{c} {name(a)}" for c, a in seen) for seen in samples)
    return "; ".join(f"sample {n}: {text}" for n, text in enumerate(cpus))


# ---- verdict ----------------------------------------------------------------------------


def verdict(names: list[str], boots: list[Boot], control: Boot | None) -> list[str]:
    """Every problem found; empty when the test passed."""
    problems = []
    for b in boots:
        bad = [n for n in names if b.status(n) != "PASS"]
        if bad:
            problems.append(f"{b.label}: {len(bad)} check(s) not passed: {', '.join(bad)} (log {b.log})")
        if b.hang:
            problems.append(f"{b.label}: the guest did not finish; its vCPUs: {b.hang}")
        extra = sorted(set(b.results) - set(names))
        if extra:
            problems.append(f"{b.label}: checks printed that --list does not name: {extra}")
        if "bpf" not in b.lsm_active.split(","):
            problems.append(f"{b.label}: the guest's active LSMs are {b.lsm_active!r}, without bpf")
    if control is not None:
        if "bpf" in control.lsm_active.split(","):
            problems.append(f"{control.label}: the control guest has bpf among its LSMs ({control.lsm_active!r})")
        if not control.results:
            problems.append(f"{control.label}: the control printed no results (log {control.log})")
        held = [n for n in names if n.endswith(".denied") and control.status(n) == "PASS"]
        if held:
            problems.append(f"{control.label}: refusals held without the bpf LSM (so they are not ours): {held}")
        if all(control.status(n) == "PASS" for n in names):
            problems.append(f"{control.label}: the negative control passed")
    return problems


def report(console: Console, names: list[str], boots: list[Boot], control: Boot | None) -> None:
    runs = boots + ([control] if control else [])
    table = Table(title="BPF-LSM checks in QEMU guests", title_justify="left")
    table.add_column("check")
    for b in runs:
        table.add_column(f"{b.label}\n{b.kernel.version}\nlsm=…{b.lsm.rsplit(',', 1)[-1]}")
    style = {"PASS": "green", "FAIL": "red", "MISSING": "red"}
    for n in names:
        table.add_row(n, *(f"[{style[b.status(n)]}]{b.status(n)}[/]" for b in runs))
    table.add_row(
        "boot wall / guest uptime (s)",
        *(f"{b.seconds:.1f} / {b.guest_seconds if b.guest_seconds is not None else '-'}" for b in runs),
    )
    console.print(table)
    for b in runs:
        failing = [(n, b.results[n][1]) for n in names if b.status(n) == "FAIL"]
        if b is not control:
            for n, detail in failing:
                console.print(f"  {b.label} {n}: {detail}")
        passed = sum(b.status(n) == "PASS" for n in names)
        if b.open_close_ns:
            cost = ", ".join(f"{k} {v} ns" for k, v in b.open_close_ns.items())
            console.print(f"{b.label}: open()+close() in the guest (TCG, indicative only): {cost}")
        console.print(
            f"{b.label}: kernel {b.kernel.version}, active LSMs {b.lsm_active or '?'}: {passed}/{len(names)} passed, "
            f"qemu exit {b.qemu_status}, {b.seconds:.1f}s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernel", action="append", help="boot only these (6.1, 6.12, ...)")
    parser.add_argument("--no-control", action="store_true", help="skip the negative control boot")
    parser.add_argument("--control-kernel", default=None, help="kernel of the negative control (default: newest)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per boot")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--runtime",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also run the built distribution (out/dist/current) in the guests, one sandbox thread marked",
    )
    args = parser.parse_args(argv)

    console = Console(stderr=False, highlight=False, width=None if sys.stdout.isatty() else 160)
    out = ROOT / "out" / "vmtest"
    out.mkdir(parents=True, exist_ok=True)
    reporter = Reporter(ROOT / "out" / "logs", Console(stderr=True, highlight=False))
    started = time.monotonic()

    cache_root = cache.root()
    sources = lock.load(REPO.lock)
    available = kernels(sources, cache_root, reporter.info)
    chosen = [k for k in available if not args.kernel or k.name in args.kernel]
    if args.kernel and len(chosen) != len(set(args.kernel)):
        raise SystemExit(f"unknown kernel among {args.kernel}; the lock has {[k.name for k in available]}")
    box = busybox(sources, cache_root, reporter.info)
    prefix = None
    if args.runtime:
        prefix = (ROOT / "out" / "dist" / "current").resolve()
        if not (prefix / "bin" / "python3").exists():
            raise SystemExit(f"{prefix}: no built distribution for --runtime; run ./dev dist first")
    artefact = bpf.build(REPO, reporter)
    with tempfile.TemporaryDirectory(prefix="vmtest-") as tmp:
        work = Path(tmp)
        with reporter.phase("vmtest-build", "lsm_test + initramfs"):
            loader = build_loader(artefact, work, reporter)
            names = check_names(loader, args.runtime)
            initrd = out / "initramfs.cpio.gz"
            make_initramfs(box, loader, initrd, prefix)
    prepared = time.monotonic() - started

    boots: list[Boot] = []
    for k in chosen:
        with reporter.phase(f"vmtest-boot-{k.name}", f"lsm={LSM_ON}"):
            boots.append(boot(k, initrd, LSM_ON, f"linux-{k.name}", out, args.timeout))
    control = None
    if not args.no_control:
        k = next((k for k in available if k.name == args.control_kernel), available[-1])
        with reporter.phase(f"vmtest-control-{k.name}", f"lsm={LSM_OFF}"):
            control = boot(k, initrd, LSM_OFF, f"control-{k.name}", out, args.timeout)

    for b in boots + ([control] if control else []):
        if b.samples:  # it hung: name the functions its vCPUs were in
            with tempfile.TemporaryDirectory(prefix="vmtest-kallsyms-") as tmp:
                try:
                    b.hang = describe(b.samples, kallsyms(b.kernel, box, Path(tmp)))
                except (OSError, subprocess.SubprocessError) as exc:
                    b.hang = f"{describe(b.samples, [])} (no kallsyms: {exc})"
            b.hang += f" (registers: {out / (b.label + '.registers.txt')})"
    report(console, names, boots, control)
    problems = verdict(names, boots, control)
    total = time.monotonic() - started
    console.print(f"prepared in {prepared:.1f}s, {len(boots) + bool(control)} boot(s), {total:.1f}s in all")
    if args.json:
        data = {
            "checks": names,
            "boots": [
                {
                    "label": b.label,
                    "kernel": b.kernel.version,
                    "lsm": b.lsm,
                    "active": b.lsm_active,
                    "seconds": round(b.seconds, 2),
                    "guest_seconds": b.guest_seconds,
                    "open_close_ns": b.open_close_ns,
                    "hang": b.hang,
                    "results": {n: b.status(n) for n in names},
                }
                for b in boots + ([control] if control else [])
            ],
            "problems": problems,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    if problems:
        for p in problems:
            console.print(f"[bold red]vmtest failed:[/] {p}")
        return 1
    console.print("[bold green]vmtest passed[/]: every check on every kernel; the control without bpf failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
