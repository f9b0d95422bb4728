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
 * then map updates (marks, rules) and reading the denial ring buffer. The log, the phase
 * errors, the capsule's loader (its lock, ring buffer, close) are bpf_common.c's, shared
 * with bpf_lsm.c.
 *
 * bpf_guard_open((bytes, exec_kill)) with exec_kill false (the operator's
 * PYISOLATE_HOST_BPF=net) never loads tp_btf/sys_enter, the one program that runs on every
 * system call of the host; attach then leaves it out and names the four it attached. */
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
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "guard.h"
#include "guard.skel.h"

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL /* include/uapi/linux/pidfd.h, Linux >= 6.9 */
#endif

#define CAPSULE_NAME "pyisolate.bpf_guard"
#define WHO "bpf guard"

/* The skeleton's destructor, as struct pyi_bpf_loader calls it. */
static void
skel_destroy(void *skel)
{
    guard_bpf__destroy(skel); /* detaches every link, closes every map */
}

/* The guard of a capsule, locked; NULL (with an exception) when closed or wrong. */
static struct pyi_bpf_loader *
guard_lock(PyObject *capsule)
{
    return pyi_bpf_loader_lock(capsule, CAPSULE_NAME);
}

/* The guard's skeleton (its loader locked, so not closed). */
static struct guard_bpf *
guard_skel(struct pyi_bpf_loader *g)
{
    return g->skel;
}

PyObject *
pyi_bpf_guard_open(PyObject *module, PyObject *arg)
{
    int exec_kill = 1;
    if (PyTuple_Check(arg)) { /* (bytes, exec_kill) */
        PyObject *obj;
        if (!PyArg_ParseTuple(arg, "Op:bpf_guard_open", &obj, &exec_kill))
            return NULL;
        arg = obj;
    }
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "bpf_guard_open(obj): obj must be the object file's bytes, or "
                                         "(bytes, exec_kill)");
        return NULL;
    }
    struct pyi_bpf_loader *g = pyi_bpf_loader_new(sizeof(*g), WHO, arg, skel_destroy);
    if (g == NULL)
        return NULL;
    pyi_bpf_log_begin(); /* left installed: libbpf's later messages are kept too */
    struct guard_bpf *s = calloc(1, sizeof(*s));
    g->skel = s;
    int err = s == NULL || g->events == NULL ? -ENOMEM : guard_bpf__create_skeleton(s);
    if (err == 0)
        err = pyi_bpf_open_verified(s->skeleton, arg); /* not the copy embedded in this module */
    if (err) {
        pyi_bpf_phase_error(WHO, err, "open", "guard.bpf.o (ELF, BTF, skeleton names)");
        goto fail;
    }
    if (!exec_kill) /* not loaded at all: the verifier never sees it, attach skips it */
        err = bpf_program__set_autoload(s->progs.pyi_sys_enter, false);
    if (err) {
        pyi_bpf_phase_error(WHO, err, "open", "tp_btf/sys_enter (leaving it out)");
        goto fail;
    }
    if (pyi_bpf_load_detached(s->skeleton, WHO, "guard.bpf.o (maps, programs, verifier)") < 0)
        goto fail;
    PyObject *capsule = pyi_bpf_loader_capsule(g, CAPSULE_NAME, bpf_map__fd(s->maps.events));
    if (capsule != NULL)
        return capsule;
fail:
    pyi_bpf_loader_delete(g);
    return NULL;
}

/* Every program, fork propagation first (a thread created while the rest attaches is
 * still marked); on failure errno is set and *what names the step. Runs detached from
 * the interpreter: it touches no Python object. */
static int
attach_all(struct guard_bpf *s, int exec_kill, const char *cgroup_dir, const char **what)
{
    *what = "tp_btf/sched_process_fork";
    s->links.pyi_fork = bpf_program__attach(s->progs.pyi_fork);
    if (s->links.pyi_fork == NULL)
        return -1;
    *what = "tp_btf/sys_enter";
    if (exec_kill) {
        s->links.pyi_sys_enter = bpf_program__attach(s->progs.pyi_sys_enter);
        if (s->links.pyi_sys_enter == NULL)
            return -1;
    }
    *what = cgroup_dir;
    int cgroup_fd = open(cgroup_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cgroup_fd < 0)
        return -1;
    struct bpf_link **links[] = {&s->links.pyi_sock_create, &s->links.pyi_connect4, &s->links.pyi_connect6};
    struct bpf_program *progs[] = {s->progs.pyi_sock_create, s->progs.pyi_connect4, s->progs.pyi_connect6};
    const char *names[] = {"cgroup/sock_create", "cgroup/connect4", "cgroup/connect6"};
    for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++) {
        *what = names[i];
        *links[i] = bpf_program__attach_cgroup(progs[i], cgroup_fd);
        if (*links[i] == NULL) {
            int saved = errno;
            close(cgroup_fd);
            errno = saved;
            return -1;
        }
    }
    close(cgroup_fd);
    return 0;
}

