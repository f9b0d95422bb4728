/* The loader of bpf/guard.bpf.c (the guards that work without BPF-LSM), through its
 * bpftool skeleton, with libbpf linked statically. Called by the supervisor only
 * (pyisolate/bpf.py), never by a cell or a guest.
 *
 * The object's bytes come from Python, which has checked their SHA-256 against the
 * shipped manifest: the skeleton is created as usual, then pointed at those bytes
 * instead of the copy bpftool embedded, so what is loaded is exactly what was verified.
 * The skeleton's names (maps, programs) must still match: an object that is not a
 * guard.bpf.o fails in the "open" phase.
 *
 * A guard is a capsule; its phases each fail with their own message (OSError whose text
 * names the phase and carries the tail of libbpf's log, e.g. the verifier's words):
 *   open    parse the ELF, match the skeleton          bpf_guard_open(bytes)
 *   load    create maps, load programs (verifier)      bpf_guard_open(bytes)
 *   attach  tp_btf programs, cgroup sock programs      bpf_guard_attach(g, cgroup_dir)
 * then map updates (marks, rules) and reading the denial ring buffer. One mutex per
 * guard: the module runs without a GIL, and libbpf's ring buffer is single-consumer. */
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
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "guard.h"
#include "guard.skel.h"

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL /* include/uapi/linux/pidfd.h, Linux >= 6.9 */
#endif

#define CAPSULE_NAME "pyisolate.bpf_guard"
#define MAX_EVENTS 4096 /* per read; the rest stays in the ring for the next one */

struct guard {
    pthread_mutex_t lock;
    struct guard_bpf *skel;
    struct ring_buffer *ring;
    PyObject *bytes; /* the verified object: libbpf reads it until the load is done */
    struct pyi_event *events;
    size_t nevents;
    int attached;
};

/* libbpf's messages, kept (not printed) so an error can quote the tail. */
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

static void
log_reset(void)
{
    pthread_mutex_lock(&log_lock);
    log_len = 0;
    log_buf[0] = '\0';
    pthread_mutex_unlock(&log_lock);
}

/* OSError(errno, "bpf guard: PHASE: what [libbpf: tail]") */
static PyObject *
phase_error(int err, const char *phase, const char *what)
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
                                    PyUnicode_FromFormat("bpf guard: %s: %s: %s%s%s", phase, what, strerror(err),
                                                         tail[0] ? "\nlibbpf: " : "", tail));
    if (value != NULL) {
        PyErr_SetObject(PyExc_OSError, value);
        Py_DECREF(value);
    }
    return NULL;
}

static void
guard_free(struct guard *g)
{
    if (g->ring)
        ring_buffer__free(g->ring);
    if (g->skel)
        guard_bpf__destroy(g->skel); /* detaches every link, closes every map */
    g->ring = NULL;
    g->skel = NULL;
    free(g->events);
    g->events = NULL;
    Py_CLEAR(g->bytes);
}

