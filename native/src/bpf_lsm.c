/* The loader of bpf/lsm.bpf.c (the BPF-LSM programs: mode "full"), through its bpftool
 * skeleton, with the same static libbpf as the guard loader (bpf_guard.c). Called by the
 * supervisor only (pyisolate/lsm.py), never by a cell or a guest.
 *
 * As in bpf_guard.c, the object's bytes come from Python, already checked against the
 * shipped manifest, and replace the copy bpftool embedded in the skeleton. Phases fail
 * with their own message (OSError naming the phase, with the tail of libbpf's log):
 *   open, load   bpf_lsm_open(bytes)      ELF + skeleton names; maps, verifier
 *   attach       bpf_lsm_attach(l)        all seven lsm/ programs, or none
 * then marks (a PIDFD_THREAD pidfd where the kernel has them, else the `pending` tid map),
 * path and connect rules keyed by rule set, the policy -> rule-set switch, and the ring
 * buffer of denials. One mutex per loader (the module runs without a GIL). */
#define _GNU_SOURCE
#include "_pyisolate.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/types.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "lsm.h"
#include "lsm.skel.h"

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL /* include/uapi/linux/pidfd.h, Linux >= 6.9 */
#endif

#define CAPSULE_NAME "pyisolate.bpf_lsm"
#define MAX_EVENTS 4096
#define MAX_PENDING 256 /* the `pending` map's size */

struct lsm {
    pthread_mutex_t lock;
    struct lsm_bpf *skel;
    struct ring_buffer *ring;
    PyObject *bytes;
    struct pyi_event *events;
    size_t nevents;
    int attached;
    /* tids this loader put into `pending` that no hook has consumed yet: each one holds a
     * unit of pending_count, given back once the program has removed the entry. */
    __u32 pending[MAX_PENDING];
    size_t npending;
};

/* libbpf's messages while this loader opens, loads and attaches (the print callback is
 * process-wide: set for those calls only, the previous one restored after). */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_buf[2048];
static size_t log_len;

static int
log_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    char line[512];
    int n;

    if (level == LIBBPF_DEBUG)
        return 0;
    n = vsnprintf(line, sizeof(line), fmt, ap);
    if (n <= 0)
        return 0;
    if ((size_t)n >= sizeof(line))
        n = sizeof(line) - 1;
    pthread_mutex_lock(&log_lock);
    if (log_len + (size_t)n >= sizeof(log_buf)) /* keep the newest lines */
        log_len = 0;
    memcpy(log_buf + log_len, line, (size_t)n);
    log_len += (size_t)n;
    log_buf[log_len] = '\0';
    pthread_mutex_unlock(&log_lock);
    return 0;
}

static PyObject *
phase_error(int err, const char *phase, const char *what)
{
    char tail[1024];
    size_t start;

    if (err < 0)
        err = -err;
    pthread_mutex_lock(&log_lock);
    start = log_len > sizeof(tail) - 1 ? log_len - (sizeof(tail) - 1) : 0;
    snprintf(tail, sizeof(tail), "%s", log_buf + start);
    pthread_mutex_unlock(&log_lock);
    for (size_t i = strlen(tail); i > 0 && (tail[i - 1] == '\n' || tail[i - 1] == ' '); i--)
        tail[i - 1] = '\0';
    PyObject *value = Py_BuildValue("(iN)", err,
                                    PyUnicode_FromFormat("bpf lsm: %s: %s: %s%s%s", phase, what, strerror(err),
                                                         tail[0] ? "\nlibbpf: " : "", tail));
    if (value != NULL) {
        PyErr_SetObject(PyExc_OSError, value);
        Py_DECREF(value);
    }
    return NULL;
}

static libbpf_print_fn_t
log_begin(void)
{
    pthread_mutex_lock(&log_lock);
    log_len = 0;
    log_buf[0] = '\0';
    pthread_mutex_unlock(&log_lock);
    return libbpf_set_print(log_print);
}

static void
lsm_free(struct lsm *l)
{
    if (l->ring)
        ring_buffer__free(l->ring);
    if (l->skel)
        lsm_bpf__destroy(l->skel); /* detaches every program, closes every map */
    l->ring = NULL;
    l->skel = NULL;
    free(l->events);
    l->events = NULL;
    Py_CLEAR(l->bytes);
}

