// SPDX-License-Identifier: GPL-2.0
/* lsm_test: loads bpf/lsm.bpf.o (through its skeleton) inside a QEMU guest and watches
 * every LSM program refuse a targeted task while untargeted tasks go on unaffected.
 *
 *   lsm_test --list   the names of every check, one a line (run on the host: the harness
 *                     compares them with what the guest printed, so a check that never
 *                     ran counts as failed)
 *   lsm_test          run them (as root, in the guest); one line per check:
 *                         VMTEST <name> PASS|FAIL <detail>
 *                     and at the end: VMTEST-END passed=N failed=M
 *
 * Each check forks a child that waits on a pipe, marks it (task storage through a
 * pidfd, its cgroup v2 id, or its tid in `pending`), lets it do one operation and
 * compares the errno it exits with. Built statically (libbpf.a, libelf.a, libz.a) so the
 * initramfs needs nothing else.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "lsm.h"
#include "lsm.skel.h"

#define POLICY 7
#define CGROUP "/sys/fs/cgroup/pyi-vmtest"
#define PIDFD_THREAD O_EXCL /* include/uapi/linux/pidfd.h, kernel >= 6.9 */

static struct lsm_bpf *skel;
static void die(const char *what);
static void use_rule_set(__u32 policy, __u32 set);
static int passed, failed;
static int port_allowed, port_denied, port6_allowed, port6_denied;
#define UNIX_PATH "/tmp/vmtest.sock"
#define DEEP_DEPTH 34 /* directories below /srv/allowed: more steps than PYI_FS_DEPTH */
static char deep_file[512];
static __u64 cgroup_id;

/* ---- the check table ------------------------------------------------------------ */

/* An operation a marked (or unmarked) child performs, and the errno it must end with. */
struct op_check {
	int target; /* enum target */
	__u32 flags;
	int op; /* enum op */
	const char *path;
	int port_is_denied;
	int expect;
};

struct check {
	const char *name;
	void (*run)(const struct check *);
	int arg;
	struct op_check op;
};

static void result(const struct check *c, int ok, const char *fmt, ...)
{
	va_list ap;

	printf("VMTEST %s %s ", c->name, ok ? "PASS" : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	ok ? passed++ : failed++;
}

static const char *err_name(int e)
{
	return e == 0 ? "success" : e == EPERM ? "EPERM" : e == EACCES ? "EACCES" : strerror(e);
}

/* ---- operations a child performs; each returns 0 or an errno --------------------- */

enum op {
	OP_READ, OP_WRITE, OP_UNLINK, OP_CONNECT, OP_CONNECT6, OP_CONNECT_MAPPED, OP_CONNECT_UNIX,
	OP_EXEC, OP_PTRACE, OP_PROC_MEM, OP_BPF, OP_FORK_READ, OP_THREAD_READ, OP_READ_DEEP,
};

static int op_open(const char *path, int flags)
{
	int fd = open(path, flags);

	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}

static int op_connect(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int s = socket(AF_INET, SOCK_STREAM, 0), r;

	if (s < 0)
		return errno;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	r = connect(s, (struct sockaddr *)&a, sizeof(a)) ? errno : 0;
	close(s);
	return r;
}

/* AF_INET6 to ::1, or (mapped) to ::ffff:127.0.0.1 through the dual-stack socket */
static int op_connect6(int port, int mapped)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
	int s = socket(AF_INET6, SOCK_STREAM, 0), r;

	if (s < 0)
		return errno;
	inet_pton(AF_INET6, mapped ? "::ffff:127.0.0.1" : "::1", &a.sin6_addr);
	r = connect(s, (struct sockaddr *)&a, sizeof(a)) ? errno : 0;
	close(s);
	return r;
}

static int op_connect_unix(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX, .sun_path = UNIX_PATH };
	int s = socket(AF_UNIX, SOCK_STREAM, 0), r;

	if (s < 0)
		return errno;
	r = connect(s, (struct sockaddr *)&a, sizeof(a)) ? errno : 0;
	close(s);
	return r;
}

static int op_exec(void)
{
	char *argv[] = { "/bin/busybox", "true", NULL }, *envp[] = { NULL };

	execve(argv[0], argv, envp);
	return errno; /* success never comes back: busybox true exits 0 */
}

static int op_ptrace(void)
{
	/* attach to an own child: allowed by Yama's default scope, so only our hook refuses */
	pid_t victim = fork();
	int r;

	if (victim == 0) {
		pause();
		_exit(0);
	}
	r = ptrace(PTRACE_ATTACH, victim, 0, 0) ? errno : 0;
	kill(victim, SIGKILL);
	waitpid(victim, NULL, 0);
	return r;
}

