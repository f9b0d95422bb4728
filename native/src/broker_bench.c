/* C-level timings of the broker's primitives (bench/broker.py reports them beside the
 * Python-level numbers): a whole handshake (classical or hybrid, both roles in one
 * thread), seal+open of one frame, seal alone, the baselines one X25519 and one 64-byte
 * AEAD encryption, and a 1 kB round trip between two processes over a socketpair, sealed
 * and unsealed. Nanoseconds per operation. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "noise.h"

static double
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static uint8_t cell_s[32], sup_s[32], sup_pub[32], kem_pk[PYI_KEM_PKLEN], kem_sk[PYI_KEM_SKLEN];

static int
handshake(int hybrid, pyi_transport *ti, pyi_transport *tr)
{
    static const uint8_t prologue[] = "pyisolate-broker/1\0bench";
    pyi_handshake i, r;
    uint8_t m1[PYI_KEM_CTLEN + 128], m2[128], payload[16];
    size_t plen, m1len = 2 * PYI_DHLEN + 2 * PYI_TAGLEN + (hybrid ? PYI_KEM_CTLEN : 0);
    if (pyi_handshake_init(&i, 1, hybrid, prologue, sizeof prologue, cell_s, sup_pub, hybrid ? kem_pk : NULL) ||
        pyi_handshake_init(&r, 0, hybrid, prologue, sizeof prologue, sup_s, NULL, hybrid ? kem_sk : NULL) ||
        pyi_handshake_write(&i, NULL, 0, m1) || pyi_handshake_read(&r, m1, m1len, payload, &plen) ||
        pyi_handshake_write(&r, NULL, 0, m2) || pyi_handshake_read(&i, m2, PYI_DHLEN + PYI_TAGLEN, payload, &plen) ||
        pyi_transport_from_handshake(ti, &i) || pyi_transport_from_handshake(tr, &r)) {
        return -1;
    }
    return 0;
}

static int
io_full(int fd, uint8_t *p, size_t n, int writing)
{
    while (n > 0) {
        ssize_t got = writing ? write(fd, p, n) : read(fd, p, n);
        if (got <= 0) {
            if (got < 0 && errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += got, n -= (size_t)got;
    }
    return 0;
}

/* One frame off the stream: the header, checked by the transport when sealed (as the
 * relay does), then the body, opened into `out`. Returns the payload length or -1. */
static ssize_t
recv_frame(int fd, pyi_transport *t, uint8_t *buf, size_t cap, uint8_t *out)
{
    if (io_full(fd, buf, PYI_FRAME_HEADER, 0) != 0) {
        return -1;
    }
    int64_t len = t ? pyi_transport_check_header(t, buf)
                    : (int64_t)((uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3]);
    if (len < 0 || (size_t)len > cap || io_full(fd, buf, (size_t)len, 0) != 0) {
        return -1;
    }
    if (!t) {
        memcpy(out, buf, (size_t)len);
        return len;
    }
    return pyi_transport_open(t, buf, (size_t)len, out) == PYI_OK ? len - PYI_TAGLEN : -1;
}

static ssize_t
send_frame(int fd, pyi_transport *t, const uint8_t *in, size_t len, uint8_t *buf)
{
    if (t) {
        if (pyi_transport_seal(t, in, len, buf) != PYI_OK) {
            return -1;
        }
    } else {
        buf[0] = (uint8_t)(len >> 24), buf[1] = (uint8_t)(len >> 16), buf[2] = (uint8_t)(len >> 8), buf[3] = (uint8_t)len;
        memcpy(buf + PYI_FRAME_HEADER, in, len);
    }
    size_t total = PYI_FRAME_HEADER + len + (t ? PYI_TAGLEN : 0);
    return io_full(fd, buf, total, 1) == 0 ? (ssize_t)total : -1;
}

/* The supervisor side sends a 1 kB frame, a forked child (the cell side, C only) opens it
 * and answers with the same payload sealed in its direction; the time per round trip
 * includes both processes' seal and open, the header checks, and four socket syscalls. */
