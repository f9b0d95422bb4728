/* The sealed broker's Noise objects over libsodium (docs/broker-protocol.md).
 *
 * Named after the Noise specification's objects (rev. 34, §5):
 *   pyi_cipher     CipherState     §5.1  noise_cipher.c
 *   pyi_symmetric  SymmetricState  §5.2  noise_symmetric.c
 *   pyi_handshake  HandshakeState  §5.3  noise_handshake.c (IK, and IK + X-Wing "hybrid")
 *   pyi_transport  the two CipherStates of a finished handshake, with PyIsolate's framing
 *                  (length prefix, limits, close on any failure, lockstep rekey)
 *                  broker_transport.c
 * Plain C, no Python: the extension binds it (broker_py.c) and the fuzz harness loads it
 * from a host-Python build (fuzz/). Every function that drops a key wipes it. Errors are
 * a small set of categories; a failed decryption carries no detail on purpose.
 */
#ifndef PYISOLATE_NOISE_H
#define PYISOLATE_NOISE_H

#include <stddef.h>
#include <stdint.h>

/* The plain-C library (libpyisolate_broker.so: host-Python supervisors through ctypes,
 * and the fuzz harness) exports exactly the functions marked PYI_API; inside the
 * _pyisolate extension everything stays hidden. */
#ifdef PYI_BROKER_SHARED
#define PYI_API __attribute__((visibility("default")))
#else
#define PYI_API
#endif

#define PYI_KEYLEN 32
#define PYI_HASHLEN 32
#define PYI_TAGLEN 16
#define PYI_DHLEN 32
#define PYI_KEM_PKLEN 1216 /* crypto_kem_xwing_PUBLICKEYBYTES */
#define PYI_KEM_SKLEN 32   /* crypto_kem_xwing_SECRETKEYBYTES */
#define PYI_KEM_CTLEN 1120 /* crypto_kem_xwing_CIPHERTEXTBYTES */
#define PYI_NONCE_MAX UINT64_MAX /* reserved by Noise for Rekey(); never used for a frame */
#define PYI_MAX_PAYLOAD (16u << 20)
#define PYI_MAX_SEALED (PYI_MAX_PAYLOAD + PYI_TAGLEN)
#define PYI_FRAME_HEADER 4
#define PYI_REKEY_INTERVAL (UINT64_C(1) << 20)

typedef enum {
    PYI_OK = 0,
    PYI_ERR_DECRYPT = -1,   /* authentication failed (no detail, on purpose) */
    PYI_ERR_STATE = -2,     /* wrong stage: message out of turn, transport used after close */
    PYI_ERR_LENGTH = -3,    /* a length outside the protocol's limits */
    PYI_ERR_EXHAUSTED = -4, /* counter exhausted: a new handshake is needed */
    PYI_ERR_DH = -5,        /* a DH gave the all-zero output (low-order point) */
    PYI_ERR_KEM = -6,       /* X-Wing encapsulation/decapsulation failed */
    PYI_ERR_INIT = -7,      /* libsodium could not initialise */
} pyi_status;

PYI_API const char *pyi_status_text(int status);
PYI_API int pyi_sodium_init(void);

/* CipherState */
typedef struct {
    uint8_t k[PYI_KEYLEN];
    uint64_t n;
    int has_key;
} pyi_cipher;

PYI_API void pyi_cipher_init(pyi_cipher *cs, const uint8_t key[PYI_KEYLEN]);
PYI_API void pyi_cipher_clear(pyi_cipher *cs);
/* out receives len + 16 bytes (len bytes when there is no key yet). */
PYI_API int pyi_cipher_encrypt(pyi_cipher *cs, const uint8_t *ad, size_t adlen, const uint8_t *in, size_t len, uint8_t *out);
/* len includes the tag; out receives len - 16 bytes, untouched-or-garbage on failure. */
PYI_API int pyi_cipher_decrypt(pyi_cipher *cs, const uint8_t *ad, size_t adlen, const uint8_t *in, size_t len, uint8_t *out);
PYI_API void pyi_cipher_rekey(pyi_cipher *cs);

/* SymmetricState */
typedef struct {
    pyi_cipher cs;
    uint8_t ck[PYI_HASHLEN];
    uint8_t h[PYI_HASHLEN];
} pyi_symmetric;

PYI_API void pyi_symmetric_init(pyi_symmetric *ss, const char *protocol_name);
PYI_API void pyi_symmetric_mix_hash(pyi_symmetric *ss, const uint8_t *data, size_t len);
PYI_API void pyi_symmetric_mix_key(pyi_symmetric *ss, const uint8_t *ikm, size_t len);
PYI_API int pyi_symmetric_encrypt_and_hash(pyi_symmetric *ss, const uint8_t *in, size_t len, uint8_t *out);
PYI_API int pyi_symmetric_decrypt_and_hash(pyi_symmetric *ss, const uint8_t *in, size_t len, uint8_t *out);
PYI_API void pyi_symmetric_split(pyi_symmetric *ss, pyi_cipher *c1, pyi_cipher *c2);
PYI_API void pyi_symmetric_clear(pyi_symmetric *ss);
PYI_API void pyi_hkdf2(const uint8_t ck[PYI_HASHLEN], const uint8_t *ikm, size_t len, uint8_t out1[PYI_HASHLEN],
               uint8_t out2[PYI_HASHLEN]);

