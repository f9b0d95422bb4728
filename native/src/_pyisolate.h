/* _pyisolate: PyIsolate's kernel guards, as functions the cell calls (never the guest).
 *
 *   landlock.c         Landlock: ABI query, and a ruleset restricting the calling thread
 *   seccomp_filters.c  seccomp (libseccomp): the per-sandbox-thread allow-list and the
 *                      cell's process-wide base filter
 *   bpf_guard.c        the loader of bpf/guard.bpf.c (libbpf, its skeleton): open+load
 *                      verified bytes, attach, marks and rules in its maps, denial events
 *   bpf_lsm.c          the loader of bpf/lsm.bpf.c (mode `full`), the same way
 *   bpf_common.c       what both loaders share: libbpf log capture, phase errors, the
 *                      capsule's loader (lock, ring buffer of denials, close)
 *   crash_guard.c      fault handlers on alternate stacks, a report, then the cell ends
 *   noise_*.c, broker_*.c  the sealed broker (docs/broker-protocol.md) over libsodium,
 *                      linked statically; broker_py.c adds its types and functions
 *   _pyisolate.c       the module: method table, multi-phase init (main interpreter only)
 */
#ifndef PYISOLATE_NATIVE_H
#define PYISOLATE_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if !defined(__x86_64__)
#error "PyIsolate's kernel guards are written for x86-64 (AUDIT_ARCH_X86_64) only so far"
#endif

PyObject *pyi_landlock_abi(PyObject *module, PyObject *unused);
PyObject *pyi_landlock_restrict_thread(PyObject *module, PyObject *args, PyObject *kwargs);

PyObject *pyi_seccomp_api_level(PyObject *module, PyObject *unused);
PyObject *pyi_seccomp_restrict_thread(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *pyi_seccomp_cell_filter(PyObject *module, PyObject *unused);
PyObject *pyi_seccomp_describe(PyObject *module, PyObject *args, PyObject *kwargs);

PyObject *pyi_bpf_guard_open(PyObject *module, PyObject *obj);
PyObject *pyi_bpf_guard_attach(PyObject *module, PyObject *args);
PyObject *pyi_bpf_guard_mark_task(PyObject *module, PyObject *args);
PyObject *pyi_bpf_guard_task_mark(PyObject *module, PyObject *args);
PyObject *pyi_bpf_guard_unmark_task(PyObject *module, PyObject *args);
PyObject *pyi_bpf_guard_mark_cgroup(PyObject *module, PyObject *args);
PyObject *pyi_bpf_guard_rule(PyObject *module, PyObject *args);
PyObject *pyi_bpf_guard_rule_set(PyObject *module, PyObject *args);
PyObject *pyi_bpf_guard_events(PyObject *module, PyObject *guard);
PyObject *pyi_bpf_guard_counters(PyObject *module, PyObject *guard);
PyObject *pyi_bpf_guard_close(PyObject *module, PyObject *guard);
PyObject *pyi_bpf_probe_lsm(PyObject *module, PyObject *unused);

/* The BPF loader's entries of the method table (bpf_guard.c; used by pyisolate/bpf.py). */
#define PYI_BPF_GUARD_METHODS \
    {"bpf_guard_open", pyi_bpf_guard_open, METH_O, \
     "bpf_guard_open(obj: bytes | (bytes, exec_kill: bool)) -> guard\n\nOpen and load guard.bpf.o from its " \
     "(verified) bytes; exec_kill=False never loads tp_btf/sys_enter (PYISOLATE_HOST_BPF=net)."}, \
    {"bpf_guard_attach", pyi_bpf_guard_attach, METH_VARARGS, \
     "bpf_guard_attach(guard, cgroup_dir) -> names\n\nAttach the tp_btf programs, and the cgroup sock " \
     "programs to the cgroup v2 directory."}, \
    {"bpf_guard_mark_task", pyi_bpf_guard_mark_task, METH_VARARGS, \
     "bpf_guard_mark_task(guard, tid, policy, flags)\n\nMark a thread (task storage, PIDFD_THREAD pidfd)."}, \
    {"bpf_guard_task_mark", pyi_bpf_guard_task_mark, METH_VARARGS, \
     "bpf_guard_task_mark(guard, tid) -> (policy, flags) | None\n\nWhat a thread carries."}, \
    {"bpf_guard_unmark_task", pyi_bpf_guard_unmark_task, METH_VARARGS, \
     "bpf_guard_unmark_task(guard, tid) -> bool\n\nRemove a thread's mark (False: it had none)."}, \
    {"bpf_guard_mark_cgroup", pyi_bpf_guard_mark_cgroup, METH_VARARGS, \
     "bpf_guard_mark_cgroup(guard, cgroup_id, policy, flags)\n\nMark a cgroup v2 (flags None: unmark)."}, \
    {"bpf_guard_rule", pyi_bpf_guard_rule, METH_VARARGS, \
     "bpf_guard_rule(guard, rule_set, family, addr, port, add)\n\nAdd (or delete) one connect rule."}, \
    {"bpf_guard_rule_set", pyi_bpf_guard_rule_set, METH_VARARGS, \
     "bpf_guard_rule_set(guard, policy, rule_set)\n\nPoint a policy at a rule set (None: none), atomically."}, \
    {"bpf_guard_events", pyi_bpf_guard_events, METH_O, \
     "bpf_guard_events(guard) -> list\n\nThe denials waiting in the ring buffer, oldest first."}, \
    {"bpf_guard_counters", pyi_bpf_guard_counters, METH_O, \
     "bpf_guard_counters(guard) -> dict\n\nDenials reported and events dropped (ring full)."}, \
    {"bpf_guard_close", pyi_bpf_guard_close, METH_O, "bpf_guard_close(guard)\n\nDetach and unload now."}, \
    {"bpf_probe_lsm", pyi_bpf_probe_lsm, METH_NOARGS, \
     "bpf_probe_lsm() -> (loaded, errno, detail)\n\nTry to load (not attach) a minimal lsm/file_open program."}

/* crash_guard.c: fault handlers on alternate stacks, a report on a pre-opened descriptor. */
PyObject *pyi_crash_guard_install(PyObject *module, PyObject *fd);
PyObject *pyi_crash_guard_thread(PyObject *module, PyObject *name);
#define PYI_CRASH_GUARD_METHODS \
    {"crash_guard_install", pyi_crash_guard_install, METH_O, \
     "crash_guard_install(fd) -> int\n\nFault handlers (SIGSEGV/SIGBUS/SIGILL/SIGFPE/SIGABRT) that write a " \
     "report to fd and end the cell; call once, before any other thread exists."}, \
    {"crash_guard_thread", pyi_crash_guard_thread, METH_O, \
     "crash_guard_thread(name)\n\nAn alternate signal stack and a name for the calling thread's fault reports."}

int pyi_broker_exec(PyObject *module);

#endif
