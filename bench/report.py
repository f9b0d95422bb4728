"""The benchmark report: Markdown tables and PNG plots from out/bench/results.json.

    python bench/report.py [--results out/bench/results.json] [--out out/bench] [--update-readme]

Writes report.md (every suite: the peer comparison side by side, the scaling curve, then
any other suite as a generic table), peers.png and scaling.png (matplotlib, Agg), and
readme-table.md: the block README.md shows between its `bench:peers` markers, with the
date, the machine and the command that made it; `--update-readme` puts it there. Runs
in the bench session's venv (requirements/bench.txt), never on the measured interpreter.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import results  # noqa: E402

ROOT = HERE.parent
README = ROOT / "README.md"
MARK_START, MARK_END = "<!-- bench:peers:start -->", "<!-- bench:peers:end -->"
# Column order of the peer tables: ours first, then baselines, then the others.
SUBJECTS = [
    "pyisolate-api",
    "pyisolate-python",
    "python3.14t",
    "python3-host",
    "bwrap",
    "nsjail",
    "firejail",
    "docker",
    "pyodide",
    "restrictedpython",
]
PEER_METRICS = [
    ("startup.print", "print(1+1), cold"),
    ("startup.print.warm", "print(1+1), warm pool"),
    ("rt.1k", "1 kB round trip"),
    ("cpu", "CPU workload"),
    ("rss.idle", "RSS, idle sandbox"),
    ("pss.idle", "PSS, idle sandbox"),
]
REPRODUCE = "./dev bench"  # = nox -s bench; `./dev bench -- --quick` is the smoke run


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        for scale, suffix in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {suffix}"
        return f"{value * 1e9:.3g} ns"
    if unit == "KiB":
        return f"{value / 1024:.1f} MiB" if value >= 1024 else f"{value:.0f} KiB"
    if unit == "MiB":
        return f"{value / 1024:.2f} GiB" if value >= 1024 else f"{value:.1f} MiB"
    if unit == "1/s":
        return f"{value:,.0f}/s"
    if unit == "x":
        return f"{value:.3f}×"
    return f"{value:g} {unit}"


def ratio(r: dict) -> str:
    return f"{r['ratio']:.2f}×" if r.get("ratio") is not None else ""


def busy_note(doc: dict) -> str:
    host = doc["host"]
    load, cpus = host.get("loadavg_1min"), host.get("cpus") or 1
    lines = []
    if doc["quick"]:
        which = ", ".join(doc.get("quick_suites") or doc["suites"])
        lines.append(f"**Quick (smoke) run of {which}: few samples; those figures only show that the harness works.**")
    if load is not None and load > 0.3 * cpus:
        lines.append(
            f"**The machine was busy (1-minute load {load:.1f} on {cpus} CPUs when the results were merged): "
            "take final figures on an idle machine.**"
        )
    return "\n".join(lines)


def header(doc: dict) -> list[str]:
    host = doc["host"]
    return [
        f"- date: {doc['date']}",
        f"- machine: {host.get('cpu') or host['machine']}, {host['cpus']} CPUs, Linux {host['kernel']}"
        f" ({host['node']}), 1-minute load {host.get('loadavg_1min') or 0:.1f}",
        f"- reproduce: `{REPRODUCE}` (`{REPRODUCE} -- --quick` for the smoke run)",
        f"- suites: {', '.join(doc['suites'])}",
    ]


def peers_section(rows: list[dict], skipped: list[dict]) -> list[str]:
    by = {(r["name"], r["subject"]): r for r in rows}
    subjects = [s for s in SUBJECTS if any(k[1] == s for k in by)]
    subjects += sorted({k[1] for k in by} - set(subjects))
    out = [
        "## Peers: the same workloads in other sandboxes",
        "",
        "Median (ratio to plain `python3.14t` of the same run; RestrictedPython: to plain `exec` in the"
        " same interpreter). Process peers run the built `python3.14t -I -S` inside the sandbox.",
        "",
        "| metric | " + " | ".join(subjects) + " |",
        "|---|" + "---|" * len(subjects),
    ]
    for name, label in PEER_METRICS:
        cells = []
        for s in subjects:
            r = by.get((name, s))
            cells.append("" if r is None else f"{fmt(r['median'], r['unit'])} ({ratio(r) or '—'})")
        if any(cells):
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    extra = [r for r in rows if r["name"] not in dict(PEER_METRICS)]
    if extra:
        out += ["", "| other | subject | median | p10–p90 |", "|---|---|---|---|"]
        out += [
            f"| {r['label'] or r['name']} | {r['subject']} | {fmt(r['median'], r['unit'])} "
            f"| {fmt(r['p10'], r['unit'])}–{fmt(r['p90'], r['unit'])} |"
            for r in extra
        ]
    out += ["", "What each subject is:", ""]
    notes = {}
    for r in rows:
        if r["name"] in ("startup.print", "rt.1k") and r.get("notes"):
            notes.setdefault(r["subject"], r["notes"])
    out += [f"- **{s}**: {notes[s]}" for s in subjects if s in notes]
    if skipped:
        out += ["", "Not measured here:", ""]
        out += [f"- **{s['subject']}**{' ' + s['name'] if s.get('name') else ''}: {s['reason']}" for s in skipped]
    return out


def scaling_section(rows: list[dict], skipped: list[dict]) -> list[str]:
    by_n: dict[int, dict[tuple[str, str], dict]] = defaultdict(dict)
    for r in rows:
        by_n[int(r["params"]["sandboxes"])][(r["name"], r["subject"])] = r
    out = [
        "## Scaling: N idle sandboxes in one supervisor (64 per cell)",
        "",
        "| N | cells | spawn p50 | process spawn p50 | PSS / sandbox | PSS / process | RSS total |"
        " 1 kB p50 / p99 (1 caller) | p50 / p99 under load | calls/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def v(d, name, subject="pyisolate"):
        r = d.get((name, subject))
        return fmt(r["median"], r["unit"]) if r else "—"

    for n in sorted(by_n):
        d = by_n[n]
        cells = next(iter(d.values()))["params"].get("cells", "")
        pss = d.get(("pss.per_sandbox", "pyisolate"))
        out.append(
            f"| {n} | {cells} | {v(d, 'spawn')} | {v(d, 'spawn', 'process-per-sandbox')} | {v(d, 'pss.per_sandbox')} "
            f"| {fmt(pss and pss['baseline_median'], 'KiB')} | {v(d, 'rss.total')} "
            f"| {v(d, 'rt.1k.seq.p50')} / {v(d, 'rt.1k.seq.p99')} "
            f"| {v(d, 'rt.1k.load.p50')} / {v(d, 'rt.1k.load.p99')} "
            f"| {v(d, 'rt.1k.load.rate')} |"
        )
    if skipped:
        out += ["", "Not measured:", ""] + [f"- {s['subject']} {s.get('name', '')}: {s['reason']}" for s in skipped]
    return out


def generic_section(suite: str, rows: list[dict], skipped: list[dict]) -> list[str]:
    out = [
        f"## {suite}",
        "",
        "| metric | subject | median | p10–p90 | baseline (same run) | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in (r.get("params") or {}).items())
        label = (r.get("label") or r["name"]) + (f" ({params})" if params else "")
        base = f"{fmt(r['baseline_median'], r['unit'])}: {r['baseline']}" if r.get("baseline") else ""
        out.append(
            f"| {label} | {r['subject']} | {fmt(r['median'], r['unit'])} | {fmt(r['p10'], r['unit'])}–"
            f"{fmt(r['p90'], r['unit'])} | {base} | {ratio(r)} |"
        )
    if skipped:
        out += [""] + [f"- not measured: {s['subject']} {s.get('name', '')}: {s['reason']}" for s in skipped]
    return out


def plot_peers(rows: list[dict], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [(n, label) for n, label in PEER_METRICS if n != "startup.print.warm"]
    metrics = [(n, label) for n, label in metrics if any(r["name"] == n for r in rows)]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 4.2), squeeze=False)
    for ax, (name, label) in zip(axes[0], metrics, strict=True):
        rs = sorted(
            (r for r in rows if r["name"] == name),
            key=lambda r: SUBJECTS.index(r["subject"]) if r["subject"] in SUBJECTS else 99,
        )
        unit = rs[0]["unit"]
        scale, shown = (1e3, "ms") if unit == "s" else (1 / 1024, "MiB") if unit == "KiB" else (1, unit)
        med = [r["median"] * scale for r in rs]
        lo = [max(0.0, (r["median"] - r["p10"]) * scale) for r in rs]
        hi = [max(0.0, (r["p90"] - r["median"]) * scale) for r in rs]
        colours = [
            "tab:green"
            if r["subject"].startswith("pyisolate")
            else "tab:grey"
            if r["subject"].startswith("python3")
            else "tab:blue"
            for r in rs
        ]
        ax.barh([r["subject"] for r in rs], med, xerr=[lo, hi], color=colours)
        ax.set_xscale("log")
        ax.set_title(label)
        ax.set_xlabel(f"{shown} (log scale; bars p10–p90)")
        ax.invert_yaxis()
    fig.suptitle("PyIsolate and its peers, same machine, same run (green: ours; grey: unsandboxed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_scaling(rows: list[dict], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(name, subject="pyisolate", field="median", scale=1.0):
        pts = sorted(
            (int(r["params"]["sandboxes"]), (r[field] or 0) * scale)
            for r in rows
            if r["name"] == name and r["subject"] == subject and r.get(field) is not None
        )
        return [p[0] for p in pts], [p[1] for p in pts]

    if not rows:
        return None
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 4.2))
    a.plot(*series("spawn", scale=1e3), "o-", label="PyIsolate sandbox")
    a.plot(*series("spawn", "process-per-sandbox", scale=1e3), "s--", label="python3.14t process")
    a.set_title("spawn one more (p50)")
    a.set_ylabel("ms")
    b.plot(*series("pss.per_sandbox", scale=1 / 1024), "o-", label="PyIsolate, PSS / sandbox")
    b.plot(*series("pss.per_sandbox", field="baseline_median", scale=1 / 1024), "s--", label="process, PSS / process")
    b.plot(*series("rss.per_sandbox", scale=1 / 1024), "o:", label="PyIsolate, RSS / sandbox")
    b.plot(*series("rss.per_sandbox", field="baseline_median", scale=1 / 1024), "s:", label="process, RSS / process")
    b.set_title("memory per idle sandbox")
    b.set_ylabel("MiB")
    for key, style in (("seq", "-"), ("load", "--")):
        for q in (50, 99):
            c.plot(*series(f"rt.1k.{key}.p{q}", scale=1e6), "o" + style, label=f"{key} p{q}")
    c.set_title("1 kB call round trip")
    c.set_ylabel("µs")
    c.set_yscale("log")
    for ax in (a, b, c):
        ax.set_xscale("log")
        ax.set_xlabel("sandboxes (log)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("Scaling: N idle sandboxes in one supervisor")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scaling_sentence(rows: list[dict]) -> str:
    """One line for the README: the largest count measured."""
    top = max((int(r["params"]["sandboxes"]) for r in rows), default=0)
    at = {r["name"]: r for r in rows if int(r["params"]["sandboxes"]) == top and r["subject"] == "pyisolate"}
    need = ("spawn", "pss.per_sandbox", "rt.1k.load.p50", "rt.1k.load.p99", "rt.1k.load.rate")
    if not top or any(k not in at for k in need):
        return ""
    pss = at["pss.per_sandbox"]
    return (
        f"At {top:,} idle sandboxes ({at['spawn']['params'].get('cells')} cells): one more spawns in "
        f"{fmt(at['spawn']['median'], 's')} (p50), each costs {fmt(pss['median'], 'KiB')} PSS "
        f"(a python3.14t process per sandbox: {fmt(pss['baseline_median'], 'KiB')}), and 1 kB calls from 8 "
        f"threads take {fmt(at['rt.1k.load.p50']['median'], 's')} p50 / {fmt(at['rt.1k.load.p99']['median'], 's')} "
        f"p99 at {fmt(at['rt.1k.load.rate']['median'], '1/s')}."
    )


def readme_block(doc: dict, peers: list[dict], scaling: list[dict]) -> str:
    by = {(r["name"], r["subject"]): r for r in peers}
    quick = "peers" in (doc.get("quick_suites") or (doc["suites"] if doc["quick"] else []))
    shown = [s for s in SUBJECTS if any(k[1] == s for k in by)]
    metrics = [(n, label) for n, label in PEER_METRICS if n in ("startup.print", "rt.1k", "cpu", "rss.idle")]
    lines = [
        MARK_START,
        "<!-- generated by bench/report.py from out/bench/results.json; `python bench/report.py --update-readme` -->",
        "",
        f"Measured {doc['date'][:10]} on {doc['host'].get('cpu') or doc['host']['machine']} "
        f"({doc['host']['cpus']} CPUs, Linux {doc['host']['kernel']}) with `{REPRODUCE}`"
        + (" (quick run)" if quick else "")
        + "; full tables and plots in `out/bench/report.md`.",
        "",
        "| subject | " + " | ".join(label for _, label in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for s in shown:
        cells = []
        for name, _ in metrics:
            r = by.get((name, s))
            cells.append(f"{fmt(r['median'], r['unit'])} ({ratio(r) or '—'})" if r else "")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Ratios: to plain `python3.14t` in the same run (RestrictedPython: to plain `exec`). pyisolate-api's"
        " memory is what a cell gains per extra idle sandbox; process peers: the RSS of the process tree.",
    ]
    sentence = scaling_sentence(scaling)
    if sentence:
        lines += ["", sentence]
    load, cpus = doc["host"].get("loadavg_1min"), doc["host"].get("cpus") or 1
    if load is not None and load > 0.3 * cpus:
        lines += ["", f"**Busy machine (1-minute load {load:.1f} on {cpus} CPUs): not the final figures.**"]
    lines.append(MARK_END)
    return "\n".join(lines) + "\n"


def update_readme(block: str, readme: Path = README) -> None:
    text = readme.read_text()
    if MARK_START not in text or MARK_END not in text:
        sys.exit(f"error: {readme} has no {MARK_START} … {MARK_END} block to replace")
    before, rest = text.split(MARK_START, 1)
    after = rest.split(MARK_END, 1)[1]
    results.write_text_atomic(readme, before + block.rstrip("\n") + after)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=results.OUT / "results.json")
    parser.add_argument("--out", type=Path, default=results.OUT)
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    doc = results.check(args.results)
    by_suite: dict[str, list[dict]] = defaultdict(list)
    skips: dict[str, list[dict]] = defaultdict(list)
    for r in doc["results"]:
        by_suite[r["suite"]].append(r)
    for s in doc["skipped"]:
        skips[s["suite"]].append(s)

    md = ["# PyIsolate benchmark report", "", *header(doc), ""]
    note = busy_note(doc)
    if note:
        md += [note, ""]
    args.out.mkdir(parents=True, exist_ok=True)
    if by_suite.get("peers") or skips.get("peers"):
        md += [*peers_section(by_suite.get("peers", []), skips.get("peers", [])), ""]
        if plot_peers(by_suite.get("peers", []), args.out / "peers.png"):
            md += ["![peers](peers.png)", ""]
    if by_suite.get("scaling"):
        md += [*scaling_section(by_suite["scaling"], skips.get("scaling", [])), ""]
        if plot_scaling(by_suite["scaling"], args.out / "scaling.png"):
            md += ["![scaling](scaling.png)", ""]
    for suite in doc["suites"]:
        if suite not in ("peers", "scaling") and (by_suite.get(suite) or skips.get(suite)):
            md += [*generic_section(suite, by_suite.get(suite, []), skips.get(suite, [])), ""]
    results.write_text_atomic(args.out / "report.md", "\n".join(md))
    block = readme_block(doc, by_suite.get("peers", []), by_suite.get("scaling", []))
    results.write_text_atomic(args.out / "readme-table.md", block)
    if args.update_readme:
        update_readme(block)
    print(f"{args.out / 'report.md'}: {len(doc['results'])} results from {', '.join(doc['suites'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
