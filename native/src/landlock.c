/* Landlock for one thread: a ruleset built from the sandbox's policy and enforced on the
 * calling thread only (landlock_restrict_self without any all-threads flag), so the
 * cell's other threads and the other sandboxes keep their own rules. Threads the
 * sandbox thread creates inherit its domain (it lives in their credentials).
 *
 * The ABI is detected at run time; every access right the kernel knows is "handled",
 * so whatever no rule grants is refused. */
#include "_pyisolate.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The kernel's UAPI (include/uapi/linux/landlock.h), spelled out: bookworm's headers
 * (Linux 6.1) stop at ABI 2, and what the running kernel supports is asked at run time.
 * The syscall numbers are the same on every architecture. */
#define LL_SYS_CREATE_RULESET 444
#define LL_SYS_ADD_RULE 445
#define LL_SYS_RESTRICT_SELF 446
#define LL_CREATE_RULESET_VERSION (1U << 0)
#define LL_RULE_PATH_BENEATH 1
#define LL_RULE_NET_PORT 2

#define FS_EXECUTE (1ULL << 0)
#define FS_WRITE_FILE (1ULL << 1)
#define FS_READ_FILE (1ULL << 2)
#define FS_READ_DIR (1ULL << 3)
#define FS_REMOVE_DIR (1ULL << 4)
#define FS_REMOVE_FILE (1ULL << 5)
#define FS_MAKE_CHAR (1ULL << 6)
#define FS_MAKE_DIR (1ULL << 7)
#define FS_MAKE_REG (1ULL << 8)
#define FS_MAKE_SOCK (1ULL << 9)
#define FS_MAKE_FIFO (1ULL << 10)
#define FS_MAKE_BLOCK (1ULL << 11)
#define FS_MAKE_SYM (1ULL << 12)
#define FS_REFER (1ULL << 13)    /* ABI 2 */
#define FS_TRUNCATE (1ULL << 14) /* ABI 3 */
#define FS_IOCTL_DEV (1ULL << 15) /* ABI 5 */
#define NET_BIND_TCP (1ULL << 0)    /* ABI 4 */
#define NET_CONNECT_TCP (1ULL << 1) /* ABI 4 */
#define SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0) /* ABI 6 */
#define SCOPE_SIGNAL (1ULL << 1)               /* ABI 6 */

struct ll_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net; /* ABI 4 */
    uint64_t scoped;             /* ABI 6 */
};

struct ll_path_beneath_attr {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

struct ll_net_port_attr {
    uint64_t allowed_access;
    uint64_t port;
};

/* What each kind of root grants (masked by what the running ABI handles). Write roots
 * get no EXECUTE, device/fifo/socket/symlink creation or device ioctls: the sandbox
 * never needs them. Library roots are READ_FILE only: files by name, no listing. */
#define RIGHTS_READ (FS_READ_FILE | FS_READ_DIR)
#define RIGHTS_WRITE                                                                                  \
    (RIGHTS_READ | FS_WRITE_FILE | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_DIR | FS_MAKE_REG | FS_REFER | \
     FS_TRUNCATE)
#define RIGHTS_FILE_READ FS_READ_FILE
/* Rights that make sense on a regular file (the rest only apply to directories). */
#define RIGHTS_ON_FILES (FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV)

static long
ll_abi(void)
{
    return syscall(LL_SYS_CREATE_RULESET, NULL, 0, LL_CREATE_RULESET_VERSION);
}

static uint64_t
fs_handled(long abi)
{
    uint64_t access = (FS_MAKE_SYM << 1) - 1; /* ABI 1: bits 0..12 */
    if (abi >= 2)
        access |= FS_REFER;
    if (abi >= 3)
        access |= FS_TRUNCATE;
    if (abi >= 5)
        access |= FS_IOCTL_DEV;
    return access;
}

PyObject *
pyi_landlock_abi(PyObject *module, PyObject *unused)
{
    long abi = ll_abi();
    if (abi < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(abi);
}

/* Add one path_beneath rule per path of `paths` with `rights`. A path that cannot be
 * opened is not an error: it is appended to `skipped` as [path, reason]. */
static int
add_paths(int ruleset, PyObject *paths, uint64_t rights, uint64_t handled, PyObject *skipped, int *count)
{
    PyObject *seq = PySequence_Fast(paths, "paths must be a sequence of str");
    if (seq == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *encoded = NULL;
        if (!PyUnicode_FSConverter(item, &encoded))
            goto error;
        const char *path = PyBytes_AS_STRING(encoded);
        int fd = open(path, O_PATH | O_CLOEXEC);
        if (fd < 0) {
            PyObject *note = Py_BuildValue("[Os]", item, strerror(errno));
            Py_DECREF(encoded);
            if (note == NULL || PyList_Append(skipped, note) < 0) {
                Py_XDECREF(note);
                goto error;
            }
            Py_DECREF(note);
            continue;
        }
        struct stat st;
        struct ll_path_beneath_attr rule = {.allowed_access = rights & handled, .parent_fd = fd};
        if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode))
            rule.allowed_access &= RIGHTS_ON_FILES;
        long rc = syscall(LL_SYS_ADD_RULE, ruleset, LL_RULE_PATH_BENEATH, &rule, 0);
        int saved = errno;
        close(fd);
        if (rc < 0) {
            errno = saved;
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, item);
            Py_DECREF(encoded);
            goto error;
        }
        Py_DECREF(encoded);
        (*count)++;
    }
    Py_DECREF(seq);
    return 0;
