/* guard.h: what guard.bpf.c and its loader (native/src/bpf_guard.c, and through it
 * pyisolate/bpf.py) share: the mark a sandbox task carries, the connect-rule key, the
 * denial event. Fixed-width fields in an order without padding, so the layout is the
 * same for clang -target bpf and the host compiler (and Python's struct module). */
#ifndef PYISOLATE_BPF_GUARD_H
#define PYISOLATE_BPF_GUARD_H

/* struct pyi_mark.flags */
#define PYI_MARK_NET     0x1u /* the policy has connect rules: TCP sockets, connects per rule */
#define PYI_MARK_KILL    0x2u /* SIGKILL (whole process) on execve/execveat/ptrace/bpf */

/* struct pyi_event.hook */
#define PYI_HOOK_CONNECT4    1u
#define PYI_HOOK_CONNECT6    2u
#define PYI_HOOK_SOCK_CREATE 3u
#define PYI_HOOK_KILL        4u

/* struct pyi_event.source: which map marked the task */
#define PYI_SOURCE_TASK   1u
#define PYI_SOURCE_CGROUP 2u

/* What a sandbox thread (task storage, keyed by a PIDFD_THREAD pidfd) or a cgroup v2
 * (keyed by its id, the inode of its directory) carries. `policy` is looked up in
 * `rule_sets` for the policy's current rule set; a task created by a marked task gets a
 * copy (tp_btf/sched_process_fork). */
struct pyi_mark {
	__u32 policy;
	__u32 flags;
};

/* One allowed connect destination of a rule set. family 0 with a zero address: any host
 * ("*"); port 0: any port ("*"). family is AF_INET (addr[0..3], the rest zero) or
 * AF_INET6; an IPv4-mapped IPv6 address is stored and looked up as AF_INET. The port
 * is in host order. */
struct pyi_rule_key {
	__u32 policy; /* guard.bpf.c: the rule set, rule_sets[mark.policy] (a reload swaps a
		       * policy to a new set in one update); lsm.bpf.c: the policy itself */
	__u16 port;
	__u8 family;
	__u8 pad; /* always 0 (a hash key compares every byte) */
	__u8 addr[16];
};

/* One denial, in the ring buffer. For HOOK_CONNECT*: family/port/addr of the refused
 * destination; for HOOK_SOCK_CREATE: family and nr = the socket type, port = protocol;
 * for HOOK_KILL: nr = the system call number (with the x32 bit, or of the ia32 table
 * when family is 32). */
struct pyi_event {
	__u64 time_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 cgroup;  /* cgroup v2 id of the task */
	__u32 tid;
	__u32 tgid;
	__u32 policy;
	__u32 hook;
	__s32 nr;
	__u16 port;
	__u8 family;
	__u8 source;
	__u8 addr[16];
	char comm[16];
};

#endif