/* /proc/PID/mem of an own child: the kernel asks ptrace_access_check (mode ATTACH) */
static int op_proc_mem(void)
{
	pid_t victim = fork();
	char path[64];
	int r;

	if (victim == 0) {
		pause();
		_exit(0);
	}
	snprintf(path, sizeof(path), "/proc/%d/mem", victim);
	r = op_open(path, O_RDONLY);
	kill(victim, SIGKILL);
	waitpid(victim, NULL, 0);
	return r;
}

static int op_bpf(void)
{
	int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "vmtest", 4, 4, 1, NULL);

	if (fd < 0)
		return -fd;
	close(fd);
	return 0;
}

static int op_fork_read(const char *path)
{
	pid_t pid = fork();
	int st;

	if (pid == 0)
		_exit(op_open(path, O_RDONLY));
	if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st))
		return 250;
	return WEXITSTATUS(st);
}

static void *thread_read(void *path)
{
	return (void *)(long)op_open(path, O_RDONLY);
}

/* a thread the (marked) task creates after it was marked opens `path` */
static int op_thread_read(const char *path)
{
	pthread_t t;
	void *r;

	if (pthread_create(&t, NULL, thread_read, (void *)path) || pthread_join(t, &r))
		return 249;
	return (int)(long)r;
}

static int do_op(enum op op, const char *path, int port)
{
	switch (op) {
	case OP_READ: return op_open(path, O_RDONLY);
	case OP_WRITE: return op_open(path, O_WRONLY);
	case OP_UNLINK: return unlink(path) ? errno : 0;
	case OP_CONNECT: return op_connect(port);
	case OP_CONNECT6: return op_connect6(port, 0);
	case OP_CONNECT_MAPPED: return op_connect6(port, 1);
	case OP_CONNECT_UNIX: return op_connect_unix();
	case OP_READ_DEEP: return op_open(deep_file, O_RDONLY);
	case OP_EXEC: return op_exec();
	case OP_PTRACE: return op_ptrace();
	case OP_PROC_MEM: return op_proc_mem();
	case OP_BPF: return op_bpf();
	case OP_FORK_READ: return op_fork_read(path);
	case OP_THREAD_READ: return op_thread_read(path);
	}
	return 251;
}

/* ---- targeting -------------------------------------------------------------------- */

enum target { T_NONE, T_TASK, T_CGROUP, T_PENDING, T_BOTH };
static const char *target_name[] = { "untargeted", "task", "cgroup", "pending", "task+cgroup" };
#define POLICY_NO_RULES 9 /* the cgroup's policy in T_BOTH: no path rules at all */

static int mark_task(pid_t pid, const struct pyi_mark *mark, unsigned int pidfd_flags)
{
	int pidfd = syscall(SYS_pidfd_open, pid, pidfd_flags), r;

	if (pidfd < 0)
		return -errno;
	r = bpf_map_update_elem(bpf_map__fd(skel->maps.task_marks), &pidfd, mark, BPF_ANY);
	close(pidfd);
	return r;
}

static void pending_add(pid_t tid, const struct pyi_mark *mark)
{
	__u32 key = tid;

	bpf_map_update_elem(bpf_map__fd(skel->maps.pending), &key, mark, BPF_ANY);
	__atomic_add_fetch(&skel->bss->pending_count, 1, __ATOMIC_SEQ_CST);
}

/* True when the hook moved the tid's mark into task storage (and removed it). */
static int pending_done(pid_t tid)
{
	struct pyi_mark m;
	__u32 key = tid;
	int consumed = bpf_map_lookup_elem(bpf_map__fd(skel->maps.pending), &key, &m) != 0;

	if (!consumed)
		bpf_map_delete_elem(bpf_map__fd(skel->maps.pending), &key);
	__atomic_sub_fetch(&skel->bss->pending_count, 1, __ATOMIC_SEQ_CST);
	return consumed;
}

static int join_cgroup(pid_t pid)
{
	char buf[32];
	int fd = open(CGROUP "/cgroup.procs", O_WRONLY), n, r;

	if (fd < 0)
		return -errno;
	n = snprintf(buf, sizeof(buf), "%d", pid);
	r = write(fd, buf, n) == n ? 0 : -errno;
	close(fd);
	return r;
}

/* Fork a child, target it with `flags`, let it run `op`; return its errno (0: done),
 * or a negative errno when the targeting itself failed. */
