"""nox -s fuzz: build the broker's C core with coverage and AddressSanitizer for the host
Python, then run each atheris target for a bounded time.

    python fuzz/run.py [--seconds N] [--prefix DIST]

Why a separate build: atheris runs on the host's CPython 3.11 (it has no wheel for the
free-threaded 3.14t), and the C core reaches 3.11 through ctypes (pyisolate/_broker_ctypes.py).
The library is the same sources as libpyisolate_broker.so, compiled with clang-19
-fsanitize=fuzzer-no-link,address and linked with the cached static libsodium (the
sodium step); the targets run with atheris's asan_with_fuzzer.so preloaded, which
brings libFuzzer and the ASan runtime. Corpus and crashes stay in out/fuzz/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "build"))

from pyisolate_build import cpython, sodium  # noqa: E402
from pyisolate_build.progress import Reporter  # noqa: E402

TARGETS = ["fuzz_frame", "fuzz_handshake"]
SOURCES = [
    "noise_cipher.c",
    "noise_symmetric.c",
    "noise_handshake.c",
    "broker_transport.c",
    "broker_bench.c",
    "broker_capi.c",
]


def build_library(prefix: Path, out: Path) -> Path:
    base = Path(os.path.realpath(prefix))
    sodium_prefix = sodium.build(cpython.Repo(ROOT), base, Reporter(out))
    lib = out / "libpyisolate_broker_fuzz.so"
    cmd = [
        *["clang-19", "-shared", "-fPIC", "-g", "-O1", "-DPYI_BROKER_SHARED", "-fvisibility=hidden"],
        *["-fsanitize=fuzzer-no-link,address", "-I", str(ROOT / "native" / "src")],
        *["-I", str(sodium_prefix / "include")],
        *[str(ROOT / "native" / "src" / s) for s in SOURCES],
        *[str(sodium_prefix / "lib" / "libsodium.a"), "-Wl,--exclude-libs,ALL", "-o", str(lib)],
    ]
    subprocess.run(cmd, check=True)
    return lib


def run_target(name: str, lib: Path, out: Path, seconds: int) -> int:
    import atheris

    corpus = out / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        PYISOLATE_BROKER_LIB=str(lib),
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "fuzz")]),
        LD_PRELOAD=str(Path(atheris.path()) / "asan_with_fuzzer.so"),
        ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:quarantine_size_mb=16",
    )
    seed = subprocess.run(
        [sys.executable, "-c", f"import {name}, sys; [sys.stdout.write(s.hex() + chr(10)) for s in {name}.seeds()]"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    for n, line in enumerate(seed.stdout.split()):
        (corpus / f"seed-{n}").write_bytes(bytes.fromhex(line))
    print(f"fuzz: {name} for {seconds}s (corpus {corpus})", flush=True)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "fuzz" / f"{name}.py"),
            f"-max_total_time={seconds}",
            "-rss_limit_mb=4096",
            f"-artifact_prefix={out}/{name}-",
            str(corpus),
        ],
        env=env,
    )
    return proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--prefix", type=Path, default=ROOT / "out" / "dist" / "current")
    args = parser.parse_args()
    out = ROOT / "out" / "fuzz"
    out.mkdir(parents=True, exist_ok=True)
    lib = build_library(args.prefix, out)
    failed = [name for name in TARGETS if run_target(name, lib, out, args.seconds) != 0]
    if failed:
        print(f"fuzz: FAILED {failed}; reproducers in {out}", file=sys.stderr)
        return 1
    print("fuzz: every target ran its time without a finding")
    return 0


if __name__ == "__main__":
    sys.exit(main())
