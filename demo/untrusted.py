"""An "untrusted" script: does some honest work, then tries what a hostile script would.

Run it both ways and compare:
    out/dist/current/bin/python3 demo/untrusted.py            # plain interpreter
    out/dist/current/bin/pyisolate-python demo/untrusted.py   # sandboxed
"""

import json
import os
import statistics
import sys


def attempt(label, action):
    try:
        result = action()
    except Exception as exc:
        print(f"  blocked  {label:44} {type(exc).__name__}: {exc}")
    else:
        print(f"  ALLOWED  {label:44} {str(result)[:40]!r}")


print(f"honest work: mean={statistics.mean([3, 1, 4, 1, 5])}, json={json.dumps({'argv': sys.argv[1:]})}")
here = os.path.dirname(os.path.abspath(__file__))
attempt("read this script's own directory", lambda: sorted(os.listdir(here))[:3])
attempt("read /etc/passwd", lambda: open("/etc/passwd").read())
attempt("read ~/.ssh via os.open", lambda: os.open(os.path.expanduser("~/.ssh/id_rsa"), os.O_RDONLY))


def write_next_to_script():
    path = os.path.join(here, "pwned.txt")
    with open(path, "w") as f:
        written = f.write("x")
    os.remove(path)  # the plain run gets this far; leave the checkout as it was
    return written


attempt("write next to the script", write_next_to_script)
attempt("run a process (os.system)", lambda: os.system("id"))
attempt("run a process (subprocess)", lambda: __import__("subprocess").run(["id"]))
attempt("open a network socket", lambda: __import__("socket").create_connection(("127.0.0.1", 22)))
attempt("load native code (ctypes)", lambda: __import__("ctypes").CDLL(None))
raw_file_class = type(getattr(sys.stdout.buffer, "raw", sys.stdout.buffer))
attempt("recover a raw file class from sys.stdout", lambda: raw_file_class("/etc/shadow").read()[:8])
attempt(
    "reach os.open through a subclass walk",
    lambda: next(c for c in object.__subclasses__() if c.__name__ == "_wrap_close").__init__.__globals__["open"](
        "/etc/shadow", 0
    ),
)
