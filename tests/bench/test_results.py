"""bench/results.py writes files that bench/results.schema.json accepts, and nothing else."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from conftest import ROOT, need

sys.path.insert(0, str(ROOT / "bench"))
import results


@pytest.fixture(scope="module")
def validator():
    need(importlib.util.find_spec("jsonschema") is not None, "jsonschema is not installed (requirements/tests.in)")
    import jsonschema

    schema = json.loads(results.SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def sample_results() -> list:
    return [
        results.Result.of(
            "peers",
            "startup.print",
            "bwrap",
            "s",
            [0.012, 0.011, 0.015],
            label="print(1+1), cold",
            baseline=("python3 -I -S -c", 0.010),
            params={"runs": 3},
        ),
        results.Result.of("scaling", "rss.per_sandbox", "pyisolate", "KiB", [9000.0], params={"sandboxes": 100}),
    ]


def test_part_and_merge_validate(tmp_path, validator):
    parts = tmp_path / "parts"
    skip = results.Skip("peers", "docker", "no Docker engine (docker/dockerd.sh start failed)")
    part = results.write_part("peers", sample_results(), skipped=[skip], quick=True, path=parts / "peers.json")
    doc = json.loads(part.read_text())
    validator.validate(doc)
    assert doc["results"][0]["ratio"] == pytest.approx(0.012 / 0.010)
    assert doc["skipped"][0]["subject"] == "docker"

    legacy = {  # the layout bench/runtime.py writes (runtime.json, checked by .ci/run)
        "date": "2026-11-28",
        "quick": True,
        "results": [
            {
                "metric": "call round trip, 1 kB each way",
                "unit": "s",
                "samples": 5,
                "median": 5.9e-05,
                "p10": 5.0e-05,
                "p90": 7.0e-05,
                "baseline": "plain echo",
                "baseline_median": 5.1e-05,
                "ratio": 1.16,
                "target": "≤ 30 µs",
            }
        ],
    }
    (tmp_path / "runtime.json").write_text(json.dumps(legacy))
    merged = json.loads(results.merge(tmp_path / "results.json", parts).read_text())
    validator.validate(merged)
    assert sorted(merged["suites"]) == ["peers", "runtime"]
    assert len(merged["results"]) == 3
    assert not list(tmp_path.glob(".*.tmp")), "a temporary file was left behind"


def test_schema_rejects_malformed(validator):
    import jsonschema

    good = results.document([r.to_json() for r in sample_results()], [], quick=False, command="x", suites=["peers"])
    validator.validate(good)
    for mutate in (
        lambda d: d["results"][0].update(ratio="1.2"),
        lambda d: d["results"][0].update(unit="ms"),
        lambda d: d["results"][0].pop("median"),
        lambda d: d.update(schema="pyisolate-bench/0"),
        lambda d: d["skipped"].append({"suite": "peers", "subject": "nsjail"}),
    ):
        bad = json.loads(json.dumps(good))
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(bad)


def test_writer_refuses_bad_records():
    with pytest.raises(ValueError, match="unit"):
        results.Result.of("peers", "x", "bwrap", "ms", [1.0]).to_json()
    with pytest.raises(ValueError, match="finite"):
        results.Result.of("peers", "x", "bwrap", "s", [float("nan")]).to_json()
    with pytest.raises(ValueError, match="no samples"):
        results.Result.of("peers", "x", "bwrap", "s", [])


def test_merge_refuses_other_schema(tmp_path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "old.json").write_text(json.dumps({"schema": "pyisolate-bench/0"}))
    with pytest.raises(ValueError, match="schema"):
        results.merge(tmp_path / "results.json", tmp_path / "parts")
