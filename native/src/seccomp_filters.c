/* seccomp filters (libseccomp, linked statically).
 *
 * Two filters:
 *  - the cell's base filter, process-wide (TSYNC), installed before the cell runs
 *    anything: a deny-list of what no cell ever needs (exec, ptrace, bpf, kexec,
 *    modules, mounts, namespaces, keyrings, io_uring, new processes, …);
 *  - the sandbox thread's allow-list, installed WITHOUT TSYNC on the sandbox's own
 *    thread before its interpreter runs guest code, so only that thread (and threads
 *    it creates) is filtered: what CPython needs to run Python code, import from the
 *    files Landlock lets it open, make threads and talk over its socket. Everything
 *    else fails with EPERM.
 *
 * Denials are SECCOMP_RET_ERRNO(EPERM), never KILL_THREAD: a Python thread killed
 * inside a syscall leaves its interpreter waiting for it forever. libseccomp checks the
 * architecture (AUDIT_ARCH_X86_64) first; other architectures and x32 system calls
 * (the __X32_SYSCALL_BIT) get EPERM as well. */
#include "_pyisolate.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <termios.h>

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#endif
#ifndef F_OFD_GETLK
#define F_OFD_GETLK 36
#define F_OFD_SETLK 37
#define F_OFD_SETLKW 38
#endif
#define LOW32 0xffffffffULL /* int arguments: the kernel reads only the low 32 bits */
#define NAMESPACE_FLAGS                                                                                          \
    (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | \
     0x00000080ULL /* CLONE_NEWTIME */)

struct builder {
    scmp_filter_ctx ctx;
    int err;
    const char *failed;
    int rules;
};

static void
add(struct builder *b, uint32_t action, int nr, const char *name, unsigned int n, const struct scmp_arg_cmp *cmp)
{
    if (b->err)
        return;
    int rc = seccomp_rule_add_exact_array(b->ctx, action, nr, n, cmp);
    if (rc < 0) {
        b->err = rc;
        b->failed = name;
        return;
    }
    b->rules++;
}

