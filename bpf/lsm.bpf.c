// SPDX-License-Identifier: GPL-2.0
/* lsm.bpf.c: the BPF-LSM programs of a sandbox (kernels booted with `bpf` in lsm=).
 *
 * A task is a target when it carries a mark (struct pyi_mark) in task storage, or when
 * its cgroup v2 id has one in cgroup_marks; both are checked and either can refuse. The
 * mark names a policy; its flags say which hooks apply. Path rules (pyi_fs_key) and
 * connect rules (pyi_rule_key) belong to a policy; nothing here has a rule of its own,
 * user space fills every map. Each refusal goes to the `events` ring buffer.
 *
 * Marks are set from user space with a pidfd key (a PIDFD_THREAD pidfd for one thread
 * on kernels >= 6.9), or, where a thread has no pidfd of its own, by putting its tid
 * into `pending` and raising `pending_count`: the thread's next hooked operation moves
 * the mark into its task storage before anything is decided. New tasks inherit the mark
 * (lsm/task_alloc, which fails the fork rather than leave a child unmarked). The maps
 * task_marks, cgroup_marks, rules and events have guard.bpf.c's names, types and sizes:
 * a loader that loads both objects can share them (bpf_map__reuse_fd); guard.bpf.o's
 * tp_btf/sched_process_fork copy of the mark is then a harmless second copy.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "lsm.h"

#define EPERM 1
#define EACCES 13
#define ENOMEM 12
#define AF_UNSPEC 0
#define AF_INET 2
#define AF_INET6 10
#define FMODE_READ 0x1
#define FMODE_WRITE 0x2

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
	__type(key, __u64); /* cgroup v2 id */
	__type(value, struct pyi_mark);
} cgroup_marks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32); /* tid */
	__type(value, struct pyi_mark);
} pending SEC(".maps");

/* policy id -> its current rule set, as in guard.bpf.c: path and connect rules are keyed
 * by the set, so a policy's rules are replaced in one update of this map (readers see the
 * old set or the new one, never a mix). A policy without an entry has no rules. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
} rule_sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct pyi_fs_key);
	__type(value, __u32); /* PYI_FS_* bits */
} fs_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct pyi_rule_key);
	__type(value, __u8); /* 1: allowed */
} rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Entries in `pending`; 0 keeps the hooks of unmarked tasks at one storage lookup. */
__u32 pending_count = 0;

static __always_inline struct pyi_mark *task_mark(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pyi_mark *mark = bpf_task_storage_get(&task_marks, task, 0, 0);

	if (!mark && pending_count) {
		__u32 tid = (__u32)bpf_get_current_pid_tgid();
		struct pyi_mark *want = bpf_map_lookup_elem(&pending, &tid);

		if (want) {
			mark = bpf_task_storage_get(&task_marks, task, want, BPF_LOCAL_STORAGE_GET_F_CREATE);
			if (mark)
				bpf_map_delete_elem(&pending, &tid);
			else
				mark = want; /* no storage (memory): decide by the pending mark, try again next time */
		}
	}
	return mark;
}

/* Whether either mark exists. Written so clang cannot fold it into an OR of the two
 * pointers, which the verifier refuses ("pointer |= pointer prohibited"). */
static __always_inline bool targeted(struct pyi_mark *t, struct pyi_mark *c)
{
	if (t)
		return true;
	barrier_var(c);
	return c != 0;
}

static __always_inline struct pyi_mark *cgroup_mark(void)
{
	__u64 id = bpf_get_current_cgroup_id();

	return bpf_map_lookup_elem(&cgroup_marks, &id);
}

static __always_inline void report(const struct pyi_mark *mark, __u8 source, __u32 hook, __s32 nr,
				   __u8 family, __u16 port, const void *addr)
{
	struct pyi_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	__u64 id;

	if (!e)
		return; /* full: the refusal stands, only its report is lost */
	id = bpf_get_current_pid_tgid();
	e->time_ns = bpf_ktime_get_ns();
	e->cgroup = bpf_get_current_cgroup_id();
	e->tid = (__u32)id;
	e->tgid = id >> 32;
	e->policy = mark->policy;
	e->hook = hook;
	e->nr = nr;
	e->port = port;
	e->family = family;
	e->source = source;
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	if (addr)
		__builtin_memcpy(e->addr, addr, sizeof(e->addr));
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
}

/* ---- path rules ------------------------------------------------------------------ */

/* The kernel's dev_t (major << 20 | minor) as stat(2) reports it (new_encode_dev). */
static __always_inline __u32 user_dev(dev_t dev)
{
	__u32 major = dev >> 20, minor = dev & 0xfffff;

	return (minor & 0xff) | (major << 8) | ((minor & ~0xffu) << 12);
}

