"""Recompile a tree's .pyc files so their bytes depend only on the sources.

    BUILT_PYTHON -S bytecode.py ROOT RECORDED_ROOT [--hash]

Run by the build with the interpreter it just built (stdlib only). marshal marks an
object for back-references when its reference count is above one at dump time, and in a
long compile run that count depends on everything the process did before, including
when the cyclic garbage collector happened to run (which depends on allocation counts,
so on the environment's size). Here the collector is off, runs explicitly after every
file, and files are compiled in sorted order in one process: the same sources give the
same bytes. RECORDED_ROOT replaces ROOT in the file names stored in the code objects.
"""

import gc
import os
import py_compile
import sys


def main(argv: list[str]) -> int:
    root, recorded = argv[1].rstrip("/"), argv[2].rstrip("/")
    mode = py_compile.PycInvalidationMode.CHECKED_HASH if "--hash" in argv else py_compile.PycInvalidationMode.TIMESTAMP
    gc.disable()
    compiled = skipped = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            dfile = recorded + path[len(root) :]
            try:
                for level in (0, 1, 2):
                    py_compile.compile(path, dfile=dfile, doraise=True, optimize=level, invalidation_mode=mode)
                compiled += 1
            except py_compile.PyCompileError:
                skipped += 1  # CPython's deliberately broken test inputs (badsyntax_*, bad_coding*)
            gc.collect()
    print(f"compiled {compiled} files, skipped {skipped} that do not compile")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