static void
capsule_destructor(PyObject *capsule)
{
    struct lsm *l = PyCapsule_GetPointer(capsule, CAPSULE_NAME);
    if (l == NULL)
        return;
    lsm_free(l);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

static struct lsm *
lsm_lock(PyObject *capsule)
{
    struct lsm *l = PyCapsule_GetPointer(capsule, CAPSULE_NAME);
    if (l == NULL)
        return NULL;
    pthread_mutex_lock(&l->lock);
    if (l->skel == NULL) {
        pthread_mutex_unlock(&l->lock);
        PyErr_SetString(PyExc_ValueError, "bpf lsm: closed");
        return NULL;
    }
    return l;
}

static int
on_event(void *ctx, void *data, size_t size)
{
    struct lsm *l = ctx;
    if (l->nevents >= MAX_EVENTS)
        return -E2BIG;
    if (size >= sizeof(struct pyi_event))
        memcpy(&l->events[l->nevents++], data, sizeof(struct pyi_event));
    return 0;
}

PyObject *
pyi_bpf_lsm_open(PyObject *module, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "bpf_lsm_open(obj): obj must be the object file's bytes");
        return NULL;
    }
    struct lsm *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return PyErr_NoMemory();
    pthread_mutex_init(&l->lock, NULL);
    l->bytes = Py_NewRef(arg);
    l->events = calloc(MAX_EVENTS, sizeof(struct pyi_event));
    libbpf_print_fn_t previous = log_begin();
    int err;
    l->skel = calloc(1, sizeof(*l->skel));
    if (l->skel == NULL || l->events == NULL) {
        err = -ENOMEM;
        goto fail_open;
    }
    err = lsm_bpf__create_skeleton(l->skel);
    if (err)
        goto fail_open;
    l->skel->skeleton->data = PyBytes_AS_STRING(arg); /* the verified bytes */
    l->skel->skeleton->data_sz = (size_t)PyBytes_GET_SIZE(arg);
    err = bpf_object__open_skeleton(l->skel->skeleton, NULL);
    if (err)
        goto fail_open;
    err = lsm_bpf__load(l->skel);
    if (err) {
        phase_error(err, "load", "lsm.bpf.o (maps, programs, verifier)");
        goto fail;
    }
    l->ring = ring_buffer__new(bpf_map__fd(l->skel->maps.events), on_event, l, NULL);
    if (l->ring == NULL) {
        phase_error(errno, "load", "ring buffer of denials");
        goto fail;
    }
    PyObject *capsule = PyCapsule_New(l, CAPSULE_NAME, capsule_destructor);
    if (capsule == NULL)
        goto fail;
    libbpf_set_print(previous);
    return capsule;
fail_open:
    phase_error(err, "open", "lsm.bpf.o (ELF, BTF, skeleton names)");
fail:
    libbpf_set_print(previous);
    lsm_free(l);
    pthread_mutex_destroy(&l->lock);
    free(l);
    return NULL;
}

PyObject *
pyi_bpf_lsm_attach(PyObject *module, PyObject *capsule)
{
    struct lsm *l = lsm_lock(capsule);
    if (l == NULL)
        return NULL;
    if (l->attached) {
        pthread_mutex_unlock(&l->lock);
        PyErr_SetString(PyExc_ValueError, "bpf lsm: already attached");
        return NULL;
    }
    libbpf_print_fn_t previous = log_begin();
    int err = lsm_bpf__attach(l->skel);
    libbpf_set_print(previous);
    if (err) {
        lsm_bpf__detach(l->skel); /* all or nothing */
        pthread_mutex_unlock(&l->lock);
        return phase_error(err, "attach", "the lsm/ programs");
    }
    l->attached = 1;
    pthread_mutex_unlock(&l->lock);
    return Py_BuildValue("(sssssss)", "lsm/task_alloc", "lsm/file_open", "lsm/inode_unlink", "lsm/socket_connect",
                         "lsm/bprm_check_security", "lsm/ptrace_access_check", "lsm/bpf");
}

/* Give back pending_count for every tid whose entry a hook has consumed (lock held). */
static void
pending_sweep(struct lsm *l)
{
    int fd = bpf_map__fd(l->skel->maps.pending);
    size_t kept = 0;
    for (size_t i = 0; i < l->npending; i++) {
        struct pyi_mark m;
        __u32 key = l->pending[i];
        if (bpf_map_lookup_elem(fd, &key, &m) == 0)
            l->pending[kept++] = key;
        else
            __atomic_sub_fetch(&l->skel->bss->pending_count, 1, __ATOMIC_SEQ_CST);
    }
    l->npending = kept;
}

/* bpf_lsm_mark_task(l, tid, policy, flags) -> "PIDFD_THREAD" | "pending": mark a thread.
 * Kernels before 6.9 give a non-leader thread no pidfd of its own (EINVAL): its tid goes
 * into `pending`, and its next hooked operation (decided by that entry already) moves the
 * mark into its task storage. */