/* Whether a rule of `policy` grants `want` to the dentry or one of its ancestors. With a
 * mount, the walk climbs from a mount's root to its mount point in the parent mount, so
 * a rule on / covers /tmp on another filesystem; without one it stops at the filesystem
 * root. More than PYI_FS_DEPTH steps: refused (fail closed). */
static __always_inline bool fs_allowed(__u32 policy, struct dentry *d, struct vfsmount *vfs, __u32 want)
{
	struct mount *mnt = 0;
	struct dentry *root = 0;
	struct pyi_fs_key key = {};
	__u32 *set = bpf_map_lookup_elem(&rule_sets, &policy);

	if (!set)
		return false;
	key.policy = *set;

	if (vfs) {
		mnt = (void *)vfs - bpf_core_field_offset(struct mount, mnt);
		root = BPF_CORE_READ(vfs, mnt_root);
	}
	for (int i = 0; i < PYI_FS_DEPTH; i++) {
		struct inode *inode = BPF_CORE_READ(d, d_inode);
		struct dentry *parent;
		__u32 *bits;

		if (inode) {
			key.ino = BPF_CORE_READ(inode, i_ino);
			key.dev = user_dev(BPF_CORE_READ(inode, i_sb, s_dev));
			bits = bpf_map_lookup_elem(&fs_rules, &key);
			if (bits && (*bits & want) == want)
				return true;
		}
		parent = BPF_CORE_READ(d, d_parent);
		if (d != root && parent != d) {
			d = parent;
			continue;
		}
		if (!mnt)
			return false;
		/* at the root of this mount: continue at its mount point one mount up */
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);
		if (!up || up == mnt)
			return false;
		d = BPF_CORE_READ(mnt, mnt_mountpoint);
		mnt = up;
		root = BPF_CORE_READ(up, mnt.mnt_root);
	}
	return false;
}

static __always_inline int fs_check(struct pyi_mark *mark, __u8 source, __u32 hook, struct dentry *d,
				    struct vfsmount *vfs, __u32 want)
{
	struct pyi_file_id id = {};
	struct inode *inode;

	if (!mark || !(mark->flags & PYI_MARK_FS) || fs_allowed(mark->policy, d, vfs, want))
		return 0;
	inode = BPF_CORE_READ(d, d_inode);
	if (inode) {
		id.ino = BPF_CORE_READ(inode, i_ino);
		id.dev = user_dev(BPF_CORE_READ(inode, i_sb, s_dev));
	}
	report(mark, source, hook, want, 0, 0, &id);
	return -EACCES;
}

SEC("lsm/file_open")
int BPF_PROG(file_open, struct file *file)
{
	struct pyi_mark *t = task_mark(), *c = cgroup_mark();
	struct dentry *d;
	struct vfsmount *vfs;
	__u32 want = 0;
	unsigned int mode;
	int err;

	if (!targeted(t, c))
		return 0;
	mode = BPF_CORE_READ(file, f_mode);
	if (mode & FMODE_READ)
		want |= PYI_FS_READ;
	if (mode & FMODE_WRITE)
		want |= PYI_FS_WRITE;
	d = BPF_CORE_READ(file, f_path.dentry);
	vfs = BPF_CORE_READ(file, f_path.mnt);
	err = fs_check(t, PYI_SOURCE_TASK, PYI_HOOK_FILE_OPEN, d, vfs, want);
	if (!err)
		err = fs_check(c, PYI_SOURCE_CGROUP, PYI_HOOK_FILE_OPEN, d, vfs, want);
	return err;
}

SEC("lsm/inode_unlink")
int BPF_PROG(inode_unlink, struct inode *dir, struct dentry *dentry)
{
	struct pyi_mark *t = task_mark(), *c = cgroup_mark();
	int err;

	if (!targeted(t, c))
		return 0;
	err = fs_check(t, PYI_SOURCE_TASK, PYI_HOOK_INODE_UNLINK, dentry, 0, PYI_FS_UNLINK);
	if (!err)
		err = fs_check(c, PYI_SOURCE_CGROUP, PYI_HOOK_INODE_UNLINK, dentry, 0, PYI_FS_UNLINK);
	return err;
}

/* ---- network --------------------------------------------------------------------- */

static __always_inline bool net_allowed(struct pyi_rule_key *key)
{
	__u16 port = key->port;

	if (bpf_map_lookup_elem(&rules, key))
		return true;
	key->port = 0; /* this host, any port */
	if (bpf_map_lookup_elem(&rules, key))
		return true;
	key->family = 0; /* any host, this port */
	__builtin_memset(key->addr, 0, sizeof(key->addr));
	key->port = port;
	if (bpf_map_lookup_elem(&rules, key))
		return true;
	key->port = 0; /* anything */
	return bpf_map_lookup_elem(&rules, key) != 0;
}