static void
capsule_destructor(PyObject *capsule)
{
    struct guard *g = PyCapsule_GetPointer(capsule, CAPSULE_NAME);
    if (g == NULL)
        return;
    guard_free(g);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

/* The guard of a capsule, locked; NULL (with an exception) when closed or wrong. */
static struct guard *
guard_lock(PyObject *capsule)
{
    struct guard *g = PyCapsule_GetPointer(capsule, CAPSULE_NAME);
    if (g == NULL)
        return NULL;
    pthread_mutex_lock(&g->lock);
    if (g->skel == NULL) {
        pthread_mutex_unlock(&g->lock);
        PyErr_SetString(PyExc_ValueError, "bpf guard: closed");
        return NULL;
    }
    return g;
}

/* One record out of the ring. MAX_EVENTS exceeds what the ring holds (256 KiB of 80-byte
 * records), so the array fills only if producers outpace this read; then the read stops
 * (a negative return), the record in hand is lost and the rest waits for the next read. */
static int
on_event(void *ctx, void *data, size_t size)
{
    struct guard *g = ctx;
    if (g->nevents >= MAX_EVENTS)
        return -E2BIG;
    if (size >= sizeof(struct pyi_event))
        memcpy(&g->events[g->nevents++], data, sizeof(struct pyi_event));
    return 0;
}

PyObject *
pyi_bpf_guard_open(PyObject *module, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "bpf_guard_open(obj): obj must be the object file's bytes");
        return NULL;
    }
    struct guard *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return PyErr_NoMemory();
    pthread_mutex_init(&g->lock, NULL);
    g->bytes = Py_NewRef(arg);
    g->events = calloc(MAX_EVENTS, sizeof(struct pyi_event));
    libbpf_set_print(log_print);
    log_reset();
    int err;
    g->skel = calloc(1, sizeof(*g->skel));
    if (g->skel == NULL || g->events == NULL) {
        err = -ENOMEM;
        goto fail_open;
    }
    err = guard_bpf__create_skeleton(g->skel);
    if (err)
        goto fail_open;
    /* The verified bytes, not the copy embedded in this module. */
    g->skel->skeleton->data = PyBytes_AS_STRING(arg);
    g->skel->skeleton->data_sz = (size_t)PyBytes_GET_SIZE(arg);
    err = bpf_object__open_skeleton(g->skel->skeleton, NULL);
    if (err)
        goto fail_open;
    err = guard_bpf__load(g->skel);
    if (err) {
        phase_error(err, "load", "guard.bpf.o (maps, programs, verifier)");
        goto fail;
    }
    g->ring = ring_buffer__new(bpf_map__fd(g->skel->maps.events), on_event, g, NULL);
    if (g->ring == NULL) {
        phase_error(errno, "load", "ring buffer of denials");
        goto fail;
    }
    PyObject *capsule = PyCapsule_New(g, CAPSULE_NAME, capsule_destructor);
    if (capsule == NULL)
        goto fail;
    return capsule;
fail_open:
    phase_error(err, "open", "guard.bpf.o (ELF, BTF, skeleton names)");
fail:
    guard_free(g);
    pthread_mutex_destroy(&g->lock);
    free(g);
    return NULL;
}

PyObject *
pyi_bpf_guard_attach(PyObject *module, PyObject *args)
{
    PyObject *capsule;
    const char *cgroup_dir;
    if (!PyArg_ParseTuple(args, "Os:bpf_guard_attach", &capsule, &cgroup_dir))
        return NULL;
    struct guard *g = guard_lock(capsule);
    if (g == NULL)
        return NULL;
    struct guard_bpf *s = g->skel;
    const char *what = "";
    int err = 0, cgroup_fd = -1;
    if (g->attached) {
        pthread_mutex_unlock(&g->lock);
        PyErr_SetString(PyExc_ValueError, "bpf guard: already attached");
        return NULL;
    }
    log_reset();
    /* Fork propagation first: a thread created while the rest attaches is still marked. */
    what = "tp_btf/sched_process_fork";
    s->links.pyi_fork = bpf_program__attach(s->progs.pyi_fork);
    if (s->links.pyi_fork == NULL)
        goto fail;
    what = "tp_btf/sys_enter";
    s->links.pyi_sys_enter = bpf_program__attach(s->progs.pyi_sys_enter);
    if (s->links.pyi_sys_enter == NULL)
        goto fail;
    what = cgroup_dir;
    cgroup_fd = open(cgroup_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cgroup_fd < 0)
        goto fail;
    what = "cgroup/sock_create";
    s->links.pyi_sock_create = bpf_program__attach_cgroup(s->progs.pyi_sock_create, cgroup_fd);
    if (s->links.pyi_sock_create == NULL)
        goto fail;
    what = "cgroup/connect4";
    s->links.pyi_connect4 = bpf_program__attach_cgroup(s->progs.pyi_connect4, cgroup_fd);
    if (s->links.pyi_connect4 == NULL)
        goto fail;
    what = "cgroup/connect6";
    s->links.pyi_connect6 = bpf_program__attach_cgroup(s->progs.pyi_connect6, cgroup_fd);
    if (s->links.pyi_connect6 == NULL)
        goto fail;
    close(cgroup_fd);
    g->attached = 1;
    pthread_mutex_unlock(&g->lock);
    return Py_BuildValue("(sssss)", "tp_btf/sched_process_fork", "tp_btf/sys_enter", "cgroup/sock_create",
                         "cgroup/connect4", "cgroup/connect6");
fail:
    err = errno;
    if (cgroup_fd >= 0)
        close(cgroup_fd);
    guard_bpf__detach(s); /* all or nothing */
    pthread_mutex_unlock(&g->lock);
    return phase_error(err, "attach", what);
}