PyObject *
pyi_bpf_lsm_mark_task(PyObject *module, PyObject *args)
{
    PyObject *capsule;
    int tid;
    unsigned int policy, flags;
    if (!PyArg_ParseTuple(args, "OiII:bpf_lsm_mark_task", &capsule, &tid, &policy, &flags))
        return NULL;
    struct lsm *l = lsm_lock(capsule);
    if (l == NULL)
        return NULL;
    struct pyi_mark mark = {.policy = policy, .flags = flags};
    const char *how = "PIDFD_THREAD";
    int err = 0, pidfd = (int)syscall(SYS_pidfd_open, tid, PIDFD_THREAD);
    if (pidfd >= 0) {
        if (bpf_map_update_elem(bpf_map__fd(l->skel->maps.task_marks), &pidfd, &mark, BPF_ANY))
            err = errno;
        close(pidfd);
    } else if (errno != EINVAL) {
        err = errno;
    } else {
        how = "pending";
        pending_sweep(l);
        __u32 key = (__u32)tid;
        if (l->npending >= MAX_PENDING)
            err = ENOSPC;
        else if (bpf_map_update_elem(bpf_map__fd(l->skel->maps.pending), &key, &mark, BPF_ANY))
            err = errno;
        else {
            /* the entry is in place before the count lets hooks look */
            l->pending[l->npending++] = key;
            __atomic_add_fetch(&l->skel->bss->pending_count, 1, __ATOMIC_SEQ_CST);
        }
    }
    pthread_mutex_unlock(&l->lock);
    if (err)
        return PyErr_Format(PyExc_OSError, "bpf lsm: mark thread %d (%s): %s", tid, how, strerror(err));
    return PyUnicode_FromString(how);
}

/* bpf_lsm_forget_pending(l, tid) -> bool: remove a tid's entry that no hook consumed
 * (its thread ended first), so a later thread given the same tid is not marked. */
PyObject *
pyi_bpf_lsm_forget_pending(PyObject *module, PyObject *args)
{
    PyObject *capsule;
    int tid;
    if (!PyArg_ParseTuple(args, "Oi:bpf_lsm_forget_pending", &capsule, &tid))
        return NULL;
    struct lsm *l = lsm_lock(capsule);
    if (l == NULL)
        return NULL;
    __u32 key = (__u32)tid;
    int removed = bpf_map_delete_elem(bpf_map__fd(l->skel->maps.pending), &key) == 0;
    pending_sweep(l);
    pthread_mutex_unlock(&l->lock);
    return PyBool_FromLong(removed);
}

/* bpf_lsm_pending(l) -> int: tids marked through `pending` not yet consumed. */
PyObject *
pyi_bpf_lsm_pending(PyObject *module, PyObject *capsule)
{
    struct lsm *l = lsm_lock(capsule);
    if (l == NULL)
        return NULL;
    pending_sweep(l);
    size_t n = l->npending;
    pthread_mutex_unlock(&l->lock);
    return PyLong_FromSize_t(n);
}

/* bpf_lsm_fs_rule(l, rule_set, dev, ino, bits): one path rule (bits 0 deletes it). */
PyObject *
pyi_bpf_lsm_fs_rule(PyObject *module, PyObject *args)
{
    PyObject *capsule;
    unsigned int rule_set, dev, bits;
    unsigned long long ino;
    if (!PyArg_ParseTuple(args, "OIIKI:bpf_lsm_fs_rule", &capsule, &rule_set, &dev, &ino, &bits))
        return NULL;
    if (bits & ~(unsigned int)(PYI_FS_READ | PYI_FS_WRITE | PYI_FS_UNLINK))
        return PyErr_Format(PyExc_ValueError, "bpf lsm: bad access bits %#x", bits);
    struct lsm *l = lsm_lock(capsule);
    if (l == NULL)
        return NULL;
    struct pyi_fs_key key = {.policy = rule_set, .dev = dev, .ino = ino};
    __u32 value = bits;
    int fd = bpf_map__fd(l->skel->maps.fs_rules), err = 0;
    if (bits ? bpf_map_update_elem(fd, &key, &value, BPF_ANY) : bpf_map_delete_elem(fd, &key))
        err = errno;
    pthread_mutex_unlock(&l->lock);
    if (err && !(bits == 0 && err == ENOENT))
        return PyErr_Format(PyExc_OSError, "bpf lsm: path rule (%u, %llu) of set %u: %s", dev, ino, rule_set,
                            strerror(err));
    Py_RETURN_NONE;
}

