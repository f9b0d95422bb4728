/* _pyisolate: PyIsolate's kernel guards, as functions the cell calls (never the guest).
 *
 *   landlock.c         Landlock: ABI query, and a ruleset restricting the calling thread
 *   seccomp_filters.c  seccomp (libseccomp): the per-sandbox-thread allow-list and the
 *                      cell's process-wide base filter
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

#endif
