"""Source run INSIDE each sandbox interpreter, once, before any guest code.

The cell never imports this module; it reads this file's text and executes it in the
new sub-interpreter, so every object the guest can reach (post, the import gate, the
audit hook) is defined inside the guest's own interpreter: nothing of the cell's or the
supervisor's is reachable from it.

It restricts the interpreter in this order:
 1. the C-level gate (cpython-patches/interp-sandbox-gate.patch), when the interpreter
    has it: denied builtin/extension modules can never be created, code objects can
    never be built from raw bytes;
 2. no bytecode from files: imports compile from source (a crafted .pyc is bytecode);
 3. an audit hook enforcing the policy's filesystem, network, process and module rules;
 4. post(), and the loop that serves the supervisor's requests (exec, call, run) over
    the sandbox's own socket: the sandbox's thread stays inside its interpreter, so a
    request costs a socket round trip, not an interpreter switch;
 5. builtins shrink-wrapped and `__import__` replaced by the policy's import gate.

The hook keeps all its state in default arguments bound to C functions and immutable
data: a guest that reaches the hook's frame or globals finds nothing it can change, and
changing the hook's `__defaults__`/`__code__` raises an audit event the hook refuses.
This Python layer is defence in depth; the kernel layers (seccomp, Landlock, eBPF) are
what the security contract rests on.
"""