static int run_child(enum target t, __u32 flags, enum op op, const char *path, int port)
{
	struct pyi_mark mark = { .policy = POLICY, .flags = flags };
	int go[2], st, r = 0;
	pid_t pid;

	if (pipe(go))
		return -errno;
	pid = fork();
	if (pid == 0) {
		char c;

		close(go[1]);
		if (read(go[0], &c, 1) != 1)
			_exit(252);
		_exit(do_op(op, path, port));
	}
	close(go[0]);
	if (t == T_TASK)
		r = mark_task(pid, &mark, 0);
	else if (t == T_CGROUP)
		r = bpf_map_update_elem(bpf_map__fd(skel->maps.cgroup_marks), &cgroup_id, &mark, BPF_ANY) ?: join_cgroup(pid);
	else if (t == T_BOTH) {
		struct pyi_mark other = { .policy = POLICY_NO_RULES, .flags = flags };

		r = mark_task(pid, &mark, 0) ?:
		    bpf_map_update_elem(bpf_map__fd(skel->maps.cgroup_marks), &cgroup_id, &other, BPF_ANY) ?:
		    join_cgroup(pid);
	}
	else if (t == T_PENDING)
		pending_add(pid, &mark);
	if (write(go[1], "g", 1) != 1 && !r)
		r = -EPIPE;
	close(go[1]);
	waitpid(pid, &st, 0);
	if (t == T_CGROUP || t == T_BOTH)
		bpf_map_delete_elem(bpf_map__fd(skel->maps.cgroup_marks), &cgroup_id);
	if (t == T_PENDING && !pending_done(pid) && !r)
		r = -ENOENT; /* the hook never took the mark */
	if (r)
		return r;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 253;
}

/* ---- checks ------------------------------------------------------------------------ */


static void check_op(const struct check *c)
{
	const struct op_check *o = &c->op;
	int port = o->op == OP_CONNECT6 ? (o->port_is_denied ? port6_denied : port6_allowed)
					: (o->port_is_denied ? port_denied : port_allowed);
	int r = run_child(o->target, o->flags, o->op, o->path, port);

	if (r < 0)
		result(c, 0, "targeting (%s) failed: %s", target_name[o->target], strerror(-r));
	else
		result(c, r == o->expect, "%s: %s, expected %s", target_name[o->target], err_name(r),
		       err_name(o->expect));
}


/* One thread of a process targeted, its sibling not. With `use_pidfd`, through a
 * PIDFD_THREAD pidfd where the kernel has them (>= 6.9), else through `pending`. */
static pid_t thr_tid;
static int thr_go, thr_res = -1;

static void *thr_main(void *arg)
{
	(void)arg;
	__atomic_store_n(&thr_tid, (pid_t)syscall(SYS_gettid), __ATOMIC_SEQ_CST);
	while (!__atomic_load_n(&thr_go, __ATOMIC_SEQ_CST))
		sched_yield();
	thr_res = op_open("/srv/secret/file", O_RDONLY);
	return NULL;
}

static void check_thread(const struct check *c)
{
	struct pyi_mark mark = { .policy = POLICY, .flags = PYI_MARK_FS };
	const char *how = "pending";
	pthread_t t;
	int sibling, r = 0;

	thr_tid = 0, thr_go = 0, thr_res = -1;
	pthread_create(&t, NULL, thr_main, NULL);
	while (!__atomic_load_n(&thr_tid, __ATOMIC_SEQ_CST))
		sched_yield();
	if (c->arg && mark_task(thr_tid, &mark, PIDFD_THREAD) == 0)
		how = "PIDFD_THREAD";
	else
		pending_add(thr_tid, &mark);
	__atomic_store_n(&thr_go, 1, __ATOMIC_SEQ_CST);
	pthread_join(t, NULL);
	sibling = op_open("/srv/secret/file", O_RDONLY);
	if (strcmp(how, "pending") == 0 && !pending_done(thr_tid))
		r = ENOENT;
	result(c, !r && thr_res == EACCES && sibling == 0, "thread %d (%s): %s, sibling thread: %s%s", thr_tid, how,
	       err_name(thr_res), err_name(sibling), r ? ", mark never taken" : "");
}

/* A policy's rules replaced in one update (a policy reload): on the empty set the file the
 * old set allowed is refused, on the old set again it opens. */
#define EMPTY_SET 70

static void check_rule_set_swap(const struct check *c)
{
	int on_empty, back;

	use_rule_set(POLICY, EMPTY_SET);
	on_empty = run_child(T_TASK, PYI_MARK_FS, OP_READ, "/srv/allowed/file", 0);
	use_rule_set(POLICY, POLICY);
	back = run_child(T_TASK, PYI_MARK_FS, OP_READ, "/srv/allowed/file", 0);
	result(c, on_empty == EACCES && back == 0, "on an empty rule set: %s; on its own set again: %s",
	       err_name(on_empty), err_name(back));
}

