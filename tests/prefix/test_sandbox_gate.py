"""The sandbox gate (cpython-patches/interp-sandbox-gate.patch), driven through the built
interpreter: `_imp._pyisolate_restrict()` in one sub-interpreter denies builtin and
extension modules and code-object construction there, and nowhere else."""

import json
import subprocess
import textwrap

DENIED = ["_ctypes", "mmap", "_socket", "_posixsubprocess"]
CODE_REFUSED = ["RuntimeError", "code object construction is not allowed in this interpreter", None]

# Runs in the built interpreter. `run_in(interp, body)` runs `body` (after PRELUDE) in a
# sub-interpreter, `run_here(body)` in the main one; `body` fills the dict `result`.
HARNESS = '''
import json
from concurrent import interpreters

PRELUDE = """
import json
result = {}
def outcome(fn):
    try:
        fn()
    except Exception as exc:
        return [type(exc).__name__, str(exc), getattr(exc, "name", None)]
    return "ok"
"""

def run_in(interp, body):
    q = interpreters.create_queue()
    interp.prepare_main(q=q)
    interp.exec(PRELUDE + body + "\\nq.put(json.dumps(result))")
    return json.loads(q.get(timeout=120))

def run_here(body):
    ns = {}
    exec(PRELUDE + body, ns)
    return json.loads(json.dumps(ns["result"]))

def restricted(*args, **kwargs):
    interp = interpreters.create()
    run_in(interp, f"import _imp; _imp._pyisolate_restrict(*{args!r}, **{kwargs!r})")
    return interp
'''