def __pyisolate_boot__(config_json):
    import _imp
    import builtins
    import json
    import posix
    import sys

    cfg = json.loads(config_json)
    policy = cfg["policy"]
    fd = cfg["fd"]
    stdlib_root = cfg["stdlib"]
    deny = tuple(policy["modules_deny"])
    enabled_builtins = frozenset(policy["builtins_enable"])

    # What the boot itself needs, imported while the distribution's trusted bytecode
    # may still be used (once code construction is forbidden, imports compile from source).
    import _thread
    import io as _io_module
    import os.path
    import traceback

    if cfg.get("tmp"):  # the sandbox's private temporary directory, when it has one
        import tempfile

        tempfile.tempdir = cfg["tmp"]

    # Modules the warm pool pre-imported that this policy denies are dropped.
    for name in list(sys.modules):
        if any(name == d or name.startswith(d + ".") for d in deny):
            del sys.modules[name]

    # The rule book (read-only; see step 3), mapped before the gate refuses `mmap`, whose
    # module then leaves sys.modules: the guest's imports of it stay refused.
    import functools
    import mmap
    import struct

    book = mmap.mmap(cfg["rules_fd"], cfg["rules_size"], mmap.MAP_SHARED, mmap.PROT_READ)
    posix.close(cfg["rules_fd"])
    if "mmap" in deny:
        del sys.modules["mmap"]

    # 1. The C-level gate, when this build has it.
    restrict = getattr(_imp, "_pyisolate_restrict", None)
    if restrict is not None:
        restrict(deny, forbid_code=True)

    # 2. Imports compile from source; nothing reads or writes .pyc files from here on.
    sys.dont_write_bytecode = True
    sys.pycache_prefix = "/nonexistent/pyisolate-no-bytecode"

    # 3. The audit hook.
    def _norm(
        path,
        _isinstance=isinstance,
        _str=str,
        _bytes=bytes,
        _fspath=posix.fspath,
        _getcwd=posix.getcwd,
        _fsdecode=bytes.decode,
    ):
        """Lexically normalised absolute path (no symlink resolution: creating links is
        refused, and the kernel layers check the real path)."""
        path = _fspath(path)
        if _isinstance(path, _bytes):
            path = _fsdecode(path, "utf-8", "surrogateescape")
        if not path.startswith("/"):
            path = _getcwd() + "/" + path
        parts = []
        for part in path.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(part)
        return "/" + "/".join(parts)

    def _under(path, roots):
        for root in roots:
            if root == "/" or path == root or path.startswith(root + "/"):
                return True
        return False

    def both_forms(paths):
        # Each root as written and with symlinks resolved: the hook compares lexically.
        out = []
        for path in paths:
            for form in (_norm(path), os.path.realpath(path)):
                if form not in out:
                    out.append(form)
        return tuple(out)

    stdlib_roots = both_forms([stdlib_root])

    # The policy's rules, current version: read from the rule book (pyisolate/rulebook.py),
    # a memfd the cell writes and this interpreter maps read-only. Its descriptor is
    # closed here, before any guest code runs. Each check calls `current()` once and
    # decides with that one immutable tuple: a reload switches versions between checks,
    # never inside one.
    header, slot_size = cfg["rules_layout"]
    gen_at = struct.Struct("<Q").unpack_from
    slot_at = struct.Struct("<QI16s").unpack_from

    class Stale(Exception):
        pass

    def rules_from(wire, gen):
        read = both_forms(list(wire["fs_read"]) + list(wire["fs_write"]) + [stdlib_root])
        connect = tuple((h, p) for h, p in wire["net_connect"])
        deny_now = tuple(wire["modules_deny"])
        allow_now = tuple(wire["modules_allow"])
        no_ctypes = bool({"ctypes", "_ctypes", "cffi"} & set(deny_now))
        return (gen, read, both_forms(wire["fs_write"]), connect, bool(connect), deny_now, allow_now, no_ctypes)

    @functools.lru_cache(maxsize=4)
    def rules_at(gen, tag, *, _loads=json.loads):
        # Keyed by (generation, random tag): a guest calling this can only cache the
        # version the book holds now, under its real key.
        base = header + (gen % 2) * slot_size
        held, length, held_tag = slot_at(book, base)
        if held != gen or held_tag != tag:
            raise Stale
        body = book[base + 28 : base + 28 + length]
        if gen_at(book, base)[0] != gen:
            raise Stale
        return rules_from(_loads(body), gen)

    def current(*, _gen_at=gen_at, _slot_at=slot_at, _rules_at=rules_at, _Stale=Stale, _range=range):
        for _ in _range(10000):
            gen = _gen_at(book, 8)[0]
            held, _length, tag = _slot_at(book, header + (gen % 2) * slot_size)
            if held != gen or gen == 0:
                continue
            try:
                return _rules_at(gen, tag)
            except _Stale:
                continue
        raise PermissionError("sandbox: the policy could not be read; refusing")

    current()  # the first version must be readable before anything runs
    write_flags = posix.O_WRONLY | posix.O_RDWR | posix.O_APPEND | posix.O_CREAT | posix.O_TRUNC
    read_events = frozenset(
        {
            "os.listdir",
            "os.scandir",
            "glob.glob",
            "glob.glob/2",
            "os.chdir",
            "os.getxattr",
            "os.listxattr",
            "shutil.copyfile/src",
        }
    )
    write_events = frozenset(
        {
            "os.remove",
            "os.rmdir",
            "os.mkdir",
            "os.chmod",
            "os.chown",
            "os.truncate",
            "os.utime",
            "os.rename",
            "os.setxattr",
            "os.removexattr",
            "os.chflags",
            "os.lchflags",
            "os.lchmod",
            "os.mkfifo",
            "os.mknod",
            "shutil.chown",
            "shutil.copymode",
            "shutil.copystat",
            "shutil.copytree",
            "shutil.rmtree",
            "shutil.move",
            "shutil.make_archive",
            "shutil.unpack_archive",
            "tempfile.mkstemp",
            "tempfile.mkdtemp",
        }
    )
    denied_events = frozenset(
        {
            "os.system",
            "os.exec",
            "os.posix_spawn",
            "os.spawn",
            "os.fork",
            "os.forkpty",
            "os.kill",
            "os.killpg",
            "os.startfile",
            "os.link",
            "os.symlink",
            "os.putenv",
            "os.unsetenv",
            "subprocess.Popen",
            "pty.spawn",
            "socket.bind",
            "socket.sendto",
            "socket.sendmsg",
            "code.__new__",
            "sys.setprofile",
            "sys.settrace",
            "sys._setprofileallthreads",
            "sys._settraceallthreads",
            "sys.remote_exec",
            "sys._current_frames",
            "sys._current_exceptions",
            "gc.get_objects",
            "gc.get_referrers",
            "gc.get_referents",
            "mmap.__new__",
            "fcntl.ioctl",
            "fcntl.fcntl",
            "fcntl.flock",
            "fcntl.lockf",
            "cpython.remove_audit_hook",
            "cpython._PySys_ClearAuditHooks",
            "_interpreters.create",
            "os.setns",
            "os.unshare",
            "resource.setrlimit",
            "resource.prlimit",
            "signal.pthread_kill",
            "sys.monitoring.register_callback",
        }
    )
    net_events = frozenset(
        {
            "socket.__new__",
            "socket.getaddrinfo",
            "socket.gethostbyname",
            "socket.gethostbyaddr",
            "socket.gethostname",
            "socket.getnameinfo",
            "socket.getservbyname",
            "socket.getservbyport",
            "socket.sethostname",
        }
    )

    def hook(
        event,
        args,
        *,
        _current=current,
        _stdlib=stdlib_roots,
        _wflags=write_flags,
        _reads=read_events,
        _writes=write_events,
        _denied=denied_events,
        _nets=net_events,
        _policy_events=frozenset({"open", "import", "socket.connect"}) | read_events | write_events | net_events,
        _norm=_norm,
        _under=_under,
        _isinstance=isinstance,
        _int=int,
        _str=str,
        _function=type(_norm),
        _tuple=tuple,
        _bytes=bytes,
        _hasattr=hasattr,
        _len=len,
        _static_no_ctypes=bool({"ctypes", "_ctypes", "cffi"} & set(deny)),
        _PermissionError=PermissionError,
    ):
        if event in _denied:
            raise _PermissionError(f"sandbox: {event} is not allowed")
        if event not in _policy_events:
            if _static_no_ctypes and (event.startswith("ctypes.") or event.startswith("cffi.")):
                raise _PermissionError(f"sandbox: {event} is not allowed")
            if event in ("object.__setattr__", "object.__delattr__") and _isinstance(args[0], _function):
                raise _PermissionError(f"sandbox: changing {args[1]} of a function is not allowed")
            return
        # One version of the rules for the whole check.
        version, _read, _write, _connect, _net, _deny, _allow, _no_ctypes = _current()
        if event == "open":
            path, mode, flags = args
            if _isinstance(path, _int):
                if path <= 2:  # os.fdopen(0/1/2) and friends
                    return
                raise _PermissionError(f"sandbox: opening file descriptor {path} is not allowed")
            p = _norm(path)
            writing = bool(flags & _wflags) if _isinstance(flags, _int) else False
            if _isinstance(mode, _str):
                writing = writing or "w" in mode or "a" in mode or "x" in mode or "+" in mode
            if writing:
                if not _under(p, _write):
                    raise _PermissionError(f"sandbox: writing {p} is not allowed by the policy (version {version})")
            elif not _under(p, _read):
                raise _PermissionError(f"sandbox: reading {p} is not allowed by the policy (version {version})")
            elif p.endswith(".pyc") and not _under(p, _stdlib):
                raise _PermissionError(f"sandbox: loading bytecode from {p} is not allowed")
            return
        if event == "import":
            name = args[0]
            for d in _deny:
                if name == d or name.startswith(d + "."):
                    raise _PermissionError(
                        f"sandbox: import of {name!r} is not allowed by the policy (version {version})"
                    )
            return
        if event in _writes:
            for arg in args[:2]:
                if _isinstance(arg, (_str, _bytes)) or _hasattr(arg, "__fspath__"):
                    p = _norm(arg)
                    if not _under(p, _write):
                        raise _PermissionError(
                            f"sandbox: {event} on {p} is not allowed by the policy (version {version})"
                        )
            return
        if event in _reads:
            if args and args[0] is not None and not _isinstance(args[0], _int):
                p = _norm(args[0])
                if not _under(p, _read):
                    raise _PermissionError(f"sandbox: {event} on {p} is not allowed by the policy (version {version})")
            return
        if event == "socket.connect":
            address = args[1]
            if _isinstance(address, _tuple) and _len(address) >= 2:
                host, port = _str(address[0]), _str(address[1])
                for rule_host, rule_port in _connect:
                    if rule_host in ("*", host) and rule_port in ("*", port):
                        return
            raise _PermissionError(
                f"sandbox: connecting to {address!r} is not allowed by the policy (version {version})"
            )
        if event in _nets:
            if not _net:
                raise _PermissionError(
                    f"sandbox: {event} is not allowed (the policy grants no network; version {version})"
                )
            return

    sys.addaudithook(hook)

    # 4. The channel to the supervisor: post(), and the loop that serves its requests.
    #    Frames are a 4-byte big-endian length and a JSON object, both ways.
    def send(message, *, _dumps=json.dumps, _write=posix.write, _fd=fd, _lock=_thread.allocate_lock()):
        payload = _dumps(message, allow_nan=False).encode()
        frame = len(payload).to_bytes(4, "big") + payload
        with _lock:
            view = memoryview(frame)
            while view:
                view = view[_write(_fd, view) :]

    def post(value, *, _send=send):
        """Send a plain-data value (JSON-compatible) to whoever holds this sandbox."""
        try:
            _send({"k": "post", "v": value})
        except (TypeError, ValueError) as exc:
            raise TypeError(f"post() takes plain data (JSON-compatible): {exc}") from None

    def read_exact(n, *, _read=posix.read, _fd=fd):
        chunks, got = [], 0
        while got < n:
            chunk = _read(_fd, n - got)
            if not chunk:
                return None
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def failure(exc):
        # The first frame is this loop's own: drop it, the traceback starts in guest code.
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next))
        return {"type": type(exc).__name__, "msg": str(exc), "tb": text}

    def resolve(target):
        module_name, _, attr = target.rpartition(".")
        obj = builtins if module_name in ("", "builtins") else __import__(module_name)
        for part in module_name.split(".")[1:]:
            obj = getattr(obj, part)
        return getattr(obj, attr)

    def serve(*, _loads=json.loads, _exec=exec, _compile=compile, _max=16 << 20):
        main = sys.modules["__main__"]
        send({"k": "ready"})
        while True:
            try:
                header = read_exact(4)
            except BaseException as exc:
                # A watchdog interrupt that arrived after its request ended fires here and
                # costs the supervisor's drain frame (an empty one sent for this purpose).
                if type(exc).__name__ != "QuotaExceeded":
                    raise
                continue
            if header is None:
                return
            size = int.from_bytes(header, "big")
            if size == 0:  # the drain frame
                continue
            body = read_exact(size) if size <= _max else None
            if body is None:
                return
            request = _loads(body)
            op, rid = request.get("op"), request.get("rid")
            if op == "close":
                return
            try:
                if op == "exec":
                    _exec(_compile(request["code"], "<sandbox>", "exec"), main.__dict__)
                    value = None
                elif op == "call":
                    value = resolve(request["target"])(*request["args"])
                elif op == "run":
                    run(request["mode"], request["target"], request["argv"])
                    continue
                else:
                    raise ValueError(f"unknown request {op!r}")
            except BaseException as exc:
                send({"k": "err", "rid": rid, "error": failure(exc)})
                continue
            try:
                send({"k": "ret", "rid": rid, "v": value})
            except BaseException as exc:
                if type(exc).__name__ != "QuotaExceeded" and not isinstance(exc, (TypeError, ValueError)):
                    raise
                if type(exc).__name__ == "QuotaExceeded":  # interrupted on the way out
                    send({"k": "err", "rid": rid, "error": failure(exc)})
                    continue
                what = request.get("target", "the code")
                message = f"{what} returned {type(value).__name__}, which is not plain data: {exc}"
                send({"k": "err", "rid": rid, "error": {"type": "TypeError", "msg": message, "tb": ""}})

    def run(mode, target, argv):
        """The pyisolate-python entry point: run a script, -c code, -m module or stdin,
        and post the exit status the way python3 would compute it."""
        main = sys.modules["__main__"]
        sys.argv = list(argv)
        code = 0
        try:
            try:
                if mode == "module":
                    import runpy

                    sys.path.insert(0, posix.getcwd())
                    runpy.run_module(target, run_name="__main__", alter_sys=True)
                else:
                    if mode == "file":
                        with builtins.__dict__.get("open", _io_open)(target, "rb") as f:
                            source = f.read()
                        filename = target
                        sys.path.insert(0, target.rpartition("/")[0] or ".")
                        main.__file__ = target
                    elif mode == "code":
                        source, filename = target, "<string>"
                        sys.path.insert(0, "")
                    else:
                        source, filename = sys.stdin.read(), "<stdin>"
                        sys.path.insert(0, "")
                    exec(compile(source, filename, "exec"), main.__dict__)
            except SystemExit as exc:
                if exc.code is None:
                    code = 0
                elif isinstance(exc.code, int):
                    code = exc.code
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
            except BaseException as exc:
                # Drop this runner's own frames: the traceback reads as python3's would.
                tb = exc.__traceback__
                while tb is not None and tb.tb_frame.f_code.co_filename == "<pyisolate-guest>":
                    tb = tb.tb_next
                if type(exc).__name__ != "QuotaExceeded":  # the launcher says that in one line
                    traceback.print_exception(type(exc), exc, tb)
                code = 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
        post({"exit": code})

    _io_open = _io_module.open  # the launcher opens the script even when open() is removed

    # 5. Builtins and the import gate.
    real_import = builtins.__import__

    def gated_import(
        name,
        globals=None,
        locals=None,
        fromlist=(),
        level=0,
        *,
        _real=real_import,
        _current=current,
        _stdlib=tuple(root + "/" for root in stdlib_roots),
        _ImportError=ImportError,
        _isinstance=isinstance,
        _any_of=any,
    ):
        if level == 0:
            version, _r, _w, _c, _n, _deny, _allow, _x = _current()
            for d in _deny:
                if name == d or name.startswith(d + "."):
                    raise _ImportError(
                        f"import of {name!r} is not allowed by the sandbox policy (version {version})", name=name
                    )
            importer = (globals or {}).get("__file__") or ""
            from_stdlib = _isinstance(importer, str) and importer.startswith(_stdlib)
            if not ("*" in _allow or from_stdlib):
                top = name.partition(".")[0]
                if not _any_of(name == a or top == a or name.startswith(a + ".") for a in _allow):
                    raise _ImportError(
                        f"import of {name!r} is not in the sandbox policy's allow list (version {version})", name=name
                    )
        return _real(name, globals, locals, fromlist, level)

    for removed in ("open", "breakpoint", "help", "input", "exit", "quit", "copyright", "credits", "license"):
        if removed not in enabled_builtins:
            builtins.__dict__.pop(removed, None)
    builtins.__import__ = gated_import
    builtins.post = post
    return serve


# Boot, forget the boot's names, then serve until the supervisor closes the sandbox.
__pyisolate_serve__ = __pyisolate_boot__(__pyisolate_config__)
del __pyisolate_boot__, __pyisolate_config__
__pyisolate_serve__()