PyObject *
pyi_bpf_guard_attach(PyObject *module, PyObject *args)
{
    PyObject *capsule;
    const char *cgroup_dir;
    if (!PyArg_ParseTuple(args, "Os:bpf_guard_attach", &capsule, &cgroup_dir))
        return NULL;
    struct pyi_bpf_loader *g = guard_lock(capsule);
    if (g == NULL)
        return NULL;
    struct guard_bpf *s = g->skel;
    const char *what = "";
    int rc, err = 0;
    /* Left out at open (PYISOLATE_HOST_BPF=net): not loaded, so nothing to attach. */
    int exec_kill = bpf_program__autoload(s->progs.pyi_sys_enter);
    if (g->attached) {
        pthread_mutex_unlock(&g->lock);
        PyErr_SetString(PyExc_ValueError, "bpf guard: already attached");
        return NULL;
    }
    pyi_bpf_log_begin(); /* emptied; installed again in case bpf_lsm.c put another one back */
    Py_BEGIN_ALLOW_THREADS
    rc = attach_all(s, exec_kill, cgroup_dir, &what);
    err = errno;
    if (rc < 0)
        guard_bpf__detach(s); /* all or nothing */
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        pthread_mutex_unlock(&g->lock);
        return pyi_bpf_phase_error(WHO, err, "attach", what);
    }
    g->attached = 1;
    pthread_mutex_unlock(&g->lock);
    if (!exec_kill)
        return Py_BuildValue("(ssss)", "tp_btf/sched_process_fork", "cgroup/sock_create", "cgroup/connect4",
                             "cgroup/connect6");
    return Py_BuildValue("(sssss)", "tp_btf/sched_process_fork", "tp_btf/sys_enter", "cgroup/sock_create",
                         "cgroup/connect4", "cgroup/connect6");
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
    struct pyi_bpf_loader *g = guard_lock(capsule);
    if (g == NULL)
        return NULL;
    struct pyi_mark mark = {.policy = policy, .flags = flags};
    int err = 0, pidfd = pidfd_of_thread(tid);
    if (pidfd < 0 || bpf_map_update_elem(bpf_map__fd(guard_skel(g)->maps.task_marks), &pidfd, &mark, BPF_ANY))
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
    struct pyi_bpf_loader *g = guard_lock(capsule);
    if (g == NULL)
        return NULL;
    struct pyi_mark mark;
    int err = 0, pidfd = pidfd_of_thread(tid);
    if (pidfd < 0 || bpf_map_lookup_elem(bpf_map__fd(guard_skel(g)->maps.task_marks), &pidfd, &mark))
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
    struct pyi_bpf_loader *g = guard_lock(capsule);
    if (g == NULL)
        return NULL;
    int err = 0, pidfd = pidfd_of_thread(tid);
    if (pidfd < 0 || bpf_map_delete_elem(bpf_map__fd(guard_skel(g)->maps.task_marks), &pidfd))
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
    unsigned int flags;
    if (pyi_bpf_u32_or_none(flags_obj, &flags) != 0)
        return NULL;
    struct pyi_bpf_loader *g = guard_lock(capsule);
    if (g == NULL)
        return NULL;
    __u64 key = cgroup;
    struct pyi_mark mark = {.policy = policy, .flags = flags};
    int err = pyi_bpf_map_put_unlock(g, bpf_map__fd(guard_skel(g)->maps.cgroup_marks), &key,
                                     flags_obj == Py_None ? NULL : &mark);
    if (err)
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
    struct pyi_rule_key key; /* its policy field holds the rule set (guard.h) */
    if (pyi_bpf_rule_key(&key, WHO, rule_set, family, &addr, port) != 0)
        return NULL;
    struct pyi_bpf_loader *g = guard_lock(capsule);
    if (g == NULL)
        return NULL;
    __u8 one = 1;
    int err = pyi_bpf_map_put_unlock(g, bpf_map__fd(guard_skel(g)->maps.rules), &key, add ? &one : NULL);
    if (err)
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
    __u32 key = policy, value;
    if (pyi_bpf_u32_or_none(set_obj, &value) != 0)
        return NULL;
    struct pyi_bpf_loader *g = guard_lock(capsule);
    if (g == NULL)
        return NULL;
    int err = pyi_bpf_map_put_unlock(g, bpf_map__fd(guard_skel(g)->maps.rule_sets), &key,
                                     set_obj == Py_None ? NULL : &value);
    if (err)
        return PyErr_Format(PyExc_OSError, "bpf guard: rule set of policy %u: %s", policy, strerror(err));
    Py_RETURN_NONE;
}

/* bpf_guard_events(g) -> list of tuples, oldest first (what the ring buffer holds now):
 * (time_ns, cgroup, tid, tgid, policy, hook, nr, port, family, source, addr, comm) */
PyObject *
pyi_bpf_guard_events(PyObject *module, PyObject *capsule)
{
    return pyi_bpf_loader_events(capsule, CAPSULE_NAME);
}

/* bpf_guard_counters(g) -> {"denials": n, "dropped": n} (the program's .bss) */
PyObject *
pyi_bpf_guard_counters(PyObject *module, PyObject *capsule)
{
    struct pyi_bpf_loader *g = guard_lock(capsule);
    if (g == NULL)
        return NULL;
    unsigned long long denials = __atomic_load_n(&guard_skel(g)->bss->denials, __ATOMIC_RELAXED);
    unsigned long long dropped = __atomic_load_n(&guard_skel(g)->bss->dropped, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&g->lock);
    return Py_BuildValue("{sKsK}", "denials", denials, "dropped", dropped);
}

/* bpf_guard_close(g): detach and unload now (the capsule's destructor does it too). */
PyObject *
pyi_bpf_guard_close(PyObject *module, PyObject *capsule)
{
    return pyi_bpf_loader_close(capsule, CAPSULE_NAME);
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