/* Every hook reported its refusals, each with the policy and the refused task. */
static int counts[32][3];

static int on_event(void *ctx, void *data, size_t size)
{
	const struct pyi_event *e = data;

	(void)ctx;
	if (size >= sizeof(*e) && e->hook < 32 && e->source < 3 && e->policy == POLICY)
		counts[e->hook][e->source]++;
	return 0;
}

static void check_events(const struct check *c)
{
	static int drained;

	if (!drained) {
		struct ring_buffer *rb = ring_buffer__new(bpf_map__fd(skel->maps.events), on_event, NULL, NULL);

		if (rb) {
			ring_buffer__consume(rb);
			ring_buffer__free(rb);
		}
		drained = 1;
	}
	int task = counts[c->arg][PYI_SOURCE_TASK], cgroup = counts[c->arg][PYI_SOURCE_CGROUP];
	result(c, task > 0 && cgroup > 0, "ring buffer events: %d from task marks, %d from cgroup marks", task, cgroup);
}

static void check_loaded(const struct check *c)
{
	result(c, skel != NULL, "lsm.bpf.o loaded and its %d programs attached", 7);
}

#define FS PYI_MARK_FS
#define NET PYI_MARK_NET
/* OP(name, target, mark flags, operation, path, port_is_denied, expected errno) */
#define OP(name, ...) { name, check_op, 0, { __VA_ARGS__ } }
static const struct check checks[] = {
	{ "load-attach", check_loaded, 0 },
	OP("file_open.task.outside-rules.denied", T_TASK, FS, OP_READ, "/srv/secret/file", 0, EACCES),
	OP("file_open.task.rule-dir.allowed", T_TASK, FS, OP_READ, "/srv/allowed/file", 0, 0),
	OP("file_open.task.rule-dir-across-mount.allowed", T_TASK, FS, OP_READ, "/srv/allowed/mnt/file", 0, 0),
	OP("file_open.task.read-only-rule.read-allowed", T_TASK, FS, OP_READ, "/srv/ro/file", 0, 0),
	OP("file_open.task.read-only-rule.write-denied", T_TASK, FS, OP_WRITE, "/srv/ro/file", 0, EACCES),
	OP("file_open.task.forked-child-inherits.denied", T_TASK, FS, OP_FORK_READ, "/srv/secret/file", 0, EACCES),
	OP("file_open.task.new-thread-inherits.denied", T_TASK, FS, OP_THREAD_READ, "/srv/secret/file", 0, EACCES),
	OP("file_open.pending-tid.new-thread-inherits.denied", T_PENDING, FS, OP_THREAD_READ, "/srv/secret/file", 0,
	   EACCES),
	OP("file_open.cgroup.outside-rules.denied", T_CGROUP, FS, OP_READ, "/srv/secret/file", 0, EACCES),
	OP("file_open.cgroup.rule-dir.allowed", T_CGROUP, FS, OP_READ, "/srv/allowed/file", 0, 0),
	OP("file_open.pending-tid.denied", T_PENDING, FS, OP_READ, "/srv/secret/file", 0, EACCES),
	OP("file_open.untargeted.allowed", T_NONE, 0, OP_READ, "/srv/secret/file", 0, 0),
	OP("file_open.task.fs-and-net-flags.denied", T_TASK, NET | FS, OP_READ, "/srv/secret/file", 0, EACCES),
	OP("file_open.task.net-flag-only.allowed", T_TASK, NET, OP_READ, "/srv/secret/file", 0, 0),
	/* both marks are checked: the task's policy allows the file, the cgroup's does not */
	OP("file_open.task-and-cgroup.cgroup-policy.denied", T_BOTH, FS, OP_READ, "/srv/allowed/file", 0, EACCES),
	{ "file_open.task.rule-set-swap.denied-then-allowed", check_rule_set_swap, 0 },
	{ "file_open.thread.pending.denied-sibling-allowed", check_thread, 0 },
	{ "file_open.thread.pidfd-or-pending.denied-sibling-allowed", check_thread, 1 },
	OP("inode_unlink.task.no-unlink-right.denied", T_TASK, FS, OP_UNLINK, "/srv/ro/victim1", 0, EACCES),
	OP("inode_unlink.task.unlink-right.allowed", T_TASK, FS, OP_UNLINK, "/srv/allowed/victim1", 0, 0),
	OP("inode_unlink.cgroup.no-unlink-right.denied", T_CGROUP, FS, OP_UNLINK, "/srv/ro/victim2", 0, EACCES),
	OP("inode_unlink.untargeted.allowed", T_NONE, 0, OP_UNLINK, "/srv/ro/victim3", 0, 0),
	OP("socket_connect.task.no-rule.denied", T_TASK, NET, OP_CONNECT, 0, 1, EPERM),
	OP("socket_connect.task.rule.allowed", T_TASK, NET, OP_CONNECT, 0, 0, 0),
	OP("socket_connect.cgroup.no-rule.denied", T_CGROUP, NET, OP_CONNECT, 0, 1, EPERM),
	OP("socket_connect.untargeted.allowed", T_NONE, 0, OP_CONNECT, 0, 1, 0),
	OP("socket_connect.task.ipv6-no-rule.denied", T_TASK, NET, OP_CONNECT6, 0, 1, EPERM),
	OP("socket_connect.task.ipv6-rule.allowed", T_TASK, NET, OP_CONNECT6, 0, 0, 0),
	OP("socket_connect.task.v4-mapped-no-rule.denied", T_TASK, NET, OP_CONNECT_MAPPED, 0, 1, EPERM),
	OP("socket_connect.task.v4-mapped-rule.allowed", T_TASK, NET, OP_CONNECT_MAPPED, 0, 0, 0),
	OP("socket_connect.task.af_unix.denied", T_TASK, NET, OP_CONNECT_UNIX, 0, 0, EPERM),
	OP("socket_connect.untargeted.af_unix.allowed", T_NONE, 0, OP_CONNECT_UNIX, 0, 0, 0),
	OP("bprm_check_security.task.denied", T_TASK, PYI_MARK_NOEXEC, OP_EXEC, 0, 0, EPERM),
	OP("bprm_check_security.cgroup.denied", T_CGROUP, PYI_MARK_NOEXEC, OP_EXEC, 0, 0, EPERM),
	OP("bprm_check_security.untargeted.allowed", T_NONE, 0, OP_EXEC, 0, 0, 0),
	OP("ptrace_access_check.task.denied", T_TASK, PYI_MARK_NOPTRACE, OP_PTRACE, 0, 0, EPERM),
	OP("ptrace_access_check.cgroup.denied", T_CGROUP, PYI_MARK_NOPTRACE, OP_PTRACE, 0, 0, EPERM),
	OP("ptrace_access_check.untargeted.allowed", T_NONE, 0, OP_PTRACE, 0, 0, 0),
	OP("ptrace_access_check.task.proc-mem.denied", T_TASK, PYI_MARK_NOPTRACE, OP_PROC_MEM, 0, 0, EACCES),
	OP("ptrace_access_check.untargeted.proc-mem.allowed", T_NONE, 0, OP_PROC_MEM, 0, 0, 0),
	OP("bpf.task.denied", T_TASK, PYI_MARK_NOBPF, OP_BPF, 0, 0, EPERM),
	OP("bpf.cgroup.denied", T_CGROUP, PYI_MARK_NOBPF, OP_BPF, 0, 0, EPERM),
	OP("bpf.untargeted.allowed", T_NONE, 0, OP_BPF, 0, 0, 0),
	OP("file_open.task.deeper-than-walk-limit.denied", T_TASK, FS, OP_READ_DEEP, 0, 0, EACCES),
	OP("file_open.untargeted.deep.allowed", T_NONE, 0, OP_READ_DEEP, 0, 0, 0),
	{ "events.file_open", check_events, PYI_HOOK_FILE_OPEN },
	{ "events.inode_unlink", check_events, PYI_HOOK_INODE_UNLINK },
	{ "events.socket_connect", check_events, PYI_HOOK_LSM_CONNECT },
	{ "events.bprm_check_security", check_events, PYI_HOOK_EXEC },
	{ "events.ptrace_access_check", check_events, PYI_HOOK_PTRACE },
	{ "events.bpf", check_events, PYI_HOOK_BPF },
};
#define N_CHECKS (sizeof(checks) / sizeof(checks[0]))