static int
pidfd_of_thread(int tid)
{
    return (int)syscall(SYS_pidfd_open, tid, PIDFD_THREAD);
}

/* bpf_guard_mark_task(g, tid, policy, flags): mark a thread (task storage). */
PyObject *
pyi_bpf_guard_mark_task(PyObject *module, PyObject *args)
{
    PyObject *capsule;
    int tid;
    unsigned int policy, flags;
    if (!PyArg_ParseTuple(args, "OiII:bpf_guard_mark_task", &capsule, &tid, &policy, &flags))
        return NULL;
    struct guard *g = guard_lock(capsule);
    if (g == NULL)
        return NULL;
    struct pyi_mark mark = {.policy = policy, .flags = flags};
    int err = 0, pidfd = pidfd_of_thread(tid);
    if (pidfd < 0 || bpf_map_update_elem(bpf_map__fd(g->skel->maps.task_marks), &pidfd, &mark, BPF_ANY))
        err = errno;
    if (pidfd >= 0)
        close(pidfd);
    pthread_mutex_unlock(&g->lock);
    if (err) {
        errno = err;
        return PyErr_Format(PyExc_OSError, "bpf guard: mark thread %d: %s", tid, strerror(err));
    }
    Py_RETURN_NONE;
}

/* bpf_guard_task_mark(g, tid) -> (policy, flags) or None: what a thread carries. */
PyObject *
pyi_bpf_guard_task_mark(PyObject *module, PyObject *args)
{
    PyObject *capsule;
    int tid;
    if (!PyArg_ParseTuple(args, "Oi:bpf_guard_task_mark", &capsule, &tid))
        return NULL;
    struct guard *g = guard_lock(capsule);
    if (g == NULL)
        return NULL;
    struct pyi_mark mark;
    int err = 0, pidfd = pidfd_of_thread(tid);
    if (pidfd < 0 || bpf_map_lookup_elem(bpf_map__fd(g->skel->maps.task_marks), &pidfd, &mark))
        err = errno;
    if (pidfd >= 0)
        close(pidfd);
    pthread_mutex_unlock(&g->lock);
    if (err == ENOENT)
        Py_RETURN_NONE;
    if (err)
        return PyErr_Format(PyExc_OSError, "bpf guard: read mark of thread %d: %s", tid, strerror(err));
    return Py_BuildValue("(II)", mark.policy, mark.flags);
}

PyObject *
pyi_bpf_guard_unmark_task(PyObject *module, PyObject *args)
{
    PyObject *capsule;
    int tid;
    if (!PyArg_ParseTuple(args, "Oi:bpf_guard_unmark_task", &capsule, &tid))
        return NULL;
    struct guard *g = guard_lock(capsule);
    if (g == NULL)
        return NULL;
    int err = 0, pidfd = pidfd_of_thread(tid);
    if (pidfd < 0 || bpf_map_delete_elem(bpf_map__fd(g->skel->maps.task_marks), &pidfd))
        err = errno;
    if (pidfd >= 0)
        close(pidfd);
    pthread_mutex_unlock(&g->lock);
    if (err && err != ENOENT && err != ESRCH)
        return PyErr_Format(PyExc_OSError, "bpf guard: unmark thread %d: %s", tid, strerror(err));
    return PyBool_FromLong(err == 0);
}

