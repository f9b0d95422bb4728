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
 * buffer of denials. The log, the phase errors, the capsule's loader (its lock, ring
 * buffer, close) are bpf_common.c's, shared with bpf_guard.c. */
#define _GNU_SOURCE
#include "bpf_common.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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
#define WHO "bpf lsm"
#define MAX_PENDING 256 /* the `pending` map's size */

struct lsm {
    struct pyi_bpf_loader base; /* first: the capsule holds the struct's address */
    /* tids this loader put into `pending` that no hook has consumed yet: each one holds a
     * unit of pending_count, given back once the program has removed the entry. */
    __u32 pending[MAX_PENDING];
    size_t npending;
};

/* The skeleton's destructor, as struct pyi_bpf_loader calls it. */
static void
skel_destroy(void *skel)
{
    lsm_bpf__destroy(skel); /* detaches every program, closes every map */
}

/* The loader of a capsule, locked; NULL (with an exception) when closed or wrong. */
static struct lsm *
lsm_lock(PyObject *capsule)
{
    return (struct lsm *)pyi_bpf_loader_lock(capsule, CAPSULE_NAME);
}

/* The loader's skeleton (its lock held, so not closed). */
static struct lsm_bpf *
lsm_skel(struct lsm *l)
{
    return l->base.skel;
}

PyObject *
pyi_bpf_lsm_open(PyObject *module, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "bpf_lsm_open(obj): obj must be the object file's bytes");
        return NULL;
    }
    struct pyi_bpf_loader *l = pyi_bpf_loader_new(sizeof(struct lsm), WHO, arg, skel_destroy);
    if (l == NULL)
        return NULL;
    /* libbpf's print callback is process-wide: the capture for these calls only */
    libbpf_print_fn_t previous = pyi_bpf_log_begin();
    PyObject *capsule = NULL;
    struct lsm_bpf *s = calloc(1, sizeof(*s));
    l->skel = s;
    int err = s == NULL || l->events == NULL ? -ENOMEM : lsm_bpf__create_skeleton(s);
    if (err == 0)
        err = pyi_bpf_open_verified(s->skeleton, arg); /* the verified bytes */
    if (err) {
        pyi_bpf_phase_error(WHO, err, "open", "lsm.bpf.o (ELF, BTF, skeleton names)");
        goto done;
    }
    if (pyi_bpf_load_detached(s->skeleton, WHO, "lsm.bpf.o (maps, programs, verifier)") < 0)
        goto done;
    capsule = pyi_bpf_loader_capsule(l, CAPSULE_NAME, bpf_map__fd(s->maps.events));
done:
    pyi_bpf_log_end(previous);
    if (capsule == NULL)
        pyi_bpf_loader_delete(l);
    return capsule;
}

PyObject *
pyi_bpf_lsm_attach(PyObject *module, PyObject *capsule)
{
    struct lsm *l = lsm_lock(capsule);
    if (l == NULL)
        return NULL;
    if (l->base.attached) {
        pthread_mutex_unlock(&l->base.lock);
        PyErr_SetString(PyExc_ValueError, "bpf lsm: already attached");
        return NULL;
    }
    libbpf_print_fn_t previous = pyi_bpf_log_begin();
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = lsm_bpf__attach(lsm_skel(l));
    Py_END_ALLOW_THREADS
    pyi_bpf_log_end(previous);
    if (err) {
        lsm_bpf__detach(lsm_skel(l)); /* all or nothing */
        pthread_mutex_unlock(&l->base.lock);
        return pyi_bpf_phase_error(WHO, err, "attach", "the lsm/ programs");
    }
    l->base.attached = 1;
    pthread_mutex_unlock(&l->base.lock);
    return Py_BuildValue("(sssssss)", "lsm/task_alloc", "lsm/file_open", "lsm/inode_unlink", "lsm/socket_connect",
                         "lsm/bprm_check_security", "lsm/ptrace_access_check", "lsm/bpf");
}

/* Give back pending_count for every tid whose entry a hook has consumed (lock held). */
static void
pending_sweep(struct lsm *l)
{
    int fd = bpf_map__fd(lsm_skel(l)->maps.pending);
    size_t kept = 0;
    for (size_t i = 0; i < l->npending; i++) {
        struct pyi_mark m;
        __u32 key = l->pending[i];
        if (bpf_map_lookup_elem(fd, &key, &m) == 0)
            l->pending[kept++] = key;
        else
            __atomic_sub_fetch(&lsm_skel(l)->bss->pending_count, 1, __ATOMIC_SEQ_CST);
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
        if (bpf_map_update_elem(bpf_map__fd(lsm_skel(l)->maps.task_marks), &pidfd, &mark, BPF_ANY))
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
        else if (bpf_map_update_elem(bpf_map__fd(lsm_skel(l)->maps.pending), &key, &mark, BPF_ANY))
            err = errno;
        else {
            /* the entry is in place before the count lets hooks look */
            l->pending[l->npending++] = key;
            __atomic_add_fetch(&lsm_skel(l)->bss->pending_count, 1, __ATOMIC_SEQ_CST);
        }
    }
    pthread_mutex_unlock(&l->base.lock);
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
    int removed = bpf_map_delete_elem(bpf_map__fd(lsm_skel(l)->maps.pending), &key) == 0;
    pending_sweep(l);
    pthread_mutex_unlock(&l->base.lock);
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
    pthread_mutex_unlock(&l->base.lock);
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
    int err = pyi_bpf_map_put_unlock(&l->base, bpf_map__fd(lsm_skel(l)->maps.fs_rules), &key, bits ? &value : NULL);
    if (err)
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
    if (pyi_bpf_rule_key(&key, WHO, rule_set, family, &addr, port) != 0)
        return NULL;
    struct lsm *l = lsm_lock(capsule);
    if (l == NULL)
        return NULL;
    __u8 one = 1;
    int err = pyi_bpf_map_put_unlock(&l->base, bpf_map__fd(lsm_skel(l)->maps.rules), &key, add ? &one : NULL);
    if (err)
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
    __u32 key = policy, value;
    if (pyi_bpf_u32_or_none(set_obj, &value) != 0)
        return NULL;
    struct lsm *l = lsm_lock(capsule);
    if (l == NULL)
        return NULL;
    int err = pyi_bpf_map_put_unlock(&l->base, bpf_map__fd(lsm_skel(l)->maps.rule_sets), &key,
                                     set_obj == Py_None ? NULL : &value);
    if (err)
        return PyErr_Format(PyExc_OSError, "bpf lsm: rule set of policy %u: %s", policy, strerror(err));
    Py_RETURN_NONE;
}

/* bpf_lsm_events(l) -> list of tuples, oldest first, as bpf_guard_events (guard.h's event). */
PyObject *
pyi_bpf_lsm_events(PyObject *module, PyObject *capsule)
{
    return pyi_bpf_loader_events(capsule, CAPSULE_NAME);
}

/* bpf_lsm_close(l): detach and unload now (the capsule's destructor does it too). */
PyObject *
pyi_bpf_lsm_close(PyObject *module, PyObject *capsule)
{
    return pyi_bpf_loader_close(capsule, CAPSULE_NAME);
}