error:
    Py_DECREF(seq);
    return -1;
}

/* landlock_restrict_thread(read, write, library_files, connect_ports) -> dict
 *
 * read: roots the thread may read beneath; write: roots it may read and change beneath;
 * library_files: roots whose files it may read by name (no listing: the shared libraries
 * extension modules load); connect_ports: TCP ports it may connect to, or None to leave
 * TCP connect unrestricted by Landlock. TCP bind is always refused (ABI >= 4); signals
 * and abstract Unix sockets are scoped to the domain (ABI >= 6). */
PyObject *
pyi_landlock_restrict_thread(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"read", "write", "library_files", "connect_ports", NULL};
    PyObject *read, *write, *libs, *ports;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO:landlock_restrict_thread", keywords, &read, &write, &libs,
                                     &ports))
        return NULL;

    long abi = ll_abi();
    if (abi < 0)
        return PyErr_SetFromErrno(PyExc_OSError);

    struct ll_ruleset_attr attr = {.handled_access_fs = fs_handled(abi)};
    size_t attr_size = sizeof(uint64_t);
    if (abi >= 4) {
        attr.handled_access_net = NET_BIND_TCP | (ports == Py_None ? 0 : NET_CONNECT_TCP);
        attr_size = 2 * sizeof(uint64_t);
    }
    if (abi >= 6) {
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL;
        attr_size = sizeof attr;
    }
    int ruleset = (int)syscall(LL_SYS_CREATE_RULESET, &attr, attr_size, 0);
    if (ruleset < 0)
        return PyErr_SetFromErrno(PyExc_OSError);

    PyObject *result = NULL, *skipped = PyList_New(0), *port_list = PyList_New(0);
    int rules = 0;
    if (skipped == NULL || port_list == NULL)
        goto done;
    if (add_paths(ruleset, read, RIGHTS_READ, attr.handled_access_fs, skipped, &rules) < 0 ||
        add_paths(ruleset, write, RIGHTS_WRITE, attr.handled_access_fs, skipped, &rules) < 0 ||
        add_paths(ruleset, libs, RIGHTS_FILE_READ, attr.handled_access_fs, skipped, &rules) < 0)
        goto done;

    const char *net;
    if (abi < 4) {
        net = "not restricted by Landlock (ABI < 4)";
    }
    else if (ports == Py_None) {
        net = "bind refused; connect to any port";
    }
    else {
        net = "bind refused; connect only to the listed ports";
        PyObject *seq = PySequence_Fast(ports, "connect_ports must be None or a sequence of int");
        if (seq == NULL)
            goto done;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
            PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
            long port = PyLong_AsLong(item);
            if (port == -1 && PyErr_Occurred()) {
                Py_DECREF(seq);
                goto done;
            }
            if (port < 1 || port > 65535) {
                PyErr_Format(PyExc_ValueError, "TCP port out of range: %ld", port);
                Py_DECREF(seq);
                goto done;
            }
            struct ll_net_port_attr rule = {.allowed_access = NET_CONNECT_TCP, .port = (uint64_t)port};
            if (syscall(LL_SYS_ADD_RULE, ruleset, LL_RULE_NET_PORT, &rule, 0) < 0 ||
                PyList_Append(port_list, item) < 0) {
                if (!PyErr_Occurred())
                    PyErr_SetFromErrno(PyExc_OSError);
                Py_DECREF(seq);
                goto done;
            }
            rules++;
        }
        Py_DECREF(seq);
    }

    /* Landlock needs no_new_privs (or CAP_SYS_ADMIN); it is per thread, and the cell
     * already set it for the whole process before starting any thread. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || syscall(LL_SYS_RESTRICT_SELF, ruleset, 0) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    result = Py_BuildValue("{s:l,s:i,s:K,s:s,s:O,s:O,s:O}", "abi", abi, "rules", rules, "handled_fs",
                           (unsigned long long)attr.handled_access_fs, "net", net, "ports", port_list, "skipped",
                           skipped, "scoped", abi >= 6 ? Py_True : Py_False);
done:
    close(ruleset);
    Py_XDECREF(skipped);
    Py_XDECREF(port_list);
    return result;
}