/* bpf_guard_mark_cgroup(g, cgroup_id, policy, flags); flags None deletes the mark. */
PyObject *
pyi_bpf_guard_mark_cgroup(PyObject *module, PyObject *args)
{
    PyObject *capsule, *flags_obj;
    unsigned long long cgroup;
    unsigned int policy;
    if (!PyArg_ParseTuple(args, "OKIO:bpf_guard_mark_cgroup", &capsule, &cgroup, &policy, &flags_obj))
        return NULL;
    unsigned int flags = 0;
    if (flags_obj != Py_None) {
        flags = (unsigned int)PyLong_AsUnsignedLong(flags_obj);
        if (PyErr_Occurred())
            return NULL;
    }
    struct guard *g = guard_lock(capsule);
    if (g == NULL)
        return NULL;
    __u64 key = cgroup;
    struct pyi_mark mark = {.policy = policy, .flags = flags};
    int fd = bpf_map__fd(g->skel->maps.cgroup_marks), err = 0;
    if (flags_obj == Py_None ? bpf_map_delete_elem(fd, &key) : bpf_map_update_elem(fd, &key, &mark, BPF_ANY))
        err = errno;
    pthread_mutex_unlock(&g->lock);
    if (err && !(flags_obj == Py_None && err == ENOENT))
        return PyErr_Format(PyExc_OSError, "bpf guard: mark cgroup %llu: %s", cgroup, strerror(err));
    Py_RETURN_NONE;
}

/* bpf_guard_rule(g, rule_set, family, addr, port, add): one connect rule in or out.
 * family 0 (any host, addr b""), AF_INET (4 bytes) or AF_INET6 (16); port 0: any. */
PyObject *
pyi_bpf_guard_rule(PyObject *module, PyObject *args)
{
    PyObject *capsule;
    unsigned int rule_set, family, port;
    Py_buffer addr;
    int add;
    if (!PyArg_ParseTuple(args, "OIIy*Ip:bpf_guard_rule", &capsule, &rule_set, &family, &addr, &port, &add))
        return NULL;
    struct pyi_rule_key key;
    memset(&key, 0, sizeof(key));
    size_t want = family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0;
    if ((family != 0 && family != AF_INET && family != AF_INET6) || (size_t)addr.len != want || port > 65535) {
        PyBuffer_Release(&addr);
        return PyErr_Format(PyExc_ValueError, "bpf guard: bad rule (family %u, %zd address bytes, port %u)", family,
                            addr.len, port);
    }
    key.policy = rule_set; /* the field holds the rule set (guard.h) */
    key.family = (__u8)family;
    key.port = (__u16)port;
    memcpy(key.addr, addr.buf, want);
    PyBuffer_Release(&addr);
    struct guard *g = guard_lock(capsule);
    if (g == NULL)
        return NULL;
    __u8 one = 1;
    int fd = bpf_map__fd(g->skel->maps.rules), err = 0;
    if (add ? bpf_map_update_elem(fd, &key, &one, BPF_ANY) : bpf_map_delete_elem(fd, &key))
        err = errno;
    pthread_mutex_unlock(&g->lock);
    if (err && !(!add && err == ENOENT))
        return PyErr_Format(PyExc_OSError, "bpf guard: %s rule of set %u: %s", add ? "add" : "delete", rule_set,
                            strerror(err));
    Py_RETURN_NONE;
}

/* bpf_guard_rule_set(g, policy, rule_set): point a policy at a rule set, in one map
 * update (None: the policy has none, and allows nothing). */
PyObject *
pyi_bpf_guard_rule_set(PyObject *module, PyObject *args)
{
    PyObject *capsule, *set_obj;
    unsigned int policy;
    if (!PyArg_ParseTuple(args, "OIO:bpf_guard_rule_set", &capsule, &policy, &set_obj))
        return NULL;
    __u32 key = policy, value = 0;
    if (set_obj != Py_None) {
        value = (__u32)PyLong_AsUnsignedLong(set_obj);
        if (PyErr_Occurred())
            return NULL;
    }
    struct guard *g = guard_lock(capsule);
    if (g == NULL)
        return NULL;
    int fd = bpf_map__fd(g->skel->maps.rule_sets), err = 0;
    if (set_obj == Py_None ? bpf_map_delete_elem(fd, &key) : bpf_map_update_elem(fd, &key, &value, BPF_ANY))
        err = errno;
    pthread_mutex_unlock(&g->lock);
    if (err && !(set_obj == Py_None && err == ENOENT))
        return PyErr_Format(PyExc_OSError, "bpf guard: rule set of policy %u: %s", policy, strerror(err));
    Py_RETURN_NONE;
}