/* bpf_lsm_net_rule(l, rule_set, family, addr, port, add): one connect rule (guard.h's key). */
PyObject *
pyi_bpf_lsm_net_rule(PyObject *module, PyObject *args)
{
    PyObject *capsule;
    unsigned int rule_set, family, port;
    Py_buffer addr;
    int add;
    if (!PyArg_ParseTuple(args, "OIIy*Ip:bpf_lsm_net_rule", &capsule, &rule_set, &family, &addr, &port, &add))
        return NULL;
    struct pyi_rule_key key;
    memset(&key, 0, sizeof(key));
    size_t want = family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0;
    if ((family != 0 && family != AF_INET && family != AF_INET6) || (size_t)addr.len != want || port > 65535) {
        PyBuffer_Release(&addr);
        return PyErr_Format(PyExc_ValueError, "bpf lsm: bad rule (family %u, %zd address bytes, port %u)", family,
                            addr.len, port);
    }
    key.policy = rule_set;
    key.family = (__u8)family;
    key.port = (__u16)port;
    memcpy(key.addr, addr.buf, want);
    PyBuffer_Release(&addr);
    struct lsm *l = lsm_lock(capsule);
    if (l == NULL)
        return NULL;
    __u8 one = 1;
    int fd = bpf_map__fd(l->skel->maps.rules), err = 0;
    if (add ? bpf_map_update_elem(fd, &key, &one, BPF_ANY) : bpf_map_delete_elem(fd, &key))
        err = errno;
    pthread_mutex_unlock(&l->lock);
    if (err && !(!add && err == ENOENT))
        return PyErr_Format(PyExc_OSError, "bpf lsm: %s connect rule of set %u: %s", add ? "add" : "delete",
                            rule_set, strerror(err));
    Py_RETURN_NONE;
}

/* bpf_lsm_rule_set(l, policy, rule_set): point a policy at a rule set in one map update
 * (None: the policy has none, and allows nothing). */
PyObject *
pyi_bpf_lsm_rule_set(PyObject *module, PyObject *args)
{
    PyObject *capsule, *set_obj;
    unsigned int policy;
    if (!PyArg_ParseTuple(args, "OIO:bpf_lsm_rule_set", &capsule, &policy, &set_obj))
        return NULL;
    __u32 key = policy, value = 0;
    if (set_obj != Py_None) {
        value = (__u32)PyLong_AsUnsignedLong(set_obj);
        if (PyErr_Occurred())
            return NULL;
    }
    struct lsm *l = lsm_lock(capsule);
    if (l == NULL)
        return NULL;
    int fd = bpf_map__fd(l->skel->maps.rule_sets), err = 0;
    if (set_obj == Py_None ? bpf_map_delete_elem(fd, &key) : bpf_map_update_elem(fd, &key, &value, BPF_ANY))
        err = errno;
    pthread_mutex_unlock(&l->lock);
    if (err && !(set_obj == Py_None && err == ENOENT))
        return PyErr_Format(PyExc_OSError, "bpf lsm: rule set of policy %u: %s", policy, strerror(err));
    Py_RETURN_NONE;
}

/* bpf_lsm_events(l) -> list of tuples, oldest first, as bpf_guard_events (guard.h's event). */
PyObject *
pyi_bpf_lsm_events(PyObject *module, PyObject *capsule)
{
    struct lsm *l = lsm_lock(capsule);
    if (l == NULL)
        return NULL;
    l->nevents = 0;
    int n = ring_buffer__consume(l->ring);
    if (n < 0 && l->nevents == 0) {
        pthread_mutex_unlock(&l->lock);
        return phase_error(n, "events", "reading the ring buffer");
    }
    PyObject *list = PyList_New(0);
    for (size_t i = 0; list != NULL && i < l->nevents; i++) {
        struct pyi_event *e = &l->events[i];
        size_t comm_len = strnlen(e->comm, sizeof(e->comm));
        PyObject *item = Py_BuildValue("(KKIIIIiIIIy#y#)", (unsigned long long)e->time_ns,
                                       (unsigned long long)e->cgroup, e->tid, e->tgid, e->policy, e->hook, e->nr,
                                       (unsigned int)e->port, (unsigned int)e->family, (unsigned int)e->source,
                                       (const char *)e->addr, (Py_ssize_t)sizeof(e->addr), e->comm,
                                       (Py_ssize_t)comm_len);
        if (item == NULL || PyList_Append(list, item) < 0)
            Py_CLEAR(list);
        Py_XDECREF(item);
    }
    pthread_mutex_unlock(&l->lock);
    return list;
}

/* bpf_lsm_close(l): detach and unload now (the capsule's destructor does it too). */
PyObject *
pyi_bpf_lsm_close(PyObject *module, PyObject *capsule)
{
    struct lsm *l = PyCapsule_GetPointer(capsule, CAPSULE_NAME);
    if (l == NULL)
        return NULL;
    pthread_mutex_lock(&l->lock);
    lsm_free(l);
    pthread_mutex_unlock(&l->lock);
    Py_RETURN_NONE;
}
