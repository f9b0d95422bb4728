/* What bpf_guard.c and bpf_lsm.c share (bpf_common.h says what each part is for): the
 * capture of libbpf's messages, the phase errors that quote them, and the loader behind
 * either capsule (allocation, lock, ring buffer of denials, close, destructor). */
#define _GNU_SOURCE
#include "bpf_common.h"

#include <errno.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>

#include <linux/types.h>
#include <bpf/bpf.h>

#include "guard.h"

#define MAX_EVENTS 4096 /* per read; the rest stays in the ring for the next one */

/* libbpf's messages, kept (not printed) so an error can quote the tail. The print
 * callback is process-wide: one buffer serves both loaders. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_buf[4096];
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
    if (log_len + (size_t)n >= sizeof(log_buf)) { /* keep the newest half */
        size_t keep = sizeof(log_buf) / 2;
        if (keep > log_len)
            keep = log_len;
        memmove(log_buf, log_buf + log_len - keep, keep);
        log_len = keep;
    }
    if (log_len + (size_t)n < sizeof(log_buf)) {
        memcpy(log_buf + log_len, line, (size_t)n);
        log_len += (size_t)n;
    }
    log_buf[log_len] = '\0';
    pthread_mutex_unlock(&log_lock);
    return 0;
}

libbpf_print_fn_t
pyi_bpf_log_begin(void)
{
    pthread_mutex_lock(&log_lock);
    log_len = 0;
    log_buf[0] = '\0';
    pthread_mutex_unlock(&log_lock);
    return libbpf_set_print(log_print);
}

void
pyi_bpf_log_end(libbpf_print_fn_t previous)
{
    libbpf_set_print(previous);
}

PyObject *
pyi_bpf_phase_error(const char *who, int err, const char *phase, const char *what)
{
    char tail[1024];
    size_t start;

    pthread_mutex_lock(&log_lock);
    start = log_len > sizeof(tail) - 1 ? log_len - (sizeof(tail) - 1) : 0;
    snprintf(tail, sizeof(tail), "%s", log_buf + start);
    pthread_mutex_unlock(&log_lock);
    for (size_t i = strlen(tail); i > 0 && (tail[i - 1] == '\n' || tail[i - 1] == ' '); i--)
        tail[i - 1] = '\0';
    if (err < 0)
        err = -err;
    PyObject *value = Py_BuildValue("(iN)", err,
                                    PyUnicode_FromFormat("%s: %s: %s: %s%s%s", who, phase, what, strerror(err),
                                                         tail[0] ? "\nlibbpf: " : "", tail));
    if (value != NULL) {
        PyErr_SetObject(PyExc_OSError, value);
        Py_DECREF(value);
    }
    return NULL;
}

/* One record out of the ring (a ring_buffer_sample_fn; ctx: the loader). MAX_EVENTS
 * exceeds what either ring holds (256 KiB of 80-byte records), so the array fills only if
 * producers outpace this read; then the read stops (a negative return), the record in
 * hand is lost and the rest waits for the next read. */
static int
on_event(void *ctx, void *data, size_t size)
{
    struct pyi_bpf_loader *l = ctx;
    if (l->nevents >= MAX_EVENTS)
        return -E2BIG;
    if (size >= sizeof(struct pyi_event))
        memcpy(&l->events[l->nevents++], data, sizeof(struct pyi_event));
    return 0;
}

struct pyi_bpf_loader *
pyi_bpf_loader_new(size_t size, const char *who, PyObject *bytes, void (*destroy)(void *skel))
{
    struct pyi_bpf_loader *l = calloc(1, size);
    if (l == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    pthread_mutex_init(&l->lock, NULL);
    l->who = who;
    l->destroy = destroy;
    l->bytes = Py_NewRef(bytes);
    l->events = calloc(MAX_EVENTS, sizeof(struct pyi_event));
    return l;
}

int
pyi_bpf_open_verified(struct bpf_object_skeleton *skeleton, PyObject *bytes)
{
    skeleton->data = PyBytes_AS_STRING(bytes);
    skeleton->data_sz = (size_t)PyBytes_GET_SIZE(bytes);
    return bpf_object__open_skeleton(skeleton, NULL);
}

int
pyi_bpf_load_detached(struct bpf_object_skeleton *skeleton, const char *who, const char *what)
{
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = bpf_object__load_skeleton(skeleton);
    Py_END_ALLOW_THREADS
    if (err) {
        pyi_bpf_phase_error(who, err, "load", what);
        return -1;
    }
    return 0;
}

/* Everything but the loader itself and its lock (the lock held, or never shared). */
static void
loader_free(struct pyi_bpf_loader *l)
{
    if (l->ring)
        ring_buffer__free(l->ring);
    if (l->skel)
        l->destroy(l->skel);
    l->ring = NULL;
    l->skel = NULL;
    free(l->events);
    l->events = NULL;
    Py_CLEAR(l->bytes);
}

void
pyi_bpf_loader_delete(struct pyi_bpf_loader *l)
{
    loader_free(l);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

static void
capsule_destructor(PyObject *capsule)
{
    struct pyi_bpf_loader *l = PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule));
    if (l == NULL)
        return;
    pyi_bpf_loader_delete(l);
}