/* HandshakeState: Noise_IK_25519_ChaChaPoly_SHA256, optionally with the X-Wing token. */
#define PYI_PROTOCOL_CLASSICAL "Noise_IK_25519_ChaChaPoly_SHA256"
#define PYI_PROTOCOL_HYBRID "Noise_IKhyb_25519+XWing_ChaChaPoly_SHA256"

typedef struct {
    pyi_symmetric ss;
    int initiator;
    int hybrid;
    int step; /* messages processed: 0, 1, 2 (done); -1 after a failure */
    int fixed_e;
    uint8_t s[PYI_DHLEN], s_pub[PYI_DHLEN];
    uint8_t e[PYI_DHLEN], e_pub[PYI_DHLEN];
    uint8_t rs[PYI_DHLEN], re[PYI_DHLEN];
    uint8_t kem_pk[PYI_KEM_PKLEN]; /* initiator, hybrid: the responder's X-Wing public key */
    uint8_t kem_sk[PYI_KEM_SKLEN]; /* responder, hybrid: its X-Wing secret key */
} pyi_handshake;

/* rs: the responder's static public key (initiator only). kem: the X-Wing public key
 * (initiator) or secret key (responder) when hybrid, else NULL. */
PYI_API int pyi_handshake_init(pyi_handshake *hs, int initiator, int hybrid, const uint8_t *prologue, size_t prologue_len,
                       const uint8_t s[PYI_DHLEN], const uint8_t *rs, const uint8_t *kem);
/* For test vectors only: use this ephemeral private key instead of a random one. */
PYI_API void pyi_handshake_set_ephemeral_for_testing_only(pyi_handshake *hs, const uint8_t e[PYI_DHLEN]);
PYI_API size_t pyi_handshake_message_len(const pyi_handshake *hs, size_t payload_len);
/* Writes the next message into out (pyi_handshake_message_len bytes). */
PYI_API int pyi_handshake_write(pyi_handshake *hs, const uint8_t *payload, size_t payload_len, uint8_t *out);
/* Reads the next message; the payload goes to out (len - overhead bytes), its length to *payload_len. */
PYI_API int pyi_handshake_read(pyi_handshake *hs, const uint8_t *msg, size_t len, uint8_t *out, size_t *payload_len);
PYI_API void pyi_handshake_clear(pyi_handshake *hs);

/* Transport */
typedef struct {
    pyi_cipher send, recv;
    uint64_t rekey_interval;
    int closed;
} pyi_transport;

/* Consumes the finished handshake (wiped). */
PYI_API int pyi_transport_from_handshake(pyi_transport *t, pyi_handshake *hs);
PYI_API void pyi_transport_close(pyi_transport *t);
/* out: PYI_FRAME_HEADER + len + 16 bytes: big-endian length, then the sealed payload. */
PYI_API int pyi_transport_seal(pyi_transport *t, const uint8_t *in, size_t len, uint8_t *out);
/* The sealed length a frame header announces, or a negative status (channel closed). */
PYI_API int64_t pyi_transport_check_header(pyi_transport *t, const uint8_t header[PYI_FRAME_HEADER]);
/* in: the sealed body (len includes the tag); out: len - 16 bytes. Closes on failure. */
PYI_API int pyi_transport_open(pyi_transport *t, const uint8_t *in, size_t len, uint8_t *out);

/* broker_capi.c: what ctypes callers need beyond the above (sizes, accessors, the
 * libsodium calls the library hides). */
PYI_API size_t pyi_handshake_size(void);
PYI_API size_t pyi_transport_size(void);
PYI_API int pyi_handshake_step(const pyi_handshake *hs);
PYI_API int pyi_handshake_remote_static(const pyi_handshake *hs, uint8_t out[PYI_DHLEN]);
PYI_API void pyi_handshake_hash(const pyi_handshake *hs, uint8_t out[PYI_HASHLEN]);
PYI_API void pyi_transport_state(const pyi_transport *t, uint64_t *send_n, uint64_t *recv_n, uint64_t *interval,
                                 int *closed);
PYI_API void pyi_transport_set_for_testing_only(pyi_transport *t, uint64_t send_n, uint64_t recv_n,
                                                uint64_t interval);
PYI_API void pyi_transport_key_digest_for_testing_only(const pyi_transport *t, uint8_t out[32]);
PYI_API void pyi_transport_rekey(pyi_transport *t, int send);
PYI_API const char *pyi_sodium_version(void);
PYI_API void pyi_x25519_keypair(uint8_t sk[PYI_DHLEN], uint8_t pk[PYI_DHLEN]);
PYI_API void pyi_x25519_public(const uint8_t sk[PYI_DHLEN], uint8_t pk[PYI_DHLEN]);
PYI_API int pyi_xwing_keypair(uint8_t pk[PYI_KEM_PKLEN], uint8_t sk[PYI_KEM_SKLEN], const uint8_t *seed32);
PYI_API int pyi_xwing_encapsulate(uint8_t ct[PYI_KEM_CTLEN], uint8_t ss[32], const uint8_t pk[PYI_KEM_PKLEN],
                                  const uint8_t *seed64);
PYI_API int pyi_xwing_decapsulate(uint8_t ss[32], const uint8_t ct[PYI_KEM_CTLEN], const uint8_t sk[PYI_KEM_SKLEN]);

/* C-level timings (broker_bench.c): nanoseconds per operation. */
PYI_API double pyi_bench_ns(const char *what, uint64_t iterations);

#endif
