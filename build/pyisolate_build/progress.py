"""Progress display for long builds: one line per phase with elapsed time, the running
command's last log line while it works, and the log's tail when it fails."""

from __future__ import annotations

import subprocess
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from .errors import StepError

TAIL_LINES = 25


class Reporter:
    def __init__(self, log_dir: Path, console: Console | None = None):
        self.console = console or Console(stderr=True, highlight=False)
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}
        self._live: Live | None = None
        self._phase = ""

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.started:7.1f}s]"

    @contextmanager
    def phase(self, name: str, note: str = ""):
        """Run a phase; prints its outcome and duration."""
        self._phase = name
        start = time.monotonic()
        spinner = Spinner("dots", text=Text(f"{name} {note}".rstrip()))
        live = Live(spinner, console=self.console, transient=True, refresh_per_second=8)
        self._live = live if self.console.is_terminal else None
        if self._live:
            self._live.start()
        else:
            self.console.print(f"{self._stamp()} {name}: started {note}".rstrip())
        ok = False
        try:
            yield self
            ok = True
        finally:
            if self._live:
                self._live.stop()
            self._live = None
            took = time.monotonic() - start
            self.timings[name] = self.timings.get(name, 0.0) + took
            mark = "[green]✓[/]" if ok else "[bold red]✗[/]"
            self.console.print(f"{self._stamp()} {mark} {name} ({took:.1f}s) {note}".rstrip())

    def info(self, message: str) -> None:
        if self._live:
            self._live.console.print(f"  {message}", highlight=False)
        else:
            self.console.print(f"  {message}", highlight=False)

    def skip(self, name: str, reason: str) -> None:
        self.console.print(f"{self._stamp()} [dim]- {name}: {reason}[/]")

    def run(self, step: str, cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> Path:
        """Run a command with its output in out/logs/<step>.log; raise StepError with the
        log's tail on failure."""
        log = self.log_dir / f"{step}.log"
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        with log.open("w", encoding="utf-8", errors="replace") as out:
            out.write(f"$ {' '.join(cmd)}\n# cwd: {cwd}\n")
            out.flush()
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                tail.append(line.rstrip("\n"))
                if self._live:
                    self._live.update(Spinner("dots", text=Text(f"{self._phase}: {line.strip()[:100]}")))
            code = proc.wait()
        if code != 0:
            raise StepError(step, log, "\n".join(tail), code)
        return log