#define RULE(b, action, name, ...)                                                                          \
    do {                                                                                                   \
        const struct scmp_arg_cmp cmp_[] = {__VA_ARGS__};                                                  \
        add((b), (action), SCMP_SYS(name), #name, sizeof cmp_ / sizeof cmp_[0], cmp_);                     \
    } while (0)
#define ALLOW(b, name) add((b), SCMP_ACT_ALLOW, SCMP_SYS(name), #name, 0, NULL)
#define ALLOW_IF(b, name, ...) RULE(b, SCMP_ACT_ALLOW, name, __VA_ARGS__)
#define DENY(b, name) add((b), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(name), #name, 0, NULL)
#define ALLOW_INT_ARG(b, name, arg, value) ALLOW_IF(b, name, SCMP_CMP((arg), SCMP_CMP_MASKED_EQ, LOW32, (value)))

static int
builder_init(struct builder *b, uint32_t default_action)
{
    *b = (struct builder){.ctx = seccomp_init(default_action)};
    if (b->ctx == NULL) {
        errno = ENOMEM;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    /* Another architecture (i386 via int 0x80) or an x32 call gets EPERM too. The rules
     * are laid out as a binary tree of syscall numbers: calls with argument checks (mmap,
     * fcntl, ioctl, …) cost a few comparisons, not a walk of the whole list (calls that
     * are always allowed cost nothing: the kernel caches them per filter). */
    if (seccomp_attr_set(b->ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_ERRNO(EPERM)) < 0 ||
        seccomp_attr_set(b->ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2) < 0) {
        seccomp_release(b->ctx);
        PyErr_SetString(PyExc_OSError, "seccomp: cannot set the filter's attributes");
        return -1;
    }
    return 0;
}

static int
builder_error(struct builder *b, const char *phase)
{
    if (b->err) {
        PyErr_Format(PyExc_OSError, "seccomp: %s: rule for %s: %s", phase, b->failed, strerror(-b->err));
        return -1;
    }
    return 0;
}

/* The sandbox thread's allow-list. `network`: the policy has connect rules (TCP sockets
 * may be made and connected; Landlock decides the ports). `truncate_path`: Landlock
 * handles truncate(2) on paths (ABI >= 3), so it may be allowed. `ffi`: the policy
 * re-enables ctypes, whose libffi closures need memfd_create (a file it maps twice,
 * writable and executable, since executable anonymous memory is refused). */
static void
thread_allow_list(struct builder *b, int network, int truncate_path, int ffi)
{
    /* I/O on descriptors the thread holds: its socket, stdio, and files Landlock let it open. */
    ALLOW(b, read);
    ALLOW(b, write);
    ALLOW(b, readv);
    ALLOW(b, writev);
    ALLOW(b, pread64);
    ALLOW(b, pwrite64);
    ALLOW(b, preadv);
    ALLOW(b, pwritev);
    ALLOW(b, preadv2);
    ALLOW(b, pwritev2);
    ALLOW(b, lseek);
    ALLOW(b, close);
    ALLOW(b, fsync);
    ALLOW(b, fdatasync);
    ALLOW(b, fallocate);
    ALLOW(b, fadvise64);
    ALLOW(b, flock);
    ALLOW(b, ftruncate);
    ALLOW(b, sendfile);        /* shutil.copyfile between descriptors */
    ALLOW(b, copy_file_range); /* idem */
    ALLOW(b, dup);
    ALLOW(b, dup2);
    ALLOW(b, dup3);
    ALLOW(b, pipe);
    ALLOW(b, pipe2);
    ALLOW(b, poll);
    ALLOW(b, ppoll);
    ALLOW(b, select);
    ALLOW(b, pselect6);
    ALLOW(b, epoll_create1);
    ALLOW(b, epoll_ctl);
    ALLOW(b, epoll_wait);
    ALLOW(b, epoll_pwait);
    ALLOW(b, epoll_pwait2);
    ALLOW(b, eventfd2);
    /* fcntl: descriptor flags, status flags, record locks, dup; not F_SETOWN/F_SETSIG
     * (signals to other processes), leases, notifications or seals. */
    static const int fcntl_cmds[] = {F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD,     F_SETFD,     F_GETFL,     F_SETFL,
                                     F_GETLK, F_SETLK,         F_SETLKW,    F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW};
    for (size_t i = 0; i < sizeof fcntl_cmds / sizeof fcntl_cmds[0]; i++)
        ALLOW_INT_ARG(b, fcntl, 1, fcntl_cmds[i]);
    /* ioctl: what CPython asks of descriptors (isatty, terminal size, close-on-exec,
     * non-blocking, bytes readable). Not TIOCSTI (typing into a terminal) or anything else. */
    static const unsigned long ioctl_cmds[] = {TCGETS, TIOCGWINSZ, FIOCLEX, FIONCLEX, FIONBIO, FIONREAD};
    for (size_t i = 0; i < sizeof ioctl_cmds / sizeof ioctl_cmds[0]; i++)
        ALLOW_INT_ARG(b, ioctl, 1, ioctl_cmds[i]);

    /* Paths: Landlock decides which may be opened, created, removed or renamed. */
    ALLOW(b, open);
    ALLOW(b, openat);
    ALLOW(b, openat2);
    ALLOW(b, creat);
    ALLOW(b, mkdir);
    ALLOW(b, mkdirat);
    ALLOW(b, rmdir);
    ALLOW(b, unlink);
    ALLOW(b, unlinkat);
    ALLOW(b, rename);
    ALLOW(b, renameat);
    ALLOW(b, renameat2);
    if (truncate_path)
        ALLOW(b, truncate);
    /* Metadata reads and the working directory (Landlock does not gate these). Changing
     * modes, owners, times or extended attributes is refused: Landlock cannot confine it. */
    ALLOW(b, stat);
    ALLOW(b, lstat);
    ALLOW(b, fstat);
    ALLOW(b, newfstatat);
    ALLOW(b, statx);
    ALLOW(b, statfs);
    ALLOW(b, fstatfs);
    ALLOW(b, access);
    ALLOW(b, faccessat);
    ALLOW(b, faccessat2);
    ALLOW(b, readlink);
    ALLOW(b, readlinkat);
    ALLOW(b, getdents64);
    ALLOW(b, getcwd);
    ALLOW(b, chdir);
    ALLOW(b, fchdir);
    ALLOW(b, getxattr);
    ALLOW(b, lgetxattr);
    ALLOW(b, fgetxattr);
    ALLOW(b, listxattr);
    ALLOW(b, llistxattr);
    ALLOW(b, flistxattr);

    /* Memory. No executable anonymous memory and nothing writable and executable at once
     * (mmap or mprotect with PROT_EXEC): only read-only file mappings may be executable,
     * as the dynamic loader maps extension modules. */
    ALLOW(b, brk);
    ALLOW(b, munmap);
    ALLOW(b, mremap);
    ALLOW(b, madvise);
    ALLOW(b, msync);
    ALLOW_IF(b, mmap, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
    ALLOW_IF(b, mmap, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_WRITE, 0), SCMP_A3(SCMP_CMP_MASKED_EQ, MAP_ANONYMOUS, 0));
    ALLOW_IF(b, mprotect, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
    if (ffi)
        ALLOW(b, memfd_create);

    /* Threads, never processes. clone3 passes its flags in memory seccomp cannot read:
     * ENOSYS makes glibc fall back to clone, whose flags are checked here. */
    ALLOW_IF(b, clone, SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD | NAMESPACE_FLAGS, CLONE_THREAD));
    add(b, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), "clone3", 0, NULL);
    ALLOW(b, futex);
    ALLOW(b, set_robust_list);
    ALLOW(b, rseq);
    ALLOW(b, sched_yield);
    ALLOW(b, sched_getaffinity);
    ALLOW(b, sched_getparam);
    ALLOW(b, sched_getscheduler);
    ALLOW(b, getcpu);
    ALLOW(b, exit);
    ALLOW(b, exit_group);

    /* Identity, limits (reading only), time, randomness, signal masks. */
    ALLOW(b, getpid);
    ALLOW(b, gettid);
    ALLOW(b, getppid);
    ALLOW(b, getuid);
    ALLOW(b, geteuid);
    ALLOW(b, getgid);
    ALLOW(b, getegid);
    ALLOW(b, getgroups);
    ALLOW(b, getresuid);
    ALLOW(b, getresgid);
    ALLOW(b, getpgrp);
    ALLOW(b, getpgid);
    ALLOW(b, getsid);
    ALLOW(b, uname);
    ALLOW(b, sysinfo);
    ALLOW(b, getrusage);
    ALLOW(b, times);
    ALLOW(b, getrlimit);
    ALLOW_IF(b, prlimit64, SCMP_A0(SCMP_CMP_MASKED_EQ, LOW32, 0), SCMP_A2(SCMP_CMP_EQ, 0));
    ALLOW(b, clock_gettime);
    ALLOW(b, clock_getres);
    ALLOW(b, gettimeofday);
    ALLOW(b, time);
    ALLOW(b, nanosleep);
    ALLOW(b, clock_nanosleep);
    ALLOW(b, getrandom);
    ALLOW(b, rt_sigprocmask);
    ALLOW(b, rt_sigreturn);
    ALLOW(b, sigaltstack);
    ALLOW(b, restart_syscall);
    /* prctl: thread names, anonymous memory names, and reading its own state. */
    static const int prctl_options[] = {PR_SET_NAME, PR_GET_NAME, PR_SET_VMA, PR_GET_NO_NEW_PRIVS, PR_GET_SECCOMP};
    for (size_t i = 0; i < sizeof prctl_options / sizeof prctl_options[0]; i++)
        ALLOW_INT_ARG(b, prctl, 0, prctl_options[i]);

    /* Sockets the thread already holds (its channel to the supervisor). */
    ALLOW(b, sendto);
    ALLOW(b, recvfrom);
    ALLOW(b, getsockopt);
    ALLOW(b, getsockname);
    ALLOW(b, getpeername);
    ALLOW(b, shutdown);
    if (network) {
        /* TCP over IPv4/IPv6 only; Landlock decides the ports, the audit hook the hosts.
         * No bind, listen or accept: a sandbox is never a server. */
        static const int families[] = {AF_INET, AF_INET6};
        for (size_t i = 0; i < 2; i++)
            ALLOW_IF(b, socket, SCMP_A0(SCMP_CMP_MASKED_EQ, LOW32, families[i]),
                     SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, SOCK_STREAM));
        ALLOW(b, connect);
        ALLOW(b, setsockopt);
    }
}