/* ---- the guest's files, listeners and rules ------------------------------------------ */

static void die(const char *what)
{
	printf("VMTEST-SETUP-ERROR %s: %s\n", what, strerror(errno));
	fflush(stdout);
	exit(2);
}

static void write_file(const char *path)
{
	int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);

	if (fd < 0 || write(fd, "x\n", 2) != 2 || close(fd))
		die(path);
}

/* Rules are keyed by rule set; policy N starts on set N (rule_sets[N] = N). */
static void use_rule_set(__u32 policy, __u32 set)
{
	if (bpf_map_update_elem(bpf_map__fd(skel->maps.rule_sets), &policy, &set, BPF_ANY))
		die("rule_sets update");
}

static void fs_rule_for(__u32 policy, const char *path, __u32 bits)
{
	struct stat st;
	struct pyi_fs_key key = { .policy = policy };

	if (stat(path, &st))
		die(path);
	key.dev = (__u32)st.st_dev;
	key.ino = st.st_ino;
	if (bpf_map_update_elem(bpf_map__fd(skel->maps.fs_rules), &key, &bits, BPF_ANY))
		die("fs_rules update");
}

static void fs_rule(const char *path, __u32 bits)
{
	fs_rule_for(POLICY, path, bits);
}

static int listener(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int s = socket(AF_INET, SOCK_STREAM, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 64) ||
	    getsockname(s, (struct sockaddr *)&a, &len))
		die("listen on 127.0.0.1");
	return ntohs(a.sin_port);
}

