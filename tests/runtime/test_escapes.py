"""Escape corpus: known ways out of Python-level sandboxes, each run in a real sandbox.

Every attempt must fail to read a secret file, write outside the policy, run a process,
connect out, or turn a recovered `open`/`__import__` into any of those. A secret token,
a marker path and a listening socket detect success from the outside, so an attempt
that "fails" by returning something else still cannot pass unnoticed.
"""

import os
import secrets
import socket
import textwrap
import threading

import pytest

from pyisolate.errors import SandboxError

# Each snippet may use SECRET (a file outside the policy), MARK (a path it must not be
# able to create), PORT (a listening TCP port on 127.0.0.1). Whatever it gets, it posts.
CORPUS = {
    "subclass-walk-os-open": """
        for c in ().__class__.__base__.__subclasses__():
            if c.__name__ == "_wrap_close":
                g = c.__init__.__globals__
                fd = g["open"](SECRET, g["O_RDONLY"])
                post(g["read"](fd, 100).decode())
    """,
    "subclass-walk-os-system": """
        for c in ().__class__.__base__.__subclasses__():
            if c.__name__ == "_wrap_close":
                post(c.__init__.__globals__["system"]("touch " + MARK))
    """,
    "subclass-walk-fileio": """
        for c in ().__class__.__base__.__subclasses__():
            if c.__name__ == "FileIO":
                post(c(SECRET).read().decode())
    """,
    "func-globals-builtins": """
        b = (lambda: 0).__globals__["__builtins__"]
        b = b if isinstance(b, dict) else b.__dict__
        post(b["open"](SECRET).read())
    """,
    "module-builtins-of-stdlib": """
        import json
        post(json.__builtins__["open"](SECRET).read())
    """,
    "post-globals-and-defaults": """
        g = post.__globals__
        assert g is __import__("sys").modules["__main__"].__dict__, "post must live in the guest's own main"
        post(sorted(k for k in g if not k.startswith("__")))
        post(g["__builtins__"].__dict__["open"](SECRET).read())
    """,
    "frame-walk-getframe": """
        import sys
        f = sys._getframe(0)
        while f.f_back is not None:
            f = f.f_back
        post(sorted(f.f_globals)[:50])
        post(f.f_builtins["open"](SECRET).read())
    """,
    "frame-walk-generator": """
        def gen():
            yield
        g = gen()
        next(g)
        post(g.gi_frame.f_builtins["open"](SECRET).read())
    """,
    "frame-walk-traceback-into-audit-hook": """
        import io
        try:
            io.open(SECRET)
        except PermissionError as exc:
            tb = exc.__traceback__
            while tb.tb_next:
                tb = tb.tb_next
            hook_frame = tb.tb_frame
            hook_frame.f_locals["_read"] = ("/",)       # a dead frame: changes nothing
            for name, value in hook_frame.f_locals.items():
                if callable(value) and hasattr(value, "__defaults__"):
                    try:
                        value.__defaults__ = None            # refused by the hook
                    except PermissionError:
                        pass
        post(io.open(SECRET).read())
    """,
    "coroutine-frame": """
        async def co():
            pass
        c = co()
        f = c.cr_frame
        c.close()
        post(f.f_builtins["open"](SECRET).read())
    """,
    "gc-get-objects": """
        gc = __import__("gc")
        post([o for o in gc.get_objects() if getattr(o, "__name__", "") == "open"][0](SECRET).read())
    """,
    "gc-via-sys-modules": """
        import sys
        gc = sys.modules.get("gc") or __import__("importlib").import_module("gc")
        post(len(gc.get_objects()))
    """,
    "str-format-walk": """
        walked = "{0.__class__.__base__.__subclasses__}".format(())
        wrap = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "_wrap_close"][0]
        os_open = "{0.__init__.__globals__[open]}".format(wrap)
        post(walked[:20] + os_open[:30])
        post(wrap.__init__.__globals__["open"](SECRET, 0))
    """,
    "random-reexports-os": """
        import random
        post(random._os.read(random._os.open(SECRET, 0), 100).decode())
    """,
    "random-os-system": """
        import random
        post(random._os.system("touch " + MARK))
    """,
    "importlib-import-module": """
        import importlib
        post(importlib.import_module("subprocess").run(["touch", MARK]).returncode)
    """,
    "importlib-gcd-import": """
        import importlib._bootstrap as b
        post(b._gcd_import("_posixsubprocess").__name__)
    """,
    "frozen-importlib-import": """
        import sys
        fi = sys.modules["_frozen_importlib"]
        post(fi.__import__("socket").socket().connect(("127.0.0.1", PORT)))
    """,
    "sys-modules-planting": """
        import sys
        sys.modules["socket"] = None
        del sys.modules["socket"]
        import socket
        post(socket.create_connection(("127.0.0.1", PORT)).fileno())
    """,
    "builtin-importer-create-module": """
        import sys
        fi = sys.modules["_frozen_importlib"]
        spec = fi.ModuleSpec("_posixsubprocess", fi.BuiltinImporter)
        for name in ("_posixsubprocess", "_socket", "faulthandler", "_signal"):
            try:
                post(str(fi.BuiltinImporter.create_module(fi.ModuleSpec(name, fi.BuiltinImporter))))
            except (ImportError, PermissionError):
                pass
        mod = fi.BuiltinImporter.create_module(spec)
        post(mod.fork_exec)
    """,
    "extension-loader-create-module": """
        import sys, os
        fe = sys.modules["_frozen_importlib_external"]
        d = os.path.dirname(os.__file__) + "/lib-dynload/"
        for name in ("_posixsubprocess", "_socket", "_ctypes", "mmap"):
            path = [d + f for f in os.listdir(d) if f.startswith(name + ".")][0]
            loader = fe.ExtensionFileLoader(name, path)
            spec = sys.modules["_frozen_importlib"].spec_from_loader(name, loader)
            mod = loader.create_module(spec)
            post(name + " loaded")
    """,
    "imp-create-dynamic": """
        import sys, os, _imp
        fi = sys.modules["_frozen_importlib"]
        d = os.path.dirname(os.__file__) + "/lib-dynload/"
        path = [d + f for f in os.listdir(d) if f.startswith("_socket.")][0]
        spec = fi.ModuleSpec("_socket", None, origin=path)
        post(str(_imp.create_dynamic(spec)))
    """,
    "code-object-construction": """
        co = (lambda: 0).__code__
        post(str(type(co)(*[getattr(co, a) for a in ("co_argcount", "co_posonlyargcount",
            "co_kwonlyargcount", "co_nlocals", "co_stacksize", "co_flags", "co_code", "co_consts",
            "co_names", "co_varnames", "co_filename", "co_name", "co_qualname", "co_firstlineno",
            "co_linetable", "co_exceptiontable")])))
    """,
    "code-replace-bytecode": """
        co = (lambda: 0).__code__
        post(str(co.replace(co_code=b"\\x00" * len(co.co_code))))
    """,
    "marshal-crafted-code": """
        import importlib._bootstrap_external as be
        data = be.marshal.dumps((lambda: 0).__code__)
        post(str(be.marshal.loads(data)))
    """,
    "function-code-swap": """
        def f(): return 1
        def g(): return open(SECRET).read()
        f.__code__ = g.__code__
        post(f())
    """,
    "write-outside": """
        import io
        io.open(MARK, "w").write("x")
    """,
    "os-write-outside": """
        import os
        os.close(os.open(MARK, os.O_WRONLY | os.O_CREAT))
    """,
    "rename-mkdir-symlink": """
        import os
        for op in (lambda: os.mkdir(MARK), lambda: os.symlink(SECRET, MARK), lambda: os.rename(SECRET, MARK)):
            try:
                op()
            except PermissionError:
                pass
        post(os.path.exists(MARK))
    """,
    "fork-exec-spawn": """
        import os
        for op in (os.fork, lambda: os.posix_spawn("/bin/touch", ["touch", MARK], {}),
                   lambda: os.execv("/bin/touch", ["touch", MARK]), lambda: os.popen("touch " + MARK)):
            try:
                post(op())
            except PermissionError:
                pass
    """,
    "connect-out-stdlib": """
        import urllib.request
        post(urllib.request.urlopen(f"http://127.0.0.1:{PORT}/").read().decode())
    """,
    "fd-of-stdio-reopen": """
        import os
        post(os.fdopen(3).read())
    """,
    "recover-real-open": """
        import io, _io, sys
        for candidate in (io.open, _io.open, sys.stdout.buffer.raw.__class__, _io.FileIO, open):
            try:
                post(candidate(SECRET).read())
            except (PermissionError, NameError):
                pass
    """,
    "recover-real-import": """
        import sys
        real = sys.modules["_frozen_importlib"].__import__
        for name in ("ctypes", "_ctypes", "mmap", "pickle", "subprocess", "_socket"):
            try:
                post(real(name).__name__)
            except (ImportError, PermissionError):
                pass
        post("ctypes" in sys.modules)
    """,
}


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    secret_dir = tmp_path_factory.mktemp("secret")
    token = secrets.token_hex(16)
    (secret_dir / "secret.txt").write_text(token)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    accepted = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                accepted.append(conn)
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield {
        "secret": str(secret_dir / "secret.txt"),
        "token": token,
        "mark": str(secret_dir / "MARK"),
        "port": listener.getsockname()[1],
        "accepted": accepted,
    }
    stop.set()
    thread.join()
    listener.close()


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_escape_attempt_fails(supervisor, targets, name):
    sandbox = supervisor.spawn(f"esc-{name}", "stdlib-readonly")
    prelude = f"SECRET = {targets['secret']!r}\nMARK = {targets['mark']!r}\nPORT = {targets['port']}\n"
    outcome = []
    try:
        sandbox.exec(prelude + textwrap.dedent(CORPUS[name]), timeout=60)
        outcome.append("completed")
    except SandboxError as exc:
        outcome.append(f"{exc.type_name}: {exc.message}")
    while True:
        try:
            outcome.append(repr(sandbox.recv(timeout=0.05)))
        except Exception:
            break
    text = "\n".join(outcome)
    assert targets["token"] not in text, f"{name} read the secret: {text}"
    assert not os.path.exists(targets["mark"]), f"{name} created {targets['mark']}: {text}"
    assert not targets["accepted"], f"{name} connected out: {text}"
    assert "loaded" not in text and "fork_exec" not in text, f"{name} loaded a forbidden module: {text}"
    assert "code object" not in text or "not allowed" in text, f"{name} built a code object: {text}"
    assert "'ctypes' in" not in text
    sandbox.close()


