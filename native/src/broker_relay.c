/* The cell's relay (docs/broker-protocol.md §2): one native thread per cell that moves
 * every frame between each sandbox's sealed socket (to the supervisor) and the cell's end
 * of the guest's plain socketpair, sealing and opening with the link's pyi_transport
 * (broker_transport.c: counters, limits, lockstep rekey). It replaces a Python thread
 * that cost ~30 us per sandbox call; this one never touches Python, so it owns what it
 * uses: a copy of the transport's state (the Python object's copy is wiped by the
 * caller) and both descriptors.
 *
 * poll() over every link; a readable end is read into that direction's buffer and each
 * complete frame is forwarded at once. Any failure of a link (a frame that fails to
 * open, a bad length, end of stream, an I/O error) closes that link only: its transport
 * is wiped, both sockets are shut down and closed, and nothing of the bad frame is
 * written (open() decrypts into a private buffer first). Writes block, as the Python
 * relay's did: a guest that stops reading stalls its own cell's relay. */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "broker_relay.h"

#define RELAY_THREAD_NAME "pyi-seal-relay"
#define READ_CHUNK (64u << 10)
#define KEEP_IDLE (256u << 10) /* an emptied buffer larger than this is given back */

typedef struct {
    uint8_t *buf;
    size_t len, cap;
} relay_buffer;

typedef struct relay_link {
    int sealed, inner;
    pyi_transport t;
    relay_buffer in[2]; /* [0] from the guest (plain), [1] from the supervisor (sealed) */
    relay_buffer out;   /* the frame being written: sealed, or opened (plain) */
    struct relay_link *next; /* the pending list only */
} relay_link;

static struct {
    pthread_mutex_t lock;
    int started;
    int wake_r, wake_w;
    relay_link *pending;
    /* The thread's own: the links it serves and their poll entries (wake pipe first). */
    relay_link **links;
    struct pollfd *fds;
    size_t room;
} relay = {PTHREAD_MUTEX_INITIALIZER, 0, -1, -1, NULL, NULL, NULL, 0};

static void
buffer_free(relay_buffer *b)
{
    if (b->buf) {
        sodium_memzero(b->buf, b->cap); /* plaintext passed through it */
        free(b->buf);
    }
    b->buf = NULL;
    b->len = b->cap = 0;
}

static int
buffer_reserve(relay_buffer *b, size_t cap)
{
    if (b->cap >= cap) {
        return 0;
    }
    uint8_t *grown = malloc(cap);
    if (grown == NULL) {
        return -1;
    }
    if (b->buf) {
        memcpy(grown, b->buf, b->len);
        sodium_memzero(b->buf, b->cap);
        free(b->buf);
    }
    b->buf = grown;
    b->cap = cap;
    return 0;
}

static void
link_close(relay_link *l)
{
    pyi_transport_close(&l->t);
    shutdown(l->sealed, SHUT_RDWR);
    shutdown(l->inner, SHUT_RDWR);
    close(l->sealed);
    close(l->inner);
    for (int i = 0; i < 2; i++) {
        buffer_free(&l->in[i]);
    }
    buffer_free(&l->out);
    sodium_memzero(l, sizeof *l);
    free(l);
}

static int
write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd p1 = {.fd = fd, .events = POLLOUT};
                if (poll(&p1, 1, -1) < 0 && errno != EINTR) {
                    return -1;
                }
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static uint32_t
be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* One complete frame body from `from_sealed`'s side, forwarded to the other. */
static int
forward(relay_link *l, int from_sealed, const uint8_t *body, size_t len)
{
    if (from_sealed) {
        size_t plain = len - PYI_TAGLEN; /* check_header guaranteed len >= 16 */
        if (buffer_reserve(&l->out, PYI_FRAME_HEADER + plain) < 0) {
            return -1;
        }
        if (pyi_transport_open(&l->t, body, len, l->out.buf + PYI_FRAME_HEADER) != PYI_OK) {
            return -1; /* the transport is closed and the output wiped */
        }
        uint8_t *h = l->out.buf;
        h[0] = (uint8_t)(plain >> 24), h[1] = (uint8_t)(plain >> 16), h[2] = (uint8_t)(plain >> 8), h[3] = (uint8_t)plain;
        return write_all(l->inner, l->out.buf, PYI_FRAME_HEADER + plain);
    }
    if (buffer_reserve(&l->out, PYI_FRAME_HEADER + len + PYI_TAGLEN) < 0) {
        return -1;
    }
    if (pyi_transport_seal(&l->t, body, len, l->out.buf) != PYI_OK) {
        return -1;
    }
    return write_all(l->sealed, l->out.buf, PYI_FRAME_HEADER + len + PYI_TAGLEN);
}