PyObject *
pyi_bpf_loader_capsule(struct pyi_bpf_loader *l, const char *name, int events_fd)
{
    l->ring = ring_buffer__new(events_fd, on_event, l, NULL);
    if (l->ring == NULL)
        return pyi_bpf_phase_error(l->who, errno, "load", "ring buffer of denials");
    return PyCapsule_New(l, name, capsule_destructor);
}

/* Another thread may hold the lock (an attach, a load of rules, a close): wait for it
 * detached, so the wait never holds up a stop-the-world pause of the interpreter. */
static void
lock_detached(struct pyi_bpf_loader *l)
{
    if (pthread_mutex_trylock(&l->lock) == 0)
        return;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&l->lock);
    Py_END_ALLOW_THREADS
}

struct pyi_bpf_loader *
pyi_bpf_loader_lock(PyObject *capsule, const char *name)
{
    struct pyi_bpf_loader *l = PyCapsule_GetPointer(capsule, name);
    if (l == NULL)
        return NULL;
    lock_detached(l);
    if (l->skel == NULL) {
        pthread_mutex_unlock(&l->lock);
        PyErr_Format(PyExc_ValueError, "%s: closed", l->who);
        return NULL;
    }
    return l;
}

PyObject *
pyi_bpf_loader_events(PyObject *capsule, const char *name)
{
    struct pyi_bpf_loader *l = pyi_bpf_loader_lock(capsule, name);
    if (l == NULL)
        return NULL;
    l->nevents = 0;
    int n = ring_buffer__consume(l->ring);
    if (n < 0 && l->nevents == 0) {
        pthread_mutex_unlock(&l->lock);
        return pyi_bpf_phase_error(l->who, n, "events", "reading the ring buffer");
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

PyObject *
pyi_bpf_loader_close(PyObject *capsule, const char *name)
{
    struct pyi_bpf_loader *l = PyCapsule_GetPointer(capsule, name);
    if (l == NULL)
        return NULL;
    lock_detached(l);
    loader_free(l);
    pthread_mutex_unlock(&l->lock);
    Py_RETURN_NONE;
}

int
pyi_bpf_rule_key(struct pyi_rule_key *key, const char *who, unsigned int rule_set, unsigned int family,
                 Py_buffer *addr, unsigned int port)
{
    size_t want = family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0;
    if ((family != 0 && family != AF_INET && family != AF_INET6) || (size_t)addr->len != want || port > 65535) {
        PyErr_Format(PyExc_ValueError, "%s: bad rule (family %u, %zd address bytes, port %u)", who, family, addr->len,
                     port);
        PyBuffer_Release(addr);
        return -1;
    }
    memset(key, 0, sizeof(*key));
    key->policy = rule_set;
    key->family = (__u8)family;
    key->port = (__u16)port;
    memcpy(key->addr, addr->buf, want);
    PyBuffer_Release(addr);
    return 0;
}

int
pyi_bpf_u32_or_none(PyObject *obj, unsigned int *value)
{
    *value = 0;
    if (obj == Py_None)
        return 0;
    *value = (unsigned int)PyLong_AsUnsignedLong(obj);
    return PyErr_Occurred() ? -1 : 0;
}

int
pyi_bpf_map_put_unlock(struct pyi_bpf_loader *l, int fd, const void *key, const void *value)
{
    int err = 0;
    if (value != NULL ? bpf_map_update_elem(fd, key, value, BPF_ANY) : bpf_map_delete_elem(fd, key))
        err = errno;
    pthread_mutex_unlock(&l->lock);
    return value == NULL && err == ENOENT ? 0 : err;
}
