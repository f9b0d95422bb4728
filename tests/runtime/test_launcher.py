"""pyisolate-python behaves like python3 for argv, stdin/stdout/stderr and exit codes,
and under its default policy refuses what a script must not do."""

import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "scripts"


def run(cmd, stdin="", cwd=None):
    proc = subprocess.run([str(c) for c in cmd], input=stdin, capture_output=True, text=True, timeout=120, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def launcher(dist):
    return dist / "bin" / "pyisolate-python"


CASES = [
    ("argv_stdin.py", ["one", "two words"], "some input\nmore\n"),
    ("exit_code.py", ["0"], ""),
    ("exit_code.py", ["3"], ""),
    ("exit_code.py", ["a message for stderr"], ""),
    ("uncaught.py", [], ""),
    ("stdlib_use.py", [], ""),
]


@pytest.mark.parametrize(("script", "args", "stdin"), CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_same_as_python3(python, launcher, script, args, stdin):
    expected = run([python, SCRIPTS / script, *args], stdin, cwd=SCRIPTS)
    got = run([launcher, "--policy", "permissive", SCRIPTS / script, *args], stdin, cwd=SCRIPTS)
    assert got == expected


@pytest.mark.parametrize(
    ("argv", "stdin"),
    [
        (["-c", "import sys; print(sys.argv); print(input())", "x", "y"], "typed\n"),
        (["-c", "raise SystemExit(7)"], ""),
        (["-m", "json.tool"], '{"b": [1, 2], "a": null}'),
        (["-"], "import sys\nprint('from stdin', sys.argv)\n"),
        ([], "print(6 * 7)\n"),
    ],
)
def test_modes_same_as_python3(python, launcher, argv, stdin, tmp_path):
    expected = run([python, *argv], stdin, cwd=tmp_path)
    got = run([launcher, "--policy", "permissive", *argv], stdin, cwd=tmp_path)
    assert got == expected


def test_default_policy_blocks_and_reports(launcher, tmp_path):
    script = tmp_path / "probe.py"
    (tmp_path / "mine.txt").write_text("my data")
    script.write_text(
        "import tempfile, os\n"
        "print(open(os.path.join(os.path.dirname(__file__), 'mine.txt')).read())\n"
        "with tempfile.NamedTemporaryFile('w', delete=False) as f:\n"
        "    f.write('scratch')\n"
        "print('temp ok', open(f.name).read())\n"
        "for attempt in (lambda: open('/etc/passwd').read(),\n"
        "                lambda: open(os.path.join(os.path.dirname(__file__), 'new.txt'), 'w'),\n"
        "                lambda: __import__('subprocess'),\n"
        "                lambda: __import__('socket'),\n"
        "                lambda: os.system('true')):\n"
        "    try:\n"
        "        attempt()\n"
        "        print('ALLOWED')\n"
        "    except (PermissionError, ImportError) as exc:\n"
        "        print('blocked:', type(exc).__name__)\n"
    )
    code, out, err = run([launcher, script])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:2] == ["my data", "temp ok scratch"]
    assert lines[2:] == [
        "blocked: PermissionError",
        "blocked: PermissionError",
        "blocked: ImportError",
        "blocked: ImportError",
        "blocked: PermissionError",
    ]
    assert not (tmp_path / "new.txt").exists()


def test_bad_policy_and_missing_script(launcher, tmp_path):
    code, _, err = run([launcher, "--policy", "no-such-policy", "-c", "pass"])
    assert code == 125 and "no such policy file or template" in err
    code, _, err = run([launcher, tmp_path / "missing.py"])
    assert code == 2 and "can't open file" in err
    code, _, err = run([launcher, "--bogus"])
    assert code == 2 and "usage:" in err


def test_wall_time_limit(launcher, tmp_path):
    pol = tmp_path / "short.toml"
    pol.write_text('[policy]\nname = "short"\n[modules]\nallow = ["*"]\n[limits]\nwall_time = 1\n')
    code, _, err = run([launcher, "--policy", pol, "-c", "while True: pass"])
    assert code == 124
    # The watchdog interrupts the loop; one line names the quota, the limit and the measured time.
    assert err.strip().startswith("pyisolate-python: [main] wall_time quota exceeded: limit 1s, measured 1.")
    assert len(err.strip().splitlines()) == 1
