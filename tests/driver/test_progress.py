"""A failing build step reports the tail of its log and the log's path."""

import pytest
from rich.console import Console

from pyisolate_build.errors import StepError
from pyisolate_build.progress import Reporter


def test_failing_step_shows_log_tail(tmp_path):
    out = tmp_path / "console.txt"
    with out.open("w") as sink:
        reporter = Reporter(tmp_path / "logs", Console(file=sink, width=120))
        script = "for i in $(seq 1 100); do echo line $i; done; echo 'cc: fatal error: boom' >&2; exit 3"
        with pytest.raises(StepError) as info, reporter.phase("compile"):
            reporter.run("compile", ["sh", "-c", script], tmp_path)
    err = info.value
    assert err.returncode == 3
    assert err.log == tmp_path / "logs" / "compile.log"
    assert "cc: fatal error: boom" in err.tail and "line 100" in err.tail
    assert "line 1\n" not in err.tail  # only the tail, not the whole log
    assert "line 1\n" in err.log.read_text()  # the whole log is on disk
    assert "✗ compile" in out.read_text()


def test_phase_timings_are_recorded(tmp_path):
    reporter = Reporter(tmp_path / "logs", Console(file=open("/dev/null", "w")))
    with reporter.phase("extract"):
        reporter.run("extract", ["true"], tmp_path)
    assert set(reporter.timings) == {"extract"}
