// SPDX-License-Identifier: GPL-2.0
/* guard.bpf.c: the kernel guards that work without BPF-LSM (kernel >= 6.7 for
 * PIDFD_THREAD pidfds as task-storage keys; tp_btf and cgroup sock programs).
 *
 *   cgroup/connect4, cgroup/connect6  a marked task connects only where its policy's
 *                                      rules allow (EPERM otherwise)
 *   cgroup/sock_create                 a marked task without connect rules gets no
 *                                      IPv4/IPv6 socket; with rules, TCP sockets only
 *   tp_btf/sched_process_fork          a new thread or process of a marked task is marked
 *   tp_btf/sys_enter                   a marked task that reaches execve, execveat, ptrace
 *                                      or bpf is killed (SIGKILL to its whole process; the
 *                                      call has run by then: seccomp is what prevents it)
 *
 * Targeting: a task is marked through task storage (the runtime keys it with a
 * pidfd_open(tid, PIDFD_THREAD) of the sandbox's thread), else through its cgroup v2
 * id. Unmarked tasks are never refused. Every denial goes to the `events` ring buffer.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "guard.h"

#define EPERM 1
#define SIGKILL 9
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define IPPROTO_TCP 6
#define TS_COMPAT 0x0002        /* thread_info.status: an ia32 system call is running */
#define X32_SYSCALL_BIT 0x40000000

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct pyi_mark);
} task_marks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);             /* cgroup v2 id */
	__type(value, struct pyi_mark);
} cgroup_marks SEC(".maps");

/* policy id -> its current rule set: replacing a policy's rules is one update of this
 * map (readers see the old set or the new one, never a mix). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
} rule_sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct pyi_rule_key);
	__type(value, __u8);            /* 1: allowed */
} rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Counters the loader reads from .bss: denials reported, and those the full ring
 * buffer dropped. */
__u64 denials = 0;
__u64 dropped = 0;

static __always_inline struct pyi_mark *current_mark(__u8 *source)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pyi_mark *mark = bpf_task_storage_get(&task_marks, task, 0, 0);
	__u64 cgroup;

	if (mark) {
		*source = PYI_SOURCE_TASK;
		return mark;
	}
	cgroup = bpf_get_current_cgroup_id();
	mark = bpf_map_lookup_elem(&cgroup_marks, &cgroup);
	if (mark)
		*source = PYI_SOURCE_CGROUP;
	return mark;
}

static __always_inline void report(struct pyi_mark *mark, __u8 source, __u32 hook, __s32 nr, __u8 family,
				   __u16 port, const void *addr, __u32 addr_len)
{
	struct pyi_event *e;
	__u64 id = bpf_get_current_pid_tgid();

	__sync_fetch_and_add(&denials, 1);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&dropped, 1);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->time_ns = bpf_ktime_get_ns();
	e->cgroup = bpf_get_current_cgroup_id();
	e->tid = (__u32)id;
	e->tgid = id >> 32;
	e->policy = mark->policy;
	e->hook = hook;
	e->nr = nr;
	e->family = family;
	e->port = port;
	e->source = source;
	if (addr && addr_len <= sizeof(e->addr))
		__builtin_memcpy(e->addr, addr, addr_len == 4 ? 4 : 16);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
}

/* The policy's current rules, most specific first: address and port, address and any
 * port, any host and port, any host and any port. A policy without a rule set allows
 * nothing. */
static __always_inline int allowed(__u32 policy, __u8 family, const __u8 *addr, __u16 port)
{
	struct pyi_rule_key key = {};
	__u32 *set = bpf_map_lookup_elem(&rule_sets, &policy);

	if (!set)
		return 0;
	key.policy = *set;
	key.family = family;
	if (family == AF_INET)
		__builtin_memcpy(key.addr, addr, 4);
	else
		__builtin_memcpy(key.addr, addr, 16);
	key.port = port;
	if (bpf_map_lookup_elem(&rules, &key))
		return 1;
	key.port = 0;
	if (bpf_map_lookup_elem(&rules, &key))
		return 1;
	__builtin_memset(key.addr, 0, sizeof(key.addr));
	key.family = 0;
	key.port = port;
	if (bpf_map_lookup_elem(&rules, &key))
		return 1;
	key.port = 0;
	return bpf_map_lookup_elem(&rules, &key) != 0;
}