static int listener6(void)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	socklen_t len = sizeof(a);
	int s = socket(AF_INET6, SOCK_STREAM, 0);

	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 64) ||
	    getsockname(s, (struct sockaddr *)&a, &len))
		die("listen on ::1");
	return ntohs(a.sin6_port);
}

static void unix_listener(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX, .sun_path = UNIX_PATH };
	int s = socket(AF_UNIX, SOCK_STREAM, 0);

	unlink(UNIX_PATH);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 64))
		die("listen on " UNIX_PATH);
}

static void make_deep(void)
{
	int n = snprintf(deep_file, sizeof(deep_file), "/srv/allowed");

	for (int i = 0; i < DEEP_DEPTH; i++) {
		n += snprintf(deep_file + n, sizeof(deep_file) - n, "/d");
		if (mkdir(deep_file, 0755) && errno != EEXIST)
			die(deep_file);
	}
	snprintf(deep_file + n, sizeof(deep_file) - n, "/file");
	write_file(deep_file);
}

static void setup(void)
{
	const char *dirs[] = { "/srv", "/srv/allowed", "/srv/allowed/mnt", "/srv/ro", "/srv/secret" };
	struct pyi_rule_key net = { .policy = POLICY, .family = AF_INET };
	struct stat st;
	__u8 one = 1;

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (mkdir(dirs[i], 0755) && errno != EEXIST)
			die(dirs[i]);
	/* another filesystem below a rule's directory: the walk crosses the mount point */
	if (mount("vmtest", "/srv/allowed/mnt", "tmpfs", 0, NULL))
		die("mount tmpfs on /srv/allowed/mnt");
	write_file("/srv/allowed/file");
	write_file("/srv/allowed/mnt/file");
	write_file("/srv/allowed/victim1");
	write_file("/srv/ro/file");
	write_file("/srv/secret/file");
	for (int i = 1; i <= 3; i++) {
		char p[32];

		snprintf(p, sizeof(p), "/srv/ro/victim%d", i);
		write_file(p);
	}
	use_rule_set(POLICY, POLICY);
	fs_rule("/srv/allowed", PYI_FS_READ | PYI_FS_WRITE | PYI_FS_UNLINK);
	fs_rule("/srv/ro", PYI_FS_READ);

	port_allowed = listener();
	port_denied = listener();
	net.port = port_allowed;
	inet_pton(AF_INET, "127.0.0.1", net.addr);
	if (bpf_map_update_elem(bpf_map__fd(skel->maps.rules), &net, &one, BPF_ANY))
		die("rules update");
	port6_allowed = listener6();
	port6_denied = listener6();
	memset(net.addr, 0, sizeof(net.addr));
	net.family = AF_INET6;
	net.port = port6_allowed;
	inet_pton(AF_INET6, "::1", net.addr);
	if (bpf_map_update_elem(bpf_map__fd(skel->maps.rules), &net, &one, BPF_ANY))
		die("rules update (IPv6)");
	unix_listener();
	make_deep();

	if (mkdir(CGROUP, 0755) && errno != EEXIST)
		die(CGROUP);
	if (stat(CGROUP, &st))
		die(CGROUP);
	cgroup_id = st.st_ino;
	printf("VMTEST-INFO ports allowed=%d denied=%d ipv6 allowed=%d denied=%d cgroup=%llu\n", port_allowed,
	       port_denied, port6_allowed, port6_denied, (unsigned long long)cgroup_id);
}

/* ---- the distribution's runtime in the guest (--runtime) ---------------------------------
 * guest_runtime.py (run by /dist/bin/python3) makes two sandboxes in one cell and reports
 * their threads; only sandbox a's thread is marked, with path rules that reach
 * /srv/data/public and /dist but not /srv/data/secret (which its policy, Landlock and the
 * audit hook all allow, so only our hook can refuse it). */