def test_policy_allows_what_it_grants(supervisor, tmp_path):
    """The same mechanisms let through what the policy grants (so the corpus fails for
    the right reason): default-script reads its script dir and writes its temp dir."""
    (tmp_path / "data.txt").write_text("visible")
    sb = supervisor.spawn("granted", "default-script", script_dir=str(tmp_path))
    sb.exec(
        f"post(open({str(tmp_path / 'data.txt')!r}).read())\nimport tempfile, os\nd = tempfile.gettempdir()\npost(d)\n"
    )
    assert sb.recv(timeout=10) == "visible"
    tmp = sb.policy.fs_write[0]
    assert sb.recv(timeout=10) == tmp  # tempfile uses the sandbox's private directory
    sb.exec(f"p = {tmp!r} + '/out.txt'\nopen(p, 'w').write('ok')\npost(open(p).read())")
    assert sb.recv(timeout=10) == "ok"
    with pytest.raises(SandboxError, match=r"writing .* is not allowed"):
        sb.exec(f"open({str(tmp_path / 'nope.txt')!r}, 'w')")
    assert not (tmp_path / "nope.txt").exists()


def test_garbage_on_inherited_fds_cannot_hurt_the_supervisor(supervisor):
    """A guest that writes junk to every descriptor of its cell (the supervisor channel
    among them) breaks only its own cell; the supervisor keeps serving others."""
    victim = supervisor.spawn("junk", tenant="junk")
    other = supervisor.spawn("ok", tenant="other")
    try:
        victim.exec(
            "import posix\nfor fd in range(3, 64):\n    try: posix.write(fd, b'\\xff' * 64)\n    except OSError: pass",
            timeout=10,
        )
    except Exception:
        pass
    assert other.call("operator.add", 20, 22) == 42
