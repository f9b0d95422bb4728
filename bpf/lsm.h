/* lsm.h: what lsm.bpf.c (the BPF-LSM programs) and its loaders share, on top of
 * guard.h (struct pyi_mark, struct pyi_rule_key, struct pyi_event are reused as they are
 * so one mark, one connect-rule table and one event consumer serve both objects).
 * Fixed-width fields in an order without padding, as in guard.h. */
#ifndef PYISOLATE_BPF_LSM_H
#define PYISOLATE_BPF_LSM_H

#include "guard.h"

/* struct pyi_mark.flags bits that only the LSM programs read (guard.h owns the low byte). */
#define PYI_MARK_FS      0x100u /* file_open / inode_unlink only under pyi_fs rules */
#define PYI_MARK_NOEXEC  0x200u /* bprm_check_security refuses every execve */
#define PYI_MARK_NOPTRACE 0x400u /* ptrace_access_check refuses (attach, /proc/PID/mem, ...) */
#define PYI_MARK_NOBPF   0x800u /* the bpf() system call is refused */
/* PYI_MARK_NET (guard.h) also gates lsm/socket_connect: only destinations with a
 * pyi_rule_key entry connect; families other than AF_INET/AF_INET6/AF_UNSPEC are refused.
 * A mark without it is not restricted here: with guard.bpf.o loaded, its sock_create gives
 * such a task no IPv4/IPv6 socket; lsm.bpf.o alone needs NET with no rules to refuse all. */

/* struct pyi_event.hook values of the LSM programs (guard.h uses 1..15). */
#define PYI_HOOK_FILE_OPEN    16u
#define PYI_HOOK_INODE_UNLINK 17u
#define PYI_HOOK_LSM_CONNECT  18u
#define PYI_HOOK_EXEC         19u
#define PYI_HOOK_PTRACE       20u
#define PYI_HOOK_BPF          21u

/* Access bits of a path rule (the value of the pyi_fs map). */
#define PYI_FS_READ   0x1u
#define PYI_FS_WRITE  0x2u
#define PYI_FS_UNLINK 0x4u

/* A path rule: the file or directory (st_dev, st_ino as stat(2) reports them) whose
 * subtree the policy may reach with the access bits of the value. Lookups walk from the
 * file up through its parents, crossing mount points (file_open) or stopping at the
 * filesystem root (inode_unlink: the hook gets no mount), at most PYI_FS_DEPTH steps. */
struct pyi_fs_key {
	__u32 policy; /* the rule set: rule_sets[mark.policy], as for pyi_rule_key */
	__u32 dev; /* user-space encoding: stat(2)'s st_dev */
	__u64 ino;
};

#define PYI_FS_DEPTH 32

/* For PYI_HOOK_FILE_OPEN / PYI_HOOK_INODE_UNLINK events, pyi_event.addr holds this
 * (the refused file) and pyi_event.nr the access bits asked for. For PYI_HOOK_PTRACE,
 * nr is the tgid of the task to be traced; for PYI_HOOK_BPF, the bpf() command; for
 * PYI_HOOK_LSM_CONNECT, family/port/addr as for guard.h's connect hooks. */
struct pyi_file_id {
	__u64 ino;
	__u32 dev;
	__u32 pad;
};

#endif