/* bpf_guard_events(g) -> list of tuples, oldest first (what the ring buffer holds now):
 * (time_ns, cgroup, tid, tgid, policy, hook, nr, port, family, source, addr, comm) */
PyObject *
pyi_bpf_guard_events(PyObject *module, PyObject *capsule)
{
    struct guard *g = guard_lock(capsule);
    if (g == NULL)
        return NULL;
    g->nevents = 0;
    int n = ring_buffer__consume(g->ring);
    if (n < 0 && g->nevents == 0) {
        pthread_mutex_unlock(&g->lock);
        return phase_error(n, "events", "reading the ring buffer");
    }
    PyObject *list = PyList_New(0);
    for (size_t i = 0; list != NULL && i < g->nevents; i++) {
        struct pyi_event *e = &g->events[i];
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
    pthread_mutex_unlock(&g->lock);
    return list;
}

/* bpf_guard_counters(g) -> {"denials": n, "dropped": n} (the program's .bss) */
PyObject *
pyi_bpf_guard_counters(PyObject *module, PyObject *capsule)
{
    struct guard *g = guard_lock(capsule);
    if (g == NULL)
        return NULL;
    unsigned long long denials = __atomic_load_n(&g->skel->bss->denials, __ATOMIC_RELAXED);
    unsigned long long dropped = __atomic_load_n(&g->skel->bss->dropped, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&g->lock);
    return Py_BuildValue("{sKsK}", "denials", denials, "dropped", dropped);
}

/* bpf_guard_close(g): detach and unload now (the capsule's destructor does it too). */
PyObject *
pyi_bpf_guard_close(PyObject *module, PyObject *capsule)
{
    struct guard *g = PyCapsule_GetPointer(capsule, CAPSULE_NAME);
    if (g == NULL)
        return NULL;
    pthread_mutex_lock(&g->lock);
    guard_free(g);
    pthread_mutex_unlock(&g->lock);
    Py_RETURN_NONE;
}

/* bpf_probe_lsm() -> (loaded, errno, detail): try to load (never attach) the smallest
 * BPF-LSM program, "return 0" on lsm/file_open, so `pyisolate doctor` reports what the
 * kernel does rather than what its config says (on the development host: EPERM before
 * the verifier runs, even as root). */
PyObject *
pyi_bpf_probe_lsm(PyObject *module, PyObject *unused)
{
    struct bpf_insn insns[] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0},
        {.code = BPF_JMP | BPF_EXIT},
    };
    struct btf *vmlinux = btf__load_vmlinux_btf();
    if (vmlinux == NULL)
        return Py_BuildValue("(Ois)", Py_False, errno, "no kernel BTF (/sys/kernel/btf/vmlinux)");
    int id = btf__find_by_name_kind(vmlinux, "bpf_lsm_file_open", BTF_KIND_FUNC);
    btf__free(vmlinux);
    if (id < 0)
        return Py_BuildValue("(Ois)", Py_False, ENOENT, "the kernel has no bpf_lsm_file_open (built without BPF-LSM)");
    LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_LSM_MAC, .attach_btf_id = (__u32)id);
    int fd = bpf_prog_load(BPF_PROG_TYPE_LSM, "pyi_probe", "GPL", insns, 2, &opts);
    if (fd < 0) {
        int err = errno;
        return Py_BuildValue("(OiN)", Py_False, err,
                             PyUnicode_FromFormat("loading an lsm/file_open program: %s", strerror(err)));
    }
    close(fd);
    return Py_BuildValue("(Ois)", Py_True, 0, "an lsm/file_open program loads (attaching needs bpf in lsm=)");
}