/* Reads what one side has and forwards every complete frame; -1 ends the link. */
static int
pump(relay_link *l, int from_sealed)
{
    relay_buffer *b = &l->in[from_sealed];
    if (buffer_reserve(b, b->len + READ_CHUNK) < 0) {
        return -1;
    }
    ssize_t n = recv(from_sealed ? l->sealed : l->inner, b->buf + b->len, b->cap - b->len, 0);
    if (n < 0) {
        return (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    }
    if (n == 0) {
        return -1; /* end of stream: the peer closed */
    }
    b->len += (size_t)n;
    size_t off = 0, want = 0;
    while (b->len - off >= PYI_FRAME_HEADER) {
        int64_t len;
        if (from_sealed) {
            len = pyi_transport_check_header(&l->t, b->buf + off); /* a bad one closes */
            if (len < 0) {
                return -1;
            }
        } else {
            len = be32(b->buf + off);
            if (len > PYI_MAX_PAYLOAD) {
                return -1;
            }
        }
        size_t total = PYI_FRAME_HEADER + (size_t)len;
        if (b->len - off < total) {
            want = total;
            break;
        }
        if (forward(l, from_sealed, b->buf + off + PYI_FRAME_HEADER, (size_t)len) < 0) {
            return -1;
        }
        off += total;
    }
    if (off > 0) {
        memmove(b->buf, b->buf + off, b->len - off);
        b->len -= off;
    }
    if (want && buffer_reserve(b, want + READ_CHUNK) < 0) {
        return -1; /* one allocation for a large frame, not one per chunk */
    }
    if (b->len == 0 && b->cap > KEEP_IDLE) {
        buffer_free(b);
    }
    if (l->out.cap > KEEP_IDLE) {
        buffer_free(&l->out);
    }
    return 0;
}

static void *
relay_main(void *unused)
{
    pthread_setname_np(pthread_self(), RELAY_THREAD_NAME); /* seen in /proc/PID/task/TID/comm */
    relay_link **links = relay.links;
    struct pollfd *fds = relay.fds;
    size_t count = 0, room = relay.room;
    for (;;) {
        fds[0] = (struct pollfd){.fd = relay.wake_r, .events = POLLIN};
        for (size_t i = 0; i < count; i++) {
            fds[1 + 2 * i] = (struct pollfd){.fd = links[i]->inner, .events = POLLIN};
            fds[2 + 2 * i] = (struct pollfd){.fd = links[i]->sealed, .events = POLLIN};
        }
        if (poll(fds, 1 + 2 * count, -1) < 0) {
            continue; /* EINTR (signals are blocked here, but be safe) */
        }
        size_t kept = 0;
        for (size_t i = 0; i < count; i++) {
            relay_link *l = links[i];
            int failed = 0;
            for (int side = 0; side < 2 && !failed; side++) {
                if (fds[1 + 2 * i + side].revents && pump(l, side) < 0) {
                    failed = 1;
                }
            }
            if (failed) {
                link_close(l);
            } else {
                links[kept++] = l;
            }
        }
        count = kept;
        if (fds[0].revents) {
            uint8_t sink[64];
            while (read(relay.wake_r, sink, sizeof sink) == (ssize_t)sizeof sink) {
            }
            pthread_mutex_lock(&relay.lock);
            relay_link *l = relay.pending;
            relay.pending = NULL;
            pthread_mutex_unlock(&relay.lock);
            while (l != NULL) {
                relay_link *next = l->next;
                l->next = NULL;
                if (count == room) {
                    size_t more = 2 * room;
                    relay_link **nl = realloc(links, more * sizeof *links);
                    struct pollfd *nf = nl ? realloc(fds, (1 + 2 * more) * sizeof *fds) : NULL;
                    if (nl) {
                        links = nl;
                    }
                    if (nf == NULL) {
                        link_close(l); /* out of memory: this link cannot be served */
                        l = next;
                        continue;
                    }
                    fds = nf;
                    room = more;
                }
                links[count++] = l;
                l = next;
            }
        }
    }
    return NULL;
}

/* Called with relay.lock held. */
static int
start_locked(void)
{
    int p[2];
    if (relay.links == NULL) {
        relay.room = 8;
        relay.links = malloc(relay.room * sizeof *relay.links);
        relay.fds = malloc((1 + 2 * relay.room) * sizeof *relay.fds);
        if (relay.links == NULL || relay.fds == NULL) {
            free(relay.links);
            free(relay.fds);
            relay.links = NULL;
            relay.fds = NULL;
            return -ENOMEM;
        }
    }
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) {
        return -errno;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256u << 10);
    /* Asynchronous signals go to the interpreter's threads, never to this one; the
     * synchronous ones (faults) stay deliverable so the crash guard sees them. */
    sigset_t all, old;
    sigfillset(&all);
    for (int s = 0, sync[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS}; s < 7; s++) {
        sigdelset(&all, sync[s]);
    }
    pthread_sigmask(SIG_BLOCK, &all, &old);
    relay.wake_r = p[0];
    relay.wake_w = p[1];
    pthread_t th;
    int rc = pthread_create(&th, &attr, relay_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        close(p[0]);
        close(p[1]);
        relay.wake_r = relay.wake_w = -1;
        return -rc;
    }
    relay.started = 1;
    return 0;
}

int
pyi_relay_add(int sealed, int inner, const pyi_transport *t)
{
    if (t->closed) {
        return -EINVAL;
    }
    /* Blocking descriptors: poll() says when to read, writes wait for the peer. */
    for (int i = 0, fd[] = {sealed, inner}; i < 2; i++) {
        int flags = fcntl(fd[i], F_GETFL);
        if (flags < 0 || ((flags & O_NONBLOCK) && fcntl(fd[i], F_SETFL, flags & ~O_NONBLOCK) < 0)) {
            return -errno;
        }
    }
    relay_link *l = calloc(1, sizeof *l);
    if (l == NULL) {
        return -ENOMEM;
    }
    l->sealed = sealed;
    l->inner = inner;
    memcpy(&l->t, t, sizeof *t);
    pthread_mutex_lock(&relay.lock);
    int rc = relay.started ? 0 : start_locked();
    if (rc == 0) {
        l->next = relay.pending;
        relay.pending = l;
        (void)!write(relay.wake_w, "", 1); /* full pipe: a wake-up is already pending */
    }
    pthread_mutex_unlock(&relay.lock);
    if (rc != 0) {
        sodium_memzero(l, sizeof *l);
        free(l);
    }
    return rc;
}
