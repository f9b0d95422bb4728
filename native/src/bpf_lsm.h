/* The BPF-LSM loader's functions (bpf_lsm.c) and their method-table entries, included by
 * _pyisolate.c; used by pyisolate/lsm.py. */
#ifndef PYISOLATE_BPF_LSM_LOADER_H
#define PYISOLATE_BPF_LSM_LOADER_H

#include <Python.h>

PyObject *pyi_bpf_lsm_open(PyObject *module, PyObject *obj);
PyObject *pyi_bpf_lsm_attach(PyObject *module, PyObject *lsm);
PyObject *pyi_bpf_lsm_mark_task(PyObject *module, PyObject *args);
PyObject *pyi_bpf_lsm_forget_pending(PyObject *module, PyObject *args);
PyObject *pyi_bpf_lsm_pending(PyObject *module, PyObject *lsm);
PyObject *pyi_bpf_lsm_fs_rule(PyObject *module, PyObject *args);
PyObject *pyi_bpf_lsm_net_rule(PyObject *module, PyObject *args);
PyObject *pyi_bpf_lsm_rule_set(PyObject *module, PyObject *args);
PyObject *pyi_bpf_lsm_events(PyObject *module, PyObject *lsm);
PyObject *pyi_bpf_lsm_close(PyObject *module, PyObject *lsm);

#define PYI_BPF_LSM_METHODS \
    {"bpf_lsm_open", pyi_bpf_lsm_open, METH_O, \
     "bpf_lsm_open(obj: bytes) -> lsm\n\nOpen and load lsm.bpf.o from its (verified) bytes."}, \
    {"bpf_lsm_attach", pyi_bpf_lsm_attach, METH_O, \
     "bpf_lsm_attach(lsm) -> names\n\nAttach every lsm/ program (all or none)."}, \
    {"bpf_lsm_mark_task", pyi_bpf_lsm_mark_task, METH_VARARGS, \
     "bpf_lsm_mark_task(lsm, tid, policy, flags) -> 'PIDFD_THREAD' | 'pending'\n\nMark a thread."}, \
    {"bpf_lsm_forget_pending", pyi_bpf_lsm_forget_pending, METH_VARARGS, \
     "bpf_lsm_forget_pending(lsm, tid) -> bool\n\nRemove a tid's unconsumed `pending` entry."}, \
    {"bpf_lsm_pending", pyi_bpf_lsm_pending, METH_O, \
     "bpf_lsm_pending(lsm) -> int\n\nThreads marked through `pending` that have not consumed it yet."}, \
    {"bpf_lsm_fs_rule", pyi_bpf_lsm_fs_rule, METH_VARARGS, \
     "bpf_lsm_fs_rule(lsm, rule_set, dev, ino, bits)\n\nSet one path rule (bits 0: delete it)."}, \
    {"bpf_lsm_net_rule", pyi_bpf_lsm_net_rule, METH_VARARGS, \
     "bpf_lsm_net_rule(lsm, rule_set, family, addr, port, add)\n\nAdd (or delete) one connect rule."}, \
    {"bpf_lsm_rule_set", pyi_bpf_lsm_rule_set, METH_VARARGS, \
     "bpf_lsm_rule_set(lsm, policy, rule_set)\n\nPoint a policy at a rule set (None: none), atomically."}, \
    {"bpf_lsm_events", pyi_bpf_lsm_events, METH_O, \
     "bpf_lsm_events(lsm) -> list\n\nThe denials waiting in the ring buffer, oldest first."}, \
    {"bpf_lsm_close", pyi_bpf_lsm_close, METH_O, "bpf_lsm_close(lsm)\n\nDetach and unload now."}

#endif
