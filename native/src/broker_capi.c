/* What ctypes callers of libpyisolate_broker.so need beyond noise.h's state machine:
 * object sizes (they allocate), read-only accessors, and the few libsodium calls the
 * library otherwise hides (--exclude-libs,ALL). The _pyisolate extension links it too. */
#include <string.h>

#include <sodium.h>

#include "noise.h"

size_t
pyi_handshake_size(void)
{
    return sizeof(pyi_handshake);
}

size_t
pyi_transport_size(void)
{
    return sizeof(pyi_transport);
}

int
pyi_handshake_step(const pyi_handshake *hs)
{
    return hs->step;
}

int
pyi_handshake_remote_static(const pyi_handshake *hs, uint8_t out[PYI_DHLEN])
{
    /* The responder learns the initiator's static key from message 1. */
    if (hs->initiator || hs->step < 1) {
        return PYI_ERR_STATE;
    }
    memcpy(out, hs->rs, PYI_DHLEN);
    return PYI_OK;
}

void
pyi_handshake_hash(const pyi_handshake *hs, uint8_t out[PYI_HASHLEN])
{
    memcpy(out, hs->ss.h, PYI_HASHLEN);
}

void
pyi_transport_state(const pyi_transport *t, uint64_t *send_n, uint64_t *recv_n, uint64_t *interval, int *closed)
{
    *send_n = t->send.n;
    *recv_n = t->recv.n;
    *interval = t->rekey_interval;
    *closed = t->closed;
}

void
pyi_transport_set_for_testing_only(pyi_transport *t, uint64_t send_n, uint64_t recv_n, uint64_t interval)
{
    t->send.n = send_n;
    t->recv.n = recv_n;
    t->rekey_interval = interval;
}

void
pyi_transport_key_digest_for_testing_only(const pyi_transport *t, uint8_t out[32])
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, t->send.k, PYI_KEYLEN);
    crypto_hash_sha256_update(&st, t->recv.k, PYI_KEYLEN);
    crypto_hash_sha256_final(&st, out);
}

void
pyi_transport_rekey(pyi_transport *t, int send)
{
    if (!t->closed) {
        pyi_cipher_rekey(send ? &t->send : &t->recv);
    }
}

const char *
pyi_sodium_version(void)
{
    return sodium_version_string();
}

void
pyi_x25519_keypair(uint8_t sk[PYI_DHLEN], uint8_t pk[PYI_DHLEN])
{
    randombytes_buf(sk, PYI_DHLEN);
    crypto_scalarmult_curve25519_base(pk, sk);
}

void
pyi_x25519_public(const uint8_t sk[PYI_DHLEN], uint8_t pk[PYI_DHLEN])
{
    crypto_scalarmult_curve25519_base(pk, sk);
}

int
pyi_xwing_keypair(uint8_t pk[PYI_KEM_PKLEN], uint8_t sk[PYI_KEM_SKLEN], const uint8_t *seed32)
{
    int rc = seed32 ? crypto_kem_xwing_seed_keypair(pk, sk, seed32) : crypto_kem_xwing_keypair(pk, sk);
    return rc == 0 ? PYI_OK : PYI_ERR_KEM;
}

int
pyi_xwing_encapsulate(uint8_t ct[PYI_KEM_CTLEN], uint8_t ss[32], const uint8_t pk[PYI_KEM_PKLEN], const uint8_t *seed64)
{
    int rc = seed64 ? crypto_kem_xwing_enc_deterministic(ct, ss, pk, seed64) : crypto_kem_xwing_enc(ct, ss, pk);
    return rc == 0 ? PYI_OK : PYI_ERR_KEM;
}

int
pyi_xwing_decapsulate(uint8_t ss[32], const uint8_t ct[PYI_KEM_CTLEN], const uint8_t sk[PYI_KEM_SKLEN])
{
    return crypto_kem_xwing_dec(ss, ct, sk) == 0 ? PYI_OK : PYI_ERR_KEM;
}
