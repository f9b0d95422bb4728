"""Policy files: the templates load; a bad policy is refused naming file, line and field."""

import subprocess

import pytest

from pyisolate import policy
from pyisolate.errors import PolicyError

GOOD = """
[policy]
name = "t"
[filesystem]
read = ["{script_dir}"]
write = ["{tmp}"]
[network]
connect = ["127.0.0.1:8080", "[::1]:53"]
[modules]
allow = ["*"]
[builtins]
enable = ["open"]
[limits]
memory = "64M"
cpu_time = 2
"""


@pytest.mark.parametrize("name", ["compute-only", "stdlib-readonly", "default-script", "permissive"])
def test_templates_load(name):
    pol = policy.load(name)
    assert pol.name == name
    assert "ctypes" in pol.modules_deny and "pickle" in pol.modules_deny


def test_good_policy_fields():
    pol = policy.loads(GOOD, "t.toml")
    assert pol.net_connect == (("127.0.0.1", "8080"), ("::1", "53"))
    assert pol.limits.memory == 64 << 20 and pol.limits.cpu_time == 2.0
    assert pol.modules_deny == policy.DEFAULT_DENY
    resolved = pol.resolve(script_dir="/srv/app", tmp="/tmp/x")
    assert resolved.fs_read == ("/srv/app",) and resolved.fs_write == ("/tmp/x",)


def test_policy_is_immutable():
    pol = policy.load("compute-only")
    with pytest.raises(AttributeError):
        pol.fs_read = ("/",)


@pytest.mark.parametrize(
    ("change", "where", "problem"),
    [
        (('memory = "64M"', 'memory = "lots"'), ":14: [limits].memory", "expected a size"),
        (("cpu_time = 2", "cpu_time = -1"), ":15: [limits].cpu_time", "positive number"),
        (("[network]", "[netwrk]"), "[netwrk]", "unknown table"),
        (('allow = ["*"]', 'allow = "*"'), ":10: [modules].allow", "list of non-empty strings"),
        (('"127.0.0.1:8080"', '"example.com:80"'), ":8: [network].connect", "not an IP address"),
        (('"127.0.0.1:8080"', '"127.0.0.1:99999"'), ":8: [network].connect", "port must be"),
        (('read = ["{script_dir}"]', 'read = ["relative/dir"]'), ":5: [filesystem].read", "must be absolute"),
        (('read = ["{script_dir}"]', 'read = ["{home}/x"]'), ":5: [filesystem].read", "unknown placeholder"),
        (('enable = ["open"]', 'enable = ["eval"]'), ":12: [builtins].enable", "not a removable builtin"),
        (('name = "t"', 'nam = "t"'), ":3: [policy].nam", "unknown key"),
        (('name = "t"', ""), "[policy].name", "required"),
    ],
)
def test_bad_policy_names_line_and_field(change, where, problem):
    text = GOOD.replace(*change)
    with pytest.raises(PolicyError) as info:
        policy.loads(text, "bad.toml")
    message = str(info.value)
    assert message.startswith("bad.toml")
    assert where in message and problem in message, message


def test_toml_syntax_error_has_line():
    with pytest.raises(PolicyError, match=r"bad.toml: TOML syntax: .*line 2"):
        policy.loads("[policy]\nname = \n", "bad.toml")


def test_unknown_template():
    with pytest.raises(PolicyError, match="no such policy file or template"):
        policy.load("no-such-template")


def test_cli_policy_check(dist, tmp_path):
    cli = dist / "bin" / "pyisolate"
    ok = subprocess.run([str(cli), "policy", "check", "default-script"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout and "filesystem write: {tmp}" in ok.stdout
    bad = tmp_path / "p.toml"
    bad.write_text(GOOD.replace('memory = "64M"', 'memory = "lots"'))
    out = subprocess.run([str(cli), "policy", "check", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert f"{bad}:14: [limits].memory" in out.stderr
    for args in (["--help"], ["policy", "--help"], ["policy", "check", "--help"]):
        helped = subprocess.run([str(cli), *args], capture_output=True, text=True)
        assert helped.returncode == 0 and "usage:" in helped.stdout
