"""Broker opcodes: known opcodes with typed arguments pass, anything else is refused
before dispatch, naming the opcode and the field; a plugin registers an opcode once."""

import pytest

from pyisolate import broker
from pyisolate.errors import ProtocolError, SandboxError


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({"op": "format_disk", "id": 1}, "unknown opcode 'format_disk'"),
        ({"id": 1}, "unknown opcode None"),
        ({"op": 7, "id": 1}, "unknown opcode 7"),
        ({"op": "create", "id": 1, "sb": "x", "policy": "all", "tmp": None}, "'policy' has type str"),
        ({"op": "go", "id": 1, "pool": True, "exclusive": False}, "'pool' must be int, found bool"),
        ({"op": "stats"}, "missing argument 'id'"),
        ({"op": "stats", "id": 1, "path": "/etc/shadow"}, "unexpected arguments ['path']"),
    ],
)
def test_refused(message, problem):
    with pytest.raises(ProtocolError, match=problem.replace("[", r"\[").replace("(", r"\(")):
        broker.check_request(message)


def test_known_opcodes_pass():
    assert broker.check_request({"op": "stats", "id": 3}) == "stats"
    create = {"op": "create", "id": 1, "sb": "x", "policy": {}, "tmp": None, "broker": "00"}
    assert broker.check_request(create) == "create"
    assert broker.check_request({"op": "call", "rid": 2, "target": "math.sqrt", "args": [4]}) == "call"


def test_plugin_registers_an_opcode_once(monkeypatch):
    monkeypatch.setattr(broker, "OPCODES", dict(broker.OPCODES))
    broker.register_opcode("plugin_fetch", {"id": int, "url": str, "timeout?": float})
    assert broker.check_request({"op": "plugin_fetch", "id": 1, "url": "https://x"}) == "plugin_fetch"
    with pytest.raises(ProtocolError, match="'timeout' has type int"):
        broker.check_request({"op": "plugin_fetch", "id": 1, "url": "u", "timeout": 3})
    with pytest.raises(ValueError, match="not a new identifier"):
        broker.register_opcode("plugin_fetch", {})
    with pytest.raises(ValueError):
        broker.register_opcode("create", {})


def test_the_cell_refuses_unknown_and_mistyped_requests(supervisor):
    sb = supervisor.spawn("ops")
    with pytest.raises(SandboxError, match="unknown opcode 'format_disk'"):
        sb.cell.request({"op": "format_disk"}, timeout=10)
    with pytest.raises(SandboxError, match="unexpected arguments"):
        sb.cell.request({"op": "stats", "verbose": True}, timeout=10)
    assert sb.cell.request({"op": "stats"}, timeout=10)["pid"] == sb.cell.pid  # the cell keeps serving