/* The cell's base filter: default allow, EPERM for what no cell ever needs. */
static void
cell_deny_list(struct builder *b)
{
    DENY(b, execve);
    DENY(b, execveat);
    DENY(b, fork);
    DENY(b, vfork);
    RULE(b, SCMP_ACT_ERRNO(EPERM), clone, SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0)); /* a new process */
    add(b, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), "clone3", 0, NULL); /* glibc falls back to clone */
    DENY(b, ptrace);
    DENY(b, process_vm_readv);
    DENY(b, process_vm_writev);
    DENY(b, process_madvise);
    DENY(b, kcmp);
    DENY(b, pidfd_getfd);
    DENY(b, bpf);
    DENY(b, perf_event_open);
    DENY(b, userfaultfd);
    DENY(b, io_uring_setup);
    DENY(b, io_uring_enter);
    DENY(b, io_uring_register);
    DENY(b, kexec_load);
    DENY(b, kexec_file_load);
    DENY(b, init_module);
    DENY(b, finit_module);
    DENY(b, delete_module);
    DENY(b, mount);
    DENY(b, umount2);
    DENY(b, pivot_root);
    DENY(b, chroot);
    DENY(b, fsopen);
    DENY(b, fsconfig);
    DENY(b, fsmount);
    DENY(b, fspick);
    DENY(b, move_mount);
    DENY(b, open_tree);
    DENY(b, mount_setattr);
    DENY(b, setns);
    DENY(b, unshare);
    DENY(b, keyctl);
    DENY(b, add_key);
    DENY(b, request_key);
    DENY(b, open_by_handle_at);
    DENY(b, name_to_handle_at);
    DENY(b, reboot);
    DENY(b, swapon);
    DENY(b, swapoff);
    DENY(b, acct);
    DENY(b, quotactl);
    DENY(b, settimeofday);
    DENY(b, clock_settime);
    DENY(b, clock_adjtime);
    DENY(b, adjtimex);
    DENY(b, syslog);
    DENY(b, iopl);
    DENY(b, ioperm);
    DENY(b, uselib);
    DENY(b, fanotify_init);
    DENY(b, vhangup);
}