def gate(python, script):
    """Run HARNESS + `script` with the built interpreter; `script` prints one JSON value."""
    proc = subprocess.run(
        [str(python), "-I", "-B", "-c", HARNESS + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def denied(name):
    return ["ImportError", f"module '{name}' is not allowed in this interpreter", name]


IMPORTS = """
for name in ["_ctypes", "mmap", "_socket", "_posixsubprocess", "ctypes", "_json", "math", "json"]:
    result[name] = outcome(lambda: exec(f"import {name}", {}))
"""


def test_denied_modules_fail_only_in_the_restricted_interpreter(python):
    out = gate(
        python,
        f"""
        interp = restricted({DENIED!r})
        print(json.dumps({{
            "restricted": run_in(interp, {IMPORTS!r}),
            "other": run_in(interpreters.create(), {IMPORTS!r}),
            "main": run_here({IMPORTS!r}),
        }}))
        """,
    )
    for name in DENIED:
        assert out["restricted"][name] == denied(name)
    assert out["restricted"]["ctypes"] == denied("_ctypes")  # the package needs _ctypes
    for name in ("_json", "math", "json"):
        assert out["restricted"][name] == "ok"
    assert set(out["other"].values()) == {"ok"}
    assert set(out["main"].values()) == {"ok"}


BYPASSES = """
import _imp, importlib.util, importlib.machinery as m
ctypes_file = m.PathFinder.find_spec("_ctypes").origin
json_file = m.PathFinder.find_spec("_json").origin

def ext(name, path):
    return m.ModuleSpec(name, m.ExtensionFileLoader(name, path), origin=path)

def builtin(name):
    return m.ModuleSpec(name, m.BuiltinImporter, origin="built-in")

attempts = {
    "loader.create_module": lambda: m.ExtensionFileLoader("_ctypes", ctypes_file).create_module(
        ext("_ctypes", ctypes_file)),
    "module_from_spec": lambda: importlib.util.module_from_spec(ext("_ctypes", ctypes_file)),
    "create_dynamic": lambda: _imp.create_dynamic(ext("_ctypes", ctypes_file)),
    # _ctypes' file under another name still runs PyInit__ctypes
    "renamed": lambda: _imp.create_dynamic(ext("x._ctypes", ctypes_file)),
    "dashed": lambda: _imp.create_dynamic(ext("-ctypes", ctypes_file)),
    # a denied package denies its submodules
    "submodule": lambda: _imp.create_dynamic(ext("pkg._json", json_file)),
    "builtin_importer": lambda: m.BuiltinImporter.create_module(builtin("pwd")),
    "create_builtin": lambda: _imp.create_builtin(builtin("pwd")),
    "import_builtin": lambda: exec("import pwd", {}),
}
for label, attempt in attempts.items():
    result[label] = outcome(attempt)
result["allowed_extension_file"] = outcome(lambda: _imp.create_dynamic(ext("other._json", json_file)))
"""


def test_loader_and_imp_bypasses_are_denied(python):
    out = gate(
        python,
        f"""
        interp = restricted(["_ctypes", "pwd", "pkg"])
        print(json.dumps({{"restricted": run_in(interp, {BYPASSES!r}), "main": run_here({BYPASSES!r})}}))
        """,
    )
    restricted, main = out["restricted"], out["main"]
    for label in ("loader.create_module", "module_from_spec", "create_dynamic"):
        assert restricted[label] == denied("_ctypes"), label
    assert restricted["renamed"] == denied("x._ctypes")
    assert restricted["dashed"] == denied("-ctypes")
    assert restricted["submodule"] == denied("pkg._json")
    for label in ("builtin_importer", "create_builtin", "import_builtin"):
        assert restricted[label] == denied("pwd"), label
    assert restricted["allowed_extension_file"] == "ok"
    assert set(main.values()) == {"ok"}, main


def test_loaded_module_stays_but_cannot_be_created_again(python):
    out = gate(
        python,
        """
        interp = interpreters.create()
        run_in(interp, "import _ctypes")  # before the restriction
        run_in(interp, "import _imp; _imp._pyisolate_restrict(['_ctypes'])")
        print(json.dumps(run_in(interp, '''
        import sys
        result["cached"] = outcome(lambda: exec("import _ctypes", {}))
        result["in_sys_modules"] = "_ctypes" in sys.modules
        saved = sys.modules.pop("_ctypes")
        result["after_del"] = outcome(lambda: exec("import _ctypes", {}))
        sys.modules["_ctypes"] = saved
        result["put_back"] = outcome(lambda: exec("import _ctypes", {}))
        ''')))
        """,
    )
    assert out == {
        "cached": "ok",
        "in_sys_modules": True,
        "after_del": denied("_ctypes"),
        "put_back": "ok",
    }


CHECK = """
import _imp
names, forbid = _imp._pyisolate_restrictions()
result["now"] = [sorted(names), forbid]
"""


def test_restrictions_report_and_only_tighten(python):
    body = """
import _imp
def now():
    names, forbid = _imp._pyisolate_restrictions()
    return [type(names).__name__, sorted(names), forbid]
result["fresh"] = now()
_imp._pyisolate_restrict(["_ctypes"])
result["one"] = now()
_imp._pyisolate_restrict(("mmap", "_socket"), forbid_code=True)
_imp._pyisolate_restrict(iter([]), forbid_code=False)
_imp._pyisolate_restrict({"_ctypes"})
result["more"] = now()
result["str"] = outcome(lambda: _imp._pyisolate_restrict("_ctypes"))
result["bad_item"] = outcome(lambda: _imp._pyisolate_restrict(["zlib", 5]))
result["positional_flag"] = outcome(lambda: _imp._pyisolate_restrict([], True))
result["unchanged"] = now()
"""
    out = gate(
        python,
        f"""
        a, b = interpreters.create(), interpreters.create()
        result = {{"a": run_in(a, {body!r})}}
        check = {CHECK!r}
        result["b"], result["main"] = run_in(b, check), run_here(check)
        print(json.dumps(result))
        """,
    )
    a = out["a"]
    assert a["fresh"] == ["frozenset", [], False]
    assert a["one"] == ["frozenset", ["_ctypes"], False]
    assert a["more"] == ["frozenset", ["_ctypes", "_socket", "mmap"], True]
    assert a["str"][0] == "TypeError" and "iterable of str, not str" in a["str"][1]
    assert a["bad_item"][0] == "TypeError" and a["bad_item"][1].endswith("not int: 5")
    assert a["positional_flag"][0] == "TypeError"
    assert a["unchanged"] == a["more"]  # a failed call adds nothing
    assert out["b"] == out["main"] == {"now": [[], False]}


def test_concurrent_restricts_all_land(python):
    out = gate(
        python,
        """
        interp = interpreters.create()
        print(json.dumps(run_in(interp, '''
        import _imp, threading
        def add(t):
            for k in range(200):
                _imp._pyisolate_restrict([f"m{t}_{k}"], forbid_code=(k == 100))
                _imp._pyisolate_restrictions()
        threads = [threading.Thread(target=add, args=(t,)) for t in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        names, forbid = _imp._pyisolate_restrictions()
        result["count"], result["forbid"] = len(names), forbid
        ''')))
        """,
    )
    assert out == {"count": 1600, "forbid": True}


def test_restricted_interpreters_are_freed(python):
    # Create, restrict and close many interpreters, and leave some open at exit: the
    # per-interpreter state is freed with the interpreter, never used after.
    out = gate(
        python,
        f"""
        for n in range(40):
            interp = restricted([f"name{{k}}" for k in range(100)] + {DENIED!r}, forbid_code=n % 2 == 0)
            assert run_in(interp, {IMPORTS!r})["_ctypes"][0] == "ImportError"
            interp.close()
        leftover = [restricted({DENIED!r}, forbid_code=True) for _ in range(3)]
        print(json.dumps(len(interpreters.list_all())))
        """,
    )
    assert out == 4


def test_restrictions_survive_fork(python):
    # The main interpreter restricts itself (no sub-interpreters: forking with live
    # sub-interpreters crashes the child in stock 3.14.7); the child keeps the
    # restrictions and can still tighten them (its lock was re-initialised).
    out = gate(
        python,
        """
        import os, _imp
        _imp._pyisolate_restrict(["_ctypes"], forbid_code=True)
        pid = os.fork()
        if pid == 0:
            _imp._pyisolate_restrict(["mmap"])
            ok = _imp._pyisolate_restrictions() == (frozenset({"_ctypes", "mmap"}), True)
            try:
                import _ctypes
            except ImportError:
                os._exit(0 if ok else 2)
            os._exit(1)
        print(json.dumps(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])))
        """,
    )
    assert out == 0


CODE = """
import copy, io, marshal, types, _imp
def f():
    return 1
def g():
    return 2
co = g.__code__
data = marshal.dumps(co)
fields = ("co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_nlocals", "co_stacksize", "co_flags",
          "co_code", "co_consts", "co_names", "co_varnames", "co_filename", "co_name", "co_qualname",
          "co_firstlineno", "co_linetable", "co_exceptiontable", "co_freevars", "co_cellvars")
attempts = {
    "CodeType": lambda: types.CodeType(*(getattr(co, a) for a in fields)),
    "replace": lambda: co.replace(co_code=co.co_code),
    "copy.replace": lambda: copy.replace(co, co_name="h"),
    "marshal.loads": lambda: marshal.loads(data),
    "marshal.load": lambda: marshal.load(io.BytesIO(data)),
    "marshal.loads nested": lambda: marshal.loads(marshal.dumps([1, (co,)])),
    "get_frozen_object": lambda: _imp.get_frozen_object("x", data),
    "__code__": lambda: setattr(f, "__code__", g.__code__),
}
for label, attempt in attempts.items():
    result[label] = outcome(attempt)
result["allow_code=False"] = outcome(lambda: marshal.loads(data, allow_code=False))
result["f()"] = f()
ns = {}
exec(compile("def h(x):\\n    return x * 7", "<gate>", "exec"), ns)
exec("y = h(6)", ns)
result["compile+exec"] = ns["y"]
result["marshal data"] = marshal.loads(marshal.dumps({"a": [1, 2.5, "x"]}))
result["import"] = outcome(lambda: exec("import json.decoder, email.parser", {}))
result["asyncio"] = outcome(lambda: exec("import asyncio; asyncio.run(asyncio.sleep(0))", {}))
"""


def test_forbid_code_refuses_code_objects_but_compile_works(python):
    out = gate(
        python,
        f"""
        interp = restricted([], forbid_code=True)
        print(json.dumps({{
            "restricted": run_in(interp, {CODE!r}),
            "other": run_in(interpreters.create(), {CODE!r}),
            "main": run_here({CODE!r}),
        }}))
        """,
    )
    restricted = out["restricted"]
    for label in (
        "CodeType",
        "replace",
        "copy.replace",
        "marshal.loads",
        "marshal.load",
        "marshal.loads nested",
        "get_frozen_object",
        "allow_code=False",
    ):
        assert restricted[label] == CODE_REFUSED, label
    assert restricted["__code__"] == [
        "RuntimeError",
        "function.__code__ assignment is not allowed in this interpreter",
        None,
    ]
    assert restricted["f()"] == 1  # its code was not replaced
    assert restricted["compile+exec"] == 42
    assert restricted["marshal data"] == {"a": [1, 2.5, "x"]}
    assert restricted["import"] == "ok"  # pure-Python modules compile from source there
    assert restricted["asyncio"] == "ok"  # types.coroutine wraps instead of replacing code

    for unrestricted in (out["other"], out["main"]):
        for label in ("CodeType", "replace", "copy.replace", "marshal.loads", "marshal.load"):
            assert unrestricted[label] == "ok", label
        assert unrestricted["marshal.loads nested"] == unrestricted["get_frozen_object"] == "ok"
        assert unrestricted["__code__"] == "ok" and unrestricted["f()"] == 2
        assert unrestricted["allow_code=False"][0] == "ValueError"
        assert unrestricted["compile+exec"] == 42
        assert unrestricted["import"] == unrestricted["asyncio"] == "ok"
