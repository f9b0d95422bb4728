/* What the two BPF loaders share (bpf_common.c): bpf_guard.c (guard.bpf.o, the host
 * guards) and bpf_lsm.c (lsm.bpf.o, mode "full"). Each keeps its skeleton, its maps and
 * its messages; here are libbpf's log, the phase errors that quote it, and the loader a
 * capsule holds: its lock, the verified bytes, the ring buffer of denials and the records
 * one read of it collects. */
#ifndef PYISOLATE_BPF_COMMON_H
#define PYISOLATE_BPF_COMMON_H

#include "_pyisolate.h"

#include <pthread.h>
#include <stddef.h>

#include <bpf/libbpf.h>

struct pyi_event;    /* bpf/guard.h: the record both objects write to their ring buffer */
struct pyi_rule_key; /* bpf/guard.h: a connect rule's key in either object's `rules` map */

/* Capture libbpf's messages (kept, not printed, so an error can quote their tail): the
 * buffer emptied, the capturing callback installed. Returns the callback it replaced. */
libbpf_print_fn_t pyi_bpf_log_begin(void);
/* Put back the callback pyi_bpf_log_begin replaced (what was captured stays). */
void pyi_bpf_log_end(libbpf_print_fn_t previous);
/* OSError(errno, "WHO: PHASE: WHAT: strerror[\nlibbpf: tail of the log]"); returns NULL.
 * err may be negative (libbpf's -errno). */
PyObject *pyi_bpf_phase_error(const char *who, int err, const char *phase, const char *what);

/* A loaded object, as its capsule holds it; bpf_lsm.c's struct starts with one. One
 * mutex each: the module runs without a GIL, and libbpf's ring buffer is single-consumer. */
struct pyi_bpf_loader {
    pthread_mutex_t lock;
    const char *who;             /* "bpf guard", "bpf lsm": its messages' prefix */
    void *skel;                  /* its skeleton; NULL once closed */
    void (*destroy)(void *skel); /* the skeleton's __destroy: detaches every link, closes every map */
    struct ring_buffer *ring;
    PyObject *bytes; /* the verified object: libbpf reads it until the load is done */
    struct pyi_event *events;
    size_t nevents;
    int attached;
};

/* A new loader of `size` bytes (at least a struct pyi_bpf_loader) holding `bytes`, with
 * no skeleton yet; NULL with MemoryError. Its event array may be missing (NULL): the
 * caller reports that as its "open" phase failing with ENOMEM. */
struct pyi_bpf_loader *pyi_bpf_loader_new(size_t size, const char *who, PyObject *bytes,
                                          void (*destroy)(void *skel));
/* Point the skeleton at the verified bytes instead of the copy bpftool embedded, and open
 * it: what is loaded is exactly what Python hashed. libbpf's error (negative), or 0. */
int pyi_bpf_open_verified(struct bpf_object_skeleton *skeleton, PyObject *bytes);
/* Load the opened object (maps, programs, the verifier: milliseconds) with the thread
 * detached from the interpreter, so other Python threads, and their stop-the-world
 * pauses, never wait for it. 0, or -1 with OSError "WHO: load: WHAT: …". */
int pyi_bpf_load_detached(struct bpf_object_skeleton *skeleton, const char *who, const char *what);
/* The loaded object's capsule, reading denials from the ring buffer map `events_fd`;
 * NULL with an exception (the loader is still the caller's to delete). */
PyObject *pyi_bpf_loader_capsule(struct pyi_bpf_loader *l, const char *name, int events_fd);
/* Free everything a loader holds, then the loader (a failed open; the capsule's end). */
void pyi_bpf_loader_delete(struct pyi_bpf_loader *l);

/* The loader of a capsule, locked; NULL (with an exception) when closed or wrong. */
struct pyi_bpf_loader *pyi_bpf_loader_lock(PyObject *capsule, const char *name);
/* The denials waiting in the ring buffer, oldest first, as a list of tuples:
 * (time_ns, cgroup, tid, tgid, policy, hook, nr, port, family, source, addr, comm) */
PyObject *pyi_bpf_loader_events(PyObject *capsule, const char *name);
/* Detach and unload now (the capsule's destructor does it too); None. */
PyObject *pyi_bpf_loader_close(PyObject *capsule, const char *name);

/* A connect rule's key from its Python arguments (family 0 with b"" for any host,
 * AF_INET with 4 address bytes, AF_INET6 with 16; port 0 for any port); `addr` is
 * released either way. -1 with ValueError when the arguments do not fit. */
int pyi_bpf_rule_key(struct pyi_rule_key *key, const char *who, unsigned int rule_set, unsigned int family,
                     Py_buffer *addr, unsigned int port);
/* A map value that Python passes as an int, or None for "delete it": 0 with *value set
 * (0 for None), or -1 with an exception. */
int pyi_bpf_u32_or_none(PyObject *obj, unsigned int *value);
/* Under the loader's lock, which the caller took and this releases: put `value` at `key`
 * in map `fd`, or delete the key when value is NULL (a key already gone is no error).
 * 0 or the errno. */
int pyi_bpf_map_put_unlock(struct pyi_bpf_loader *l, int fd, const void *key, const void *value);

#endif