#define RT_POLICY 8
#define RT_TIMEOUT 600 /* seconds: TCG runs the interpreter slowly */

static const char *runtime_checks[] = {
	"runtime.two-sandboxes-in-one-cell",
	"runtime.sandbox-a.rule-file.allowed",
	"runtime.sandbox-a.outside-rules.denied",
	"runtime.sandbox-b.untargeted.allowed",
	"runtime.supervisor.untargeted.allowed",
	"runtime.events.sandbox-a-thread",
};
#define N_RUNTIME (sizeof(runtime_checks) / sizeof(runtime_checks[0]))

static pid_t rt_tid;
static int rt_events, rt_other_events;

static int on_runtime_event(void *ctx, void *data, size_t size)
{
	const struct pyi_event *e = data;
	const struct pyi_file_id *id = (const void *)e->addr;

	(void)ctx;
	if (size < sizeof(*e) || e->policy != RT_POLICY)
		return 0;
	if (e->hook == PYI_HOOK_FILE_OPEN && e->tid == (__u32)rt_tid)
		rt_events++;
	else
		rt_other_events++;
	printf("VMTEST-INFO runtime event hook=%u tid=%u comm=%.16s dev=%u ino=%llu\n", e->hook, e->tid, e->comm, id->dev,
	       (unsigned long long)id->ino);
	return 0;
}

static void runtime_result(int i, int ok, const char *detail)
{
	struct check c = { .name = runtime_checks[i] };

	result(&c, ok, "%s", detail);
}

static void run_runtime(void)
{
	struct pyi_mark mark = { .policy = RT_POLICY, .flags = PYI_MARK_FS };
	int in[2], out[2], got[N_RUNTIME] = { 0 };
	char line[1024], *how = "pending";
	pid_t pid, cell, tid_b;
	FILE *from;

	use_rule_set(RT_POLICY, RT_POLICY);
	fs_rule_for(RT_POLICY, "/dist", PYI_FS_READ);
	fs_rule_for(RT_POLICY, "/srv/data/public", PYI_FS_READ);
	if (pipe(in) || pipe(out))
		die("pipe");
	pid = fork();
	if (pid == 0) {
		char *argv[] = { "/dist/bin/python3", "/srv/guest_runtime.py", "/srv/data", NULL };
		char *envp[] = { "PATH=/bin", "HOME=/tmp", "LANG=C.UTF-8", NULL };

		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[1]);
		close(out[0]);
		if (chdir("/tmp"))
			_exit(127);
		execve(argv[0], argv, envp);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	alarm(RT_TIMEOUT); /* a hung runtime ends the run; the harness counts what is missing */
	from = fdopen(out[0], "r");
	while (fgets(line, sizeof(line), from)) {
		char name[64], outcome[900];

		line[strcspn(line, "\n")] = 0;
		printf("VMTEST-INFO runtime: %s\n", line);
		if (sscanf(line, "TARGET %d %d %d", &cell, &rt_tid, &tid_b) == 3) {
			if (mark_task(rt_tid, &mark, PIDFD_THREAD) == 0)
				how = "PIDFD_THREAD";
			else
				pending_add(rt_tid, &mark);
			snprintf(outcome, sizeof(outcome), "cell %d: sandbox a on thread %d (marked via %s), b on %d", cell,
				 rt_tid, how, tid_b);
			runtime_result(0, rt_tid != tid_b, outcome);
			got[0] = 1;
			if (write(in[1], "go\n", 3) != 3)
				die("write to guest_runtime.py");
		} else if (sscanf(line, "RESULT %63s %899[^\n]", name, outcome) == 2) {
			int denied = strstr(outcome, "Errno 13") != NULL || strstr(outcome, "PermissionError") != NULL;
			int ok = strcmp(outcome, "ok") == 0;

			if (strcmp(name, "a.public") == 0)
				runtime_result(1, ok, outcome), got[1] = 1;
			else if (strcmp(name, "a.secret") == 0)
				runtime_result(2, denied, outcome), got[2] = 1;
			else if (strcmp(name, "b.secret") == 0)
				runtime_result(3, ok, outcome), got[3] = 1;
			else if (strcmp(name, "supervisor.secret") == 0)
				runtime_result(4, ok, outcome), got[4] = 1;
		}
	}
	alarm(0);
	fclose(from);
	close(in[1]);
	waitpid(pid, NULL, 0);
	if (strcmp(how, "pending") == 0 && rt_tid)
		pending_done(rt_tid);
	{
		struct ring_buffer *rb = ring_buffer__new(bpf_map__fd(skel->maps.events), on_runtime_event, NULL, NULL);
		char detail[128];

		if (rb) {
			ring_buffer__consume(rb);
			ring_buffer__free(rb);
		}
		snprintf(detail, sizeof(detail), "%d file_open refusals reported for thread %d, %d for others", rt_events,
			 rt_tid, rt_other_events);
		runtime_result(5, rt_events > 0 && rt_other_events == 0, detail);
		got[5] = 1;
	}
	for (size_t i = 0; i < N_RUNTIME; i++)
		if (!got[i])
			runtime_result(i, 0, "guest_runtime.py did not get this far");
}

