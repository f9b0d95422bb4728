"""bench/report.py's tables and the README block (the plots need matplotlib: the bench
session draws them; here only the text)."""

from __future__ import annotations

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import report
import results


def doc(load: float, quick_suites: list[str]) -> dict:
    peers = [
        results.Result.of("peers", "startup.print", "python3.14t", "s", [0.015, 0.016], baseline=("base", 0.015)),
        results.Result.of("peers", "startup.print", "bwrap", "s", [0.060, 0.070], baseline=("base", 0.015)),
        results.Result.of("peers", "rss.idle", "bwrap", "KiB", [14000.0], baseline=("base", 11000.0)),
    ]
    scaling = [
        results.Result.of(
            "scaling",
            name,
            "pyisolate",
            unit,
            [v],
            params={"sandboxes": 1000, "cells": 16},
            baseline=("process", 3600.0) if name == "pss.per_sandbox" else None,
        )
        for name, unit, v in (
            ("spawn", "s", 0.08),
            ("pss.per_sandbox", "KiB", 10900.0),
            ("rt.1k.load.p50", "s", 0.0013),
            ("rt.1k.load.p99", "s", 0.0034),
            ("rt.1k.load.rate", "1/s", 4871.0),
        )
    ]
    d = results.document(
        [r.to_json() for r in peers + scaling], [], quick=bool(quick_suites), command="x", suites=["peers", "scaling"]
    )
    d["host"]["loadavg_1min"], d["host"]["cpus"] = load, 2
    d["quick_suites"] = quick_suites
    return d


def test_readme_block_replaces_only_its_markers(tmp_path):
    d = doc(load=5.0, quick_suites=["runtime"])
    rows = d["results"]
    block = report.readme_block(
        d, [r for r in rows if r["suite"] == "peers"], [r for r in rows if r["suite"] == "scaling"]
    )
    assert "| bwrap | 65 ms (4.33×) |  |  | 13.7 MiB (1.27×) |" in block  # no rt or cpu figures
    assert "At 1,000 idle sandboxes (16 cells)" in block and "3.5 MiB" in block
    assert "Busy machine" in block and "(quick run)" not in block  # only runtime was quick
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{report.MARK_START}\nold table\n{report.MARK_END}\nafter\n")
    report.update_readme(block, readme)
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith(f"{report.MARK_END}\nafter\n")
    assert "old table" not in text and text.count(report.MARK_START) == 1


def test_idle_peer_run_has_no_warning_and_missing_markers_are_an_error(tmp_path):
    d = doc(load=0.1, quick_suites=[])
    block = report.readme_block(d, [r for r in d["results"] if r["suite"] == "peers"], [])
    assert "Busy" not in block and "quick" not in block
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="no <!-- bench:peers:start -->"):
        report.update_readme(block, readme)
    assert readme.read_text() == "no markers here\n"