SEC("cgroup/connect4")
int pyi_connect4(struct bpf_sock_addr *ctx)
{
	struct pyi_mark *mark;
	__u8 source = 0;
	__u32 ip;
	__u16 port;

	mark = current_mark(&source);
	if (!mark)
		return 1;
	ip = ctx->user_ip4;
	port = bpf_ntohs((__u16)ctx->user_port);
	if ((mark->flags & PYI_MARK_NET) && allowed(mark->policy, AF_INET, (const __u8 *)&ip, port))
		return 1;
	report(mark, source, PYI_HOOK_CONNECT4, 0, AF_INET, port, &ip, 4);
	return 0; /* the caller gets EPERM */
}

SEC("cgroup/connect6")
int pyi_connect6(struct bpf_sock_addr *ctx)
{
	struct pyi_mark *mark;
	__u8 source = 0;
	__u32 ip6[4];
	__u16 port;
	int ok;

	mark = current_mark(&source);
	if (!mark)
		return 1;
	/* The context fields must be read as whole 32-bit words. */
	ip6[0] = ctx->user_ip6[0];
	ip6[1] = ctx->user_ip6[1];
	ip6[2] = ctx->user_ip6[2];
	ip6[3] = ctx->user_ip6[3];
	port = bpf_ntohs((__u16)ctx->user_port);
	if (!(mark->flags & PYI_MARK_NET))
		ok = 0;
	else if (ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0x0000ffff))
		ok = allowed(mark->policy, AF_INET, (const __u8 *)&ip6[3], port); /* IPv4-mapped */
	else
		ok = allowed(mark->policy, AF_INET6, (const __u8 *)ip6, port);
	if (ok)
		return 1;
	report(mark, source, PYI_HOOK_CONNECT6, 0, AF_INET6, port, ip6, 16);
	return 0;
}

SEC("cgroup/sock_create")
int pyi_sock_create(struct bpf_sock *sk)
{
	/* Context fields are read once, up front: the verifier refuses a load from a
	 * context pointer the compiler offset by a computed amount. */
	__u32 family = sk->family, type = sk->type, protocol = sk->protocol;
	struct pyi_mark *mark;
	__u8 source = 0;

	mark = current_mark(&source);
	if (!mark)
		return 1;
	if ((mark->flags & PYI_MARK_NET) && type == SOCK_STREAM && protocol == IPPROTO_TCP)
		return 1;
	report(mark, source, PYI_HOOK_SOCK_CREATE, type, family, protocol, 0, 0);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(pyi_fork, struct task_struct *parent, struct task_struct *child)
{
	struct pyi_mark *mark, *copy;

	/* The tracepoint fires in the parent, for a new thread as for a new process. */
	mark = bpf_task_storage_get(&task_marks, parent, 0, 0);
	if (!mark)
		return 0;
	copy = bpf_task_storage_get(&task_marks, child, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (copy) {
		copy->policy = mark->policy;
		copy->flags = mark->flags;
	}
	return 0;
}

static __always_inline int fatal(long id, struct task_struct *task)
{
	if (id & X32_SYSCALL_BIT)
		return 1; /* no sandbox ever makes x32 calls (seccomp refuses them) */
	if (bpf_core_field_exists(task->thread_info.status) && (BPF_CORE_READ(task, thread_info.status) & TS_COMPAT))
		return id == 11 || id == 26 || id == 357 || id == 358; /* ia32 execve ptrace bpf execveat */
	return id == 59 || id == 101 || id == 321 || id == 322;     /* execve ptrace bpf execveat */
}

SEC("tp_btf/sys_enter")
int BPF_PROG(pyi_sys_enter, struct pt_regs *regs, long id)
{
	struct task_struct *task;
	struct pyi_mark *mark;
	__u8 source = 0;

	/* Cheap test first: this runs on every system call of every task. */
	if (id != 59 && id != 101 && id != 321 && id != 322 && !(id & X32_SYSCALL_BIT) &&
	    id != 11 && id != 26 && id != 357 && id != 358)
		return 0;
	task = bpf_get_current_task_btf();
	if (!fatal(id, task))
		return 0;
	mark = current_mark(&source);
	if (!mark || !(mark->flags & PYI_MARK_KILL))
		return 0;
	report(mark, source, PYI_HOOK_KILL, (__s32)id, 0, 0, 0, 0);
	bpf_send_signal(SIGKILL);
	return 0;
}
