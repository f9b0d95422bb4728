"""The one results format every benchmark writes: records with a same-run baseline.

Each bench script (runtime, interp, peers, scaling, broker, guards, allocator, …) writes one
*part* file, out/bench/parts/<suite>.json; `merge` collects every part (and the older
runtime.json/interp.json layouts) into out/bench/results.json. Parts and the merged file
follow one JSON schema, bench/results.schema.json (`"schema": "pyisolate-bench/1"`); a
change that breaks readers bumps the number. The writer is standard-library only, so it
runs on the built 3.14t; `check` validates with jsonschema (requirements/bench.txt).

    from results import Result, Skip, summary, write_part
    r = Result.of("peers", "startup.print", "bwrap", "s", samples,
                  label="print(1+1), cold", baseline=("python3 -I -S -c", base_median))
    write_part("peers", [r], skipped=[Skip("peers", "docker", "no Docker engine")], quick=True)

    python3 bench/results.py merge  [--out out/bench/results.json]
    python3 bench/results.py check  FILE...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

SCHEMA = "pyisolate-bench/1"
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "bench"
PARTS = OUT / "parts"
SCHEMA_FILE = Path(__file__).resolve().parent / "results.schema.json"
UNITS = ("s", "KiB", "MiB", "1/s", "x", "count")


def summary(samples: list[float]) -> dict:
    """median, p10 and p90 (nearest rank) of a non-empty sample list."""
    if not samples:
        raise ValueError("summary of no samples")
    ordered = sorted(samples)
    n = len(ordered)
    return {
        "median": statistics.median(ordered),
        "p10": ordered[int(n * 0.1)],
        "p90": ordered[min(n - 1, int(n * 0.9))],
    }


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclasses.dataclass(frozen=True)
class Result:
    """One metric for one subject. `name` is stable (a key for tables and plots);
    `subject` is what ran (pyisolate, bwrap, python3.14t, …); `params` holds the knobs
    that vary within a metric (e.g. {"sandboxes": 100})."""

    suite: str
    name: str
    subject: str
    unit: str
    median: float
    p10: float
    p90: float
    samples: tuple[float, ...] = ()
    label: str = ""
    baseline: str | None = None
    baseline_median: float | None = None
    ratio: float | None = None
    params: dict = dataclasses.field(default_factory=dict)
    target: str = ""
    notes: str = ""

    @classmethod
    def of(
        cls,
        suite: str,
        name: str,
        subject: str,
        unit: str,
        samples: list[float],
        *,
        baseline: tuple[str, float] | None = None,
        **extra,
    ) -> Result:
        """From raw samples; the ratio is median / baseline median."""
        s = summary(samples)
        base_name, base_median = baseline if baseline else (None, None)
        ratio = s["median"] / base_median if base_median else None
        return cls(
            suite,
            name,
            subject,
            unit,
            **s,
            samples=tuple(samples),
            baseline=base_name,
            baseline_median=base_median,
            ratio=ratio,
            **extra,
        )

    def to_json(self) -> dict:
        if self.unit not in UNITS:
            raise ValueError(f"{self.suite}/{self.name}: unit {self.unit!r} is not one of {UNITS}")
        for key in ("median", "p10", "p90"):
            if not math.isfinite(getattr(self, key)):
                raise ValueError(f"{self.suite}/{self.name}: {key} is not a finite number")
        out = dataclasses.asdict(self)
        out["samples"] = list(self.samples)
        return out


@dataclasses.dataclass(frozen=True)
class Skip:
    """A subject (peer, metric) that could not run here, and why: reported, never dropped."""

    suite: str
    subject: str
    reason: str
    name: str = ""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def host() -> dict:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "node": platform.node(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "loadavg_1min": load,
    }


def document(results: list[dict], skipped: list[dict], *, quick: bool, command: str, suites: list[str]) -> dict:
    return {
        "schema": SCHEMA,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": host(),
        "command": command,
        "quick": quick,
        "suites": suites,
        "results": results,
        "skipped": skipped,
    }


def write_text_atomic(path: Path, text: str) -> Path:
    """Nothing half-written: a temporary name in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_atomic(path: Path, doc: dict) -> Path:
    return write_text_atomic(path, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def write_part(
    suite: str,
    results: list[Result],
    *,
    skipped: list[Skip] = (),
    quick: bool,
    path: Path | None = None,
    command: str | None = None,
) -> Path:
    """Write out/bench/parts/<suite>.json (temp + rename): one suite's records."""
    doc = document(
        [r.to_json() for r in results],
        [s.to_json() for s in skipped],
        quick=quick,
        command=command or " ".join([Path(sys.executable).name, *sys.argv]),
        suites=[suite],
    )
    return write_atomic(path or PARTS / f"{suite}.json", doc)


# --- the older layouts (runtime.json, interp.json) as records ------------------------------


def from_runtime(doc: dict) -> list[dict]:
    out = []
    for r in doc["results"]:
        name = r["metric"]
        out.append(
            Result(
                "runtime",
                name,
                "pyisolate",
                r["unit"],
                r["median"],
                r["p10"],
                r["p90"],
                label=name,
                baseline=r.get("baseline"),
                baseline_median=r.get("baseline_median"),
                ratio=r.get("ratio"),
                target=r.get("target") or "",
                notes=f"{r['samples']} samples",
            ).to_json()
        )
    return out


def from_interp(doc: dict) -> list[dict]:
    out = []
    base = doc["baseline"]
    medians = {(r["flavour"], r["workload"]): r["median"] for r in doc["results"]}
    for r in doc["results"]:
        res = Result.of(
            "interp",
            f"workload.{r['workload']}",
            r["flavour"],
            "s",
            r["samples"],
            label=f"{r['workload']} (CPU time)",
            baseline=(f"{base} build", medians[(base, r["workload"])]),
        )
        out.append(res.to_json())
    for flavour, g in doc.get("geomean_ratio", {}).items():
        out.append(
            Result(
                "interp",
                "workload.geomean",
                flavour,
                "x",
                g,
                g,
                g,
                label="geometric mean of ratios",
                baseline=f"{base} build",
            ).to_json()
        )
    return out


LEGACY = {"runtime.json": from_runtime, "interp.json": from_interp}


def merge(out: Path = OUT / "results.json", parts: Path = PARTS) -> Path:
    """Every part plus the legacy files → one document; a suite's part wins over its legacy file."""
    results: list[dict] = []
    skipped: list[dict] = []
    suites: list[str] = []
    commands: list[str] = []
    quick_suites: list[str] = []
    for part in sorted(parts.glob("*.json")) if parts.is_dir() else []:
        doc = json.loads(part.read_text())
        if doc.get("schema") != SCHEMA:
            raise ValueError(f"{part}: schema {doc.get('schema')!r}, expected {SCHEMA!r}")
        results += doc["results"]
        skipped += doc["skipped"]
        suites += doc["suites"]
        commands.append(doc["command"])
        quick_suites += doc["suites"] if doc["quick"] else []
    for filename, convert in LEGACY.items():
        suite = filename.removesuffix(".json")
        legacy = out.parent / filename
        if suite not in suites and legacy.is_file():
            doc = json.loads(legacy.read_text())
            results += convert(doc)
            suites.append(suite)
            quick_suites += [suite] if doc.get("quick") else []
    if not suites:
        raise FileNotFoundError(f"no results to merge in {parts} or {out.parent}")
    doc = document(results, skipped, quick=bool(quick_suites), command=" ; ".join(commands), suites=suites)
    doc["quick_suites"] = quick_suites
    return write_atomic(out, doc)


def check(path: Path) -> dict:
    """Validate one file against the schema (jsonschema, Draft 2020-12); returns the document."""
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text())
    doc = json.loads(path.read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)
    return doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge", help="parts + legacy files -> results.json")
    m.add_argument("--out", type=Path, default=OUT / "results.json")
    m.add_argument("--parts", type=Path, default=PARTS)
    c = sub.add_parser("check", help="validate files against bench/results.schema.json")
    c.add_argument("files", type=Path, nargs="+")
    c.add_argument("--min-results", type=int, default=1)
    args = parser.parse_args()
    if args.cmd == "merge":
        print(merge(args.out, args.parts))
        return 0
    for f in args.files:
        doc = check(f)
        if len(doc["results"]) < args.min_results:
            sys.exit(f"error: {f} has {len(doc['results'])} results, expected at least {args.min_results}")
        print(f"{f}: valid {SCHEMA}, {len(doc['results'])} results, {len(doc['skipped'])} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
