/* The _pyisolate module: the method table and a multi-phase init.
 *
 * Loaded by the cell's main interpreter (sitecustomize's cell preparation, and the
 * cell's sandbox threads before they enter their interpreters) and by the supervisor
 * side for probes. It refuses to load in sub-interpreters: guest code never gets it.
 * It keeps no state and never needs the GIL for anything but building results. */
#include "_pyisolate.h"
#include "bpf_lsm.h"

PyDoc_STRVAR(module_doc,
             "PyIsolate's kernel guards (Landlock, seccomp). Used by the cell, never by guest code.");

static PyMethodDef methods[] = {
    {"landlock_abi", pyi_landlock_abi, METH_NOARGS,
     "landlock_abi() -> int\n\nThe running kernel's Landlock ABI version; OSError when Landlock is unavailable."},
    {"landlock_restrict_thread", (PyCFunction)(void (*)(void))pyi_landlock_restrict_thread,
     METH_VARARGS | METH_KEYWORDS,
     "landlock_restrict_thread(read, write, library_files, connect_ports) -> dict\n\n"
     "Restrict the CALLING THREAD (and threads it creates) with Landlock: read beneath `read`,\n"
     "read and change beneath `write`, read files (no listing) beneath `library_files`,\n"
     "TCP connect only to `connect_ports` (None: any port), never bind. Paths that cannot be\n"
     "opened are skipped and listed in the result."},
    {"seccomp_api_level", pyi_seccomp_api_level, METH_NOARGS,
     "seccomp_api_level() -> int\n\nlibseccomp's API level for the running kernel (0: seccomp unusable)."},
    {"seccomp_restrict_thread", (PyCFunction)(void (*)(void))pyi_seccomp_restrict_thread,
     METH_VARARGS | METH_KEYWORDS,
     "seccomp_restrict_thread(*, network=False, truncate_path=False, ffi=False) -> dict\n\n"
     "Install the sandbox allow-list on the CALLING THREAD only (no TSYNC); EPERM for the rest."},
    {"seccomp_cell_filter", pyi_seccomp_cell_filter, METH_NOARGS,
     "seccomp_cell_filter() -> dict\n\nInstall the cell's process-wide base deny-list (TSYNC)."},
    {"seccomp_describe", (PyCFunction)(void (*)(void))pyi_seccomp_describe, METH_VARARGS | METH_KEYWORDS,
     "seccomp_describe(which, *, network=False, truncate_path=True, ffi=False) -> str\n\n"
     "libseccomp's pseudo filter code of the 'thread' allow-list or the 'cell' base filter."},
    PYI_BPF_GUARD_METHODS,
    PYI_BPF_LSM_METHODS,
    PYI_CRASH_GUARD_METHODS,
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, pyi_broker_exec}, /* the sealed broker's types and functions (broker_py.c) */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_pyisolate",
    .m_doc = module_doc,
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__pyisolate(void)
{
    return PyModuleDef_Init(&module_def);
}