static __always_inline int net_check(struct pyi_mark *mark, __u8 source, struct sockaddr *address, int addrlen)
{
	struct pyi_rule_key key = {};
	__u8 addr[16] = {};
	__u16 family = 0, port = 0;
	__u32 *set;

	if (!mark || !(mark->flags & PYI_MARK_NET))
		return 0;
	if (addrlen >= 2)
		bpf_probe_read_kernel(&family, sizeof(family), &address->sa_family);
	if (family == AF_UNSPEC && addrlen >= 2)
		return 0; /* dissolves a datagram socket's association; connects nowhere */
	if (family == AF_INET && addrlen >= (int)sizeof(struct sockaddr_in)) {
		struct sockaddr_in *in = (void *)address;

		port = bpf_ntohs(BPF_CORE_READ(in, sin_port));
		bpf_probe_read_kernel(addr, 4, &in->sin_addr);
	} else if (family == AF_INET6 && addrlen >= (int)sizeof(struct sockaddr_in6)) {
		struct sockaddr_in6 *in6 = (void *)address;
		static const __u8 mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

		port = bpf_ntohs(BPF_CORE_READ(in6, sin6_port));
		bpf_probe_read_kernel(addr, 16, &in6->sin6_addr);
		if (__builtin_memcmp(addr, mapped, 12) == 0) {
			family = AF_INET;
			__builtin_memmove(addr, addr + 12, 4);
			__builtin_memset(addr + 4, 0, 12);
		}
	} else {
		report(mark, source, PYI_HOOK_LSM_CONNECT, 0, family, 0, addr);
		return -EPERM; /* AF_UNIX, AF_NETLINK, short addresses, ...: no rule reaches them */
	}
	set = bpf_map_lookup_elem(&rule_sets, &mark->policy);
	if (!set) {
		report(mark, source, PYI_HOOK_LSM_CONNECT, 0, family, port, addr);
		return -EPERM;
	}
	key.policy = *set;
	key.family = family;
	key.port = port;
	__builtin_memcpy(key.addr, addr, sizeof(addr));
	if (net_allowed(&key))
		return 0;
	report(mark, source, PYI_HOOK_LSM_CONNECT, 0, family, port, addr);
	return -EPERM;
}

SEC("lsm/socket_connect")
int BPF_PROG(socket_connect, struct socket *sock, struct sockaddr *address, int addrlen)
{
	struct pyi_mark *t = task_mark(), *c = cgroup_mark();
	int err;

	if (!targeted(t, c))
		return 0;
	err = net_check(t, PYI_SOURCE_TASK, address, addrlen);
	if (!err)
		err = net_check(c, PYI_SOURCE_CGROUP, address, addrlen);
	return err;
}

/* ---- exec, ptrace, bpf: refused outright when the mark says so -------------------- */

static __always_inline int deny_if(__u32 flag, __u32 hook, __s32 nr)
{
	struct pyi_mark *t = task_mark(), *c = cgroup_mark();

	if (t && (t->flags & flag)) {
		report(t, PYI_SOURCE_TASK, hook, nr, 0, 0, 0);
		return -EPERM;
	}
	if (c && (c->flags & flag)) {
		report(c, PYI_SOURCE_CGROUP, hook, nr, 0, 0, 0);
		return -EPERM;
	}
	return 0;
}

SEC("lsm/bprm_check_security")
int BPF_PROG(bprm_check_security, struct linux_binprm *bprm)
{
	return deny_if(PYI_MARK_NOEXEC, PYI_HOOK_EXEC, 0);
}

SEC("lsm/ptrace_access_check")
int BPF_PROG(ptrace_access_check, struct task_struct *child, unsigned int mode)
{
	return deny_if(PYI_MARK_NOPTRACE, PYI_HOOK_PTRACE, BPF_CORE_READ(child, tgid));
}

/* The hook gained a fourth argument (`bool kernel`) in 6.9; only `cmd` is read, and the
 * previous program's return value (whose position moves) is not. */
SEC("lsm/bpf")
int BPF_PROG(bpf_syscall, int cmd)
{
	return deny_if(PYI_MARK_NOBPF, PYI_HOOK_BPF, cmd);
}

/* ---- inheritance ------------------------------------------------------------------- */

/* A new thread or process of a marked task gets the mark before it exists: copy_process
 * calls this in the parent, after the child's task storage is set up empty. Unlike a
 * tracepoint, the hook can fail the fork, so a child whose mark cannot be allocated is
 * never created unmarked. */
SEC("lsm/task_alloc")
int BPF_PROG(task_alloc, struct task_struct *task, unsigned long clone_flags)
{
	struct pyi_mark *mark = task_mark();

	if (!mark)
		return 0;
	if (!bpf_task_storage_get(&task_marks, task, mark, BPF_LOCAL_STORAGE_GET_F_CREATE))
		return -ENOMEM;
	return 0;
}
