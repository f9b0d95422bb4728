/* C-level timings of the broker's primitives (bench/broker.py reports them beside the
 * Python-level numbers): a whole handshake (classical or hybrid, both roles in one
 * thread), seal+open of one frame, seal alone, and the baselines one X25519 and one
 * 64-byte AEAD encryption. Nanoseconds per operation. */
#include <string.h>
#include <time.h>

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