/* Check the rules, load the filter (on the calling thread, or with TSYNC on every thread
 * of the process) and release the context: 0, or -1 with a Python exception set. */
static int
builder_load(struct builder *b, const char *phase, int tsync)
{
    int rc = builder_error(b, phase);
    if (rc == 0 && tsync && seccomp_attr_set(b->ctx, SCMP_FLTATR_CTL_TSYNC, 1) < 0) {
        PyErr_Format(PyExc_OSError, "seccomp: %s: TSYNC unavailable", phase);
        rc = -1;
    }
    if (rc == 0 && (rc = seccomp_load(b->ctx)) < 0) {
        errno = -rc;
        PyErr_SetFromErrno(PyExc_OSError);
        rc = -1;
    }
    seccomp_release(b->ctx);
    return rc;
}

PyObject *
pyi_seccomp_api_level(PyObject *module, PyObject *unused)
{
    return PyLong_FromUnsignedLong(seccomp_api_get());
}

/* seccomp_restrict_thread(*, network: bool, truncate_path: bool, ffi: bool) -> dict */
PyObject *
pyi_seccomp_restrict_thread(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"network", "truncate_path", "ffi", NULL};
    int network = 0, truncate_path = 0, ffi = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$ppp:seccomp_restrict_thread", keywords, &network,
                                     &truncate_path, &ffi))
        return NULL;
    struct builder b;
    if (builder_init(&b, SCMP_ACT_ERRNO(EPERM)) < 0)
        return NULL;
    thread_allow_list(&b, network, truncate_path, ffi);
    /* No TSYNC: the filter applies to this thread and the threads it creates. */
    if (builder_load(&b, "sandbox thread allow-list", 0) < 0)
        return NULL;
    return Py_BuildValue("{s:s,s:s,s:i,s:O,s:O}", "kind", "allow-list", "default", "EPERM", "rules", b.rules,
                         "network", network ? Py_True : Py_False, "ffi", ffi ? Py_True : Py_False);
}