/* ---- cost per open()+close(), printed (never judged: TCG timings are only indicative) ---- */
#define PERF_ROUNDS 10000
#define PERF_TRIES 5

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long open_close_ns(void)
{
	long long t0 = now_ns();

	for (int i = 0; i < PERF_ROUNDS; i++)
		close(open("/srv/allowed/file", O_RDONLY));
	return (now_ns() - t0) / PERF_ROUNDS;
}

/* The same loop in a child marked with `flags` (0: unmarked). */
static long long open_close_in_child(__u32 flags)
{
	struct pyi_mark mark = { .policy = POLICY, .flags = flags };
	int go[2], back[2];
	long long ns = -1;
	pid_t pid;

	if (pipe(go) || pipe(back))
		return -1;
	pid = fork();
	if (pid == 0) {
		char c;

		if (read(go[0], &c, 1) != 1)
			_exit(1);
		ns = open_close_ns();
		_exit(write(back[1], &ns, sizeof(ns)) == sizeof(ns) ? 0 : 1);
	}
	close(go[0]);
	close(back[1]);
	if (flags)
		mark_task(pid, &mark, 0);
	if (write(go[1], "g", 1) == 1 && read(back[0], &ns, sizeof(ns)) != sizeof(ns))
		ns = -1;
	close(go[1]);
	close(back[0]);
	waitpid(pid, NULL, 0);
	return ns;
}

static void keep_min(long long *best, long long v)
{
	if (v > 0 && (*best < 0 || v < *best))
		*best = v;
}

/* Best of PERF_TRIES, the three cases alternating (detach and attach again each time), so
 * a slower stretch of the shared host does not land on one case only. */
static void perf(void)
{
	long long unmarked = -1, marked = -1, detached = -1;

	for (int i = 0; i < PERF_TRIES; i++) {
		keep_min(&unmarked, open_close_in_child(0));
		keep_min(&marked, open_close_in_child(PYI_MARK_FS | PYI_MARK_NET));
		lsm_bpf__detach(skel);
		keep_min(&detached, open_close_in_child(0));
		if (lsm_bpf__attach(skel))
			break;
	}
	printf("VMTEST-PERF open+close ns: detached=%lld attached-unmarked=%lld marked-allowed=%lld\n", detached,
	       unmarked, marked);
}

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	printf("VMTEST-LIBBPF ");
	return vprintf(fmt, ap);
}

int main(int argc, char **argv)
{
	int err;

	int runtime = argc > 1 && strcmp(argv[1], "--runtime") == 0;

	if (argc > 1 && strcmp(argv[1], "--list") == 0) {
		for (size_t i = 0; i < N_CHECKS; i++)
			printf("%s\n", checks[i].name);
		return 0;
	}
	if (argc > 1 && strcmp(argv[1], "--list-runtime") == 0) {
		for (size_t i = 0; i < N_RUNTIME; i++)
			printf("%s\n", runtime_checks[i]);
		return 0;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	libbpf_set_print(libbpf_log);
	skel = lsm_bpf__open();
	if (!skel)
		printf("VMTEST-INFO open failed: %s\n", strerror(errno));
	else if ((err = lsm_bpf__load(skel)) || (err = lsm_bpf__attach(skel))) {
		printf("VMTEST-INFO load/attach failed: %s\n", strerror(-err));
		lsm_bpf__destroy(skel);
		skel = NULL;
	}
	if (skel)
		setup();
	for (size_t i = 0; i < N_CHECKS; i++) {
		if (skel || checks[i].run == check_loaded)
			checks[i].run(&checks[i]);
		else
			result(&checks[i], 0, "not run: the object did not load");
	}
	if (runtime && skel)
		run_runtime();
	printf("VMTEST-END passed=%d failed=%d\n", passed, failed);
	if (skel)
		perf();
	if (skel)
		lsm_bpf__destroy(skel);
	return failed ? 1 : 0;
}
