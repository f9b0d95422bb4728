/* Crash isolation inside a cell: a fault report, then the cell ends.
 *
 * crash_guard_install(fd)  once, from the cell's main thread before it starts any other
 *                          thread: SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT get a
 *                          handler that runs on the thread's alternate signal stack
 *                          (SA_ONSTACK), and `fd` (a pipe to the supervisor, opened
 *                          before the cell runs anything) receives the report.
 * crash_guard_thread(name) on each sandbox thread before it is restricted: its own
 *                          alternate stack (sigaltstack is per thread; a stack overflow
 *                          cannot run a handler on the overflowed stack), its name for
 *                          the report, and the fault signals unblocked (pthread_sigmask)
 *                          so that a fault is handled on the faulting thread itself: a
 *                          synchronous fault with its signal blocked kills the process
 *                          with no report.
 *
 * The handler is async-signal-safe: it formats into a stack buffer with no library call
 * but write(2), reads only values set before the fault (a thread-local name written
 * when the thread was guarded, so no TLS allocation happens in the handler), writes one
 * line to the pre-opened descriptor and ends the whole cell with exit_group(128 + signal):
 * its state can no longer be trusted, and the supervisor reports CellCrashed to every
 * sandbox of the cell. Sandbox threads may not call rt_sigaction or tgkill (seccomp), so
 * the handler never re-raises. */
#include "_pyisolate.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ALT_STACK_SIZE (64 * 1024)
#define NAME_MAX_LEN 64

static const int fault_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
static volatile int report_fd = -1;
static __thread char thread_name[NAME_MAX_LEN] __attribute__((tls_model("initial-exec")));
static __thread int thread_guarded __attribute__((tls_model("initial-exec")));

static size_t put_str(char *buf, size_t at, size_t cap, const char *s)
{
    while (*s && at < cap) {
        buf[at++] = *s++;
    }
    return at;
}

static size_t put_num(char *buf, size_t at, size_t cap, uintptr_t value, unsigned base)
{
    char digits[24];
    size_t n = 0;
    do {
        digits[n++] = "0123456789abcdef"[value % base];
        value /= base;
    } while (value && n < sizeof digits);
    if (base == 16) {
        at = put_str(buf, at, cap, "0x");
    }
    while (n && at < cap) {
        buf[at++] = digits[--n];
    }
    return at;
}

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGILL: return "SIGILL";
    case SIGFPE: return "SIGFPE";
    case SIGABRT: return "SIGABRT";
    default: return "signal";
    }
}

static void on_fault(int sig, siginfo_t *info, void *context)
{
    (void)context;
    char line[256];
    size_t at = 0, cap = sizeof line - 1;
    at = put_str(line, at, cap, "fault signal=");
    at = put_str(line, at, cap, signal_name(sig));
    at = put_str(line, at, cap, " number=");
    at = put_num(line, at, cap, (uintptr_t)sig, 10);
    at = put_str(line, at, cap, " code=");
    at = put_num(line, at, cap, (uintptr_t)(unsigned)info->si_code, 10);
    at = put_str(line, at, cap, " address=");
    at = put_num(line, at, cap, (uintptr_t)info->si_addr, 16);
    at = put_str(line, at, cap, " tid=");
    at = put_num(line, at, cap, (uintptr_t)syscall(SYS_gettid), 10);
    at = put_str(line, at, cap, " thread=");
    at = put_str(line, at, cap, thread_guarded ? thread_name : "(cell)");
    line[at++] = '\n';
    int fd = report_fd;
    if (fd >= 0) {
        ssize_t rc;
        do {
            rc = write(fd, line, at);
        } while (rc < 0 && errno == EINTR);
    }
    syscall(SYS_exit_group, 128 + sig);
}

/* An alternate signal stack for the calling thread (kept for the thread's life: a
   thread that ends leaks one 64 KiB mapping; sandbox threads are few and long-lived). */
static int give_alt_stack(void)
{
    stack_t current;
    if (sigaltstack(NULL, &current) == 0 && !(current.ss_flags & SS_DISABLE)) {
        return 0;
    }
    void *stack = mmap(NULL, ALT_STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (stack == MAP_FAILED) {
        return -1;
    }
    stack_t ss = {.ss_sp = stack, .ss_size = ALT_STACK_SIZE, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0) {
        int saved = errno;
        munmap(stack, ALT_STACK_SIZE);
        errno = saved;
        return -1;
    }
    return 0;
}

static int unblock_fault_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof fault_signals / sizeof fault_signals[0]; i++) {
        sigaddset(&set, fault_signals[i]);
    }
    return pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

PyObject *pyi_crash_guard_install(PyObject *module, PyObject *arg)
{
    int fd = PyLong_AsInt(arg);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "crash_guard_install needs an open descriptor");
        return NULL;
    }
    if (give_alt_stack() != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    report_fd = fd;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigfillset(&action.sa_mask);  /* nothing interrupts the report */
    for (size_t i = 0; i < sizeof fault_signals / sizeof fault_signals[0]; i++) {
        if (sigaction(fault_signals[i], &action, NULL) != 0) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    strncpy(thread_name, "cell-main", NAME_MAX_LEN - 1);
    thread_guarded = 1;
    if (unblock_fault_signals() != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong((long)(sizeof fault_signals / sizeof fault_signals[0]));
}

PyObject *pyi_crash_guard_thread(PyObject *module, PyObject *arg)
{
    Py_ssize_t len;
    const char *name = PyUnicode_AsUTF8AndSize(arg, &len);
    if (name == NULL) {
        return NULL;
    }
    if (give_alt_stack() != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    size_t n = (size_t)len < NAME_MAX_LEN - 1 ? (size_t)len : NAME_MAX_LEN - 1;
    memcpy(thread_name, name, n);
    thread_name[n] = '\0';
    thread_guarded = 1;
    int rc = unblock_fault_signals();
    if (rc != 0) {
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}