/* seccomp_cell_filter() -> dict: the process-wide base filter (TSYNC), once per cell. */
PyObject *
pyi_seccomp_cell_filter(PyObject *module, PyObject *unused)
{
    struct builder b;
    if (builder_init(&b, SCMP_ACT_ALLOW) < 0)
        return NULL;
    cell_deny_list(&b);
    if (builder_load(&b, "cell base filter", 1) < 0)
        return NULL;
    return Py_BuildValue("{s:s,s:s,s:i,s:O}", "kind", "deny-list", "default", "allow", "rules", b.rules, "tsync",
                         Py_True);
}

/* seccomp_describe(which, *, network=False, truncate_path=True, ffi=False) -> str:
 * libseccomp's pseudo filter code of "thread" or "cell" (for docs and reviews). */
PyObject *
pyi_seccomp_describe(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"which", "network", "truncate_path", "ffi", NULL};
    const char *which;
    int network = 0, truncate_path = 1, ffi = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|$ppp:seccomp_describe", keywords, &which, &network,
                                     &truncate_path, &ffi))
        return NULL;
    int thread = strcmp(which, "thread") == 0;
    if (!thread && strcmp(which, "cell") != 0)
        return PyErr_Format(PyExc_ValueError, "which must be 'thread' or 'cell', not %R", PyTuple_GET_ITEM(args, 0));
    struct builder b;
    if (builder_init(&b, thread ? SCMP_ACT_ERRNO(EPERM) : SCMP_ACT_ALLOW) < 0)
        return NULL;
    if (thread)
        thread_allow_list(&b, network, truncate_path, ffi);
    else
        cell_deny_list(&b);
    PyObject *result = NULL;
    FILE *out = NULL;
    if (builder_error(&b, which) == 0) {
        out = tmpfile(); /* libseccomp writes the text to a descriptor */
        if (out == NULL || seccomp_export_pfc(b.ctx, fileno(out)) < 0)
            PyErr_SetString(PyExc_OSError, "seccomp: cannot export the filter");
    }
    seccomp_release(b.ctx);
    if (!PyErr_Occurred()) {
        struct stat st;
        if (fstat(fileno(out), &st) == 0 && (result = PyBytes_FromStringAndSize(NULL, st.st_size)) != NULL &&
            pread(fileno(out), PyBytes_AS_STRING(result), (size_t)st.st_size, 0) != st.st_size) {
            Py_CLEAR(result);
            PyErr_SetString(PyExc_OSError, "seccomp: cannot read the exported filter back");
        }
        if (result != NULL)
            Py_SETREF(result, PyUnicode_FromEncodedObject(result, "utf-8", "replace"));
    }
    if (out != NULL)
        fclose(out);
    return result;
}