static double
round_trip(int sealed, uint64_t iterations, const uint8_t *plain, size_t size)
{
    static uint8_t buf[PYI_FRAME_HEADER + 1024 + PYI_TAGLEN], back[1024 + PYI_TAGLEN];
    pyi_transport ti, tr;
    int sv[2];
    if (handshake(0, &ti, &tr) != 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(sv[0]), close(sv[1]);
        return -1;
    }
    if (pid == 0) { /* the echoing side: only C from here to _exit */
        close(sv[0]);
        ssize_t n;
        while ((n = recv_frame(sv[1], sealed ? &tr : NULL, buf, sizeof buf - PYI_FRAME_HEADER, back)) >= 0) {
            if (send_frame(sv[1], sealed ? &tr : NULL, back, (size_t)n, buf) < 0) {
                break;
            }
        }
        _exit(0);
    }
    close(sv[1]);
    pyi_transport_close(&tr);
    double t0 = 0, per = -1;
    uint64_t warm = iterations / 10 + 10;
    for (uint64_t n = 0; n < warm + iterations; n++) {
        if (n == warm) {
            t0 = now_ns();
        }
        if (send_frame(sv[0], sealed ? &ti : NULL, plain, size, buf) < 0 ||
            recv_frame(sv[0], sealed ? &ti : NULL, buf, sizeof buf - PYI_FRAME_HEADER, back) != (ssize_t)size ||
            memcmp(back, plain, size) != 0) {
            goto out;
        }
    }
    per = (now_ns() - t0) / (double)iterations;
out:
    close(sv[0]); /* the child reads EOF and exits */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    pyi_transport_close(&ti);
    return per;
}

double
pyi_bench_ns(const char *what, uint64_t iterations)
{
    static uint8_t buf[PYI_FRAME_HEADER + 1024 + PYI_TAGLEN], plain[1024], back[1024];
    pyi_transport ti, tr;
    double t0;
    if (pyi_sodium_init() != PYI_OK || iterations == 0) {
        return -1;
    }
    randombytes_buf(cell_s, sizeof cell_s);
    randombytes_buf(sup_s, sizeof sup_s);
    crypto_scalarmult_curve25519_base(sup_pub, sup_s);
    crypto_kem_xwing_keypair(kem_pk, kem_sk);
    randombytes_buf(plain, sizeof plain);
    if (strcmp(what, "x25519") == 0 || strcmp(what, "aead_64") == 0) {
        /* Baselines: one libsodium X25519, one ChaCha20-Poly1305 encryption of 64 bytes. */
        uint8_t out[PYI_DHLEN], nonce[12] = {0}, key[PYI_KEYLEN] = {0};
        int x25519 = what[0] == 'x';
        t0 = now_ns();
        for (uint64_t n = 0; n < iterations; n++) {
            nonce[0] = (uint8_t)n;
            if (x25519 ? crypto_scalarmult_curve25519(out, cell_s, sup_pub) != 0
                       : crypto_aead_chacha20poly1305_ietf_encrypt(buf, NULL, plain, 64, NULL, 0, NULL, nonce, key) != 0) {
                return -1;
            }
        }
        return (now_ns() - t0) / (double)iterations;
    }
    int hybrid = strcmp(what, "handshake_hybrid") == 0;
    if (hybrid || strcmp(what, "handshake") == 0) {
        t0 = now_ns();
        for (uint64_t n = 0; n < iterations; n++) {
            if (handshake(hybrid, &ti, &tr) != 0) {
                return -1;
            }
        }
        return (now_ns() - t0) / (double)iterations;
    }
    if (strcmp(what, "rtt_1024") == 0 || strcmp(what, "rtt_1024_plain") == 0) {
        return round_trip(what[8] == '\0', iterations, plain, 1024);
    }
    size_t size;
    int open = 1;
    if (strcmp(what, "seal_open_64") == 0) {
        size = 64;
    } else if (strcmp(what, "seal_open_1024") == 0) {
        size = 1024;
    } else if (strcmp(what, "seal_64") == 0) {
        size = 64, open = 0;
    } else {
        return -1;
    }
    if (handshake(0, &ti, &tr) != 0) {
        return -1;
    }
    t0 = now_ns();
    for (uint64_t n = 0; n < iterations; n++) {
        if (pyi_transport_seal(&ti, plain, size, buf) != PYI_OK) {
            return -1;
        }
        if (open && pyi_transport_open(&tr, buf + PYI_FRAME_HEADER, size + PYI_TAGLEN, back) != PYI_OK) {
            return -1;
        }
    }
    double per = (now_ns() - t0) / (double)iterations;
    pyi_transport_close(&ti);
    pyi_transport_close(&tr);
    return per;
}
