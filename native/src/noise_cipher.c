/* CipherState (Noise §5.1): ChaCha20-Poly1305-IETF with the 96-bit nonce
 * 32 zero bits || 64-bit counter, little-endian (Noise §12.3). The one nonce check
 * lives in next_nonce(): the counter never takes the reserved value 2^64-1. */
#include <string.h>

#include <sodium.h>

#include "noise.h"

const char *
pyi_status_text(int status)
{
    switch (status) {
    case PYI_OK: return "ok";
    case PYI_ERR_DECRYPT: return "decryption failed";
    case PYI_ERR_STATE: return "operation out of turn, or the channel is closed";
    case PYI_ERR_LENGTH: return "length outside the protocol's limits";
    case PYI_ERR_EXHAUSTED: return "counter exhausted: run a new handshake";
    case PYI_ERR_DH: return "X25519 gave the all-zero output";
    case PYI_ERR_KEM: return "X-Wing encapsulation failed";
    case PYI_ERR_INIT: return "libsodium failed to initialise";
    default: return "unknown error";
    }
}

int
pyi_sodium_init(void)
{
    return sodium_init() < 0 ? PYI_ERR_INIT : PYI_OK;
}

static void
nonce_bytes(uint64_t n, uint8_t nonce[12])
{
    memset(nonce, 0, 4);
    for (int i = 0; i < 8; i++) {
        nonce[4 + i] = (uint8_t)(n >> (8 * i));
    }
}

/* The only place a counter is checked and advanced. */
static int
next_nonce(pyi_cipher *cs, uint8_t nonce[12])
{
    if (cs->n == PYI_NONCE_MAX) {
        return PYI_ERR_EXHAUSTED;
    }
    nonce_bytes(cs->n, nonce);
    return PYI_OK;
}

void
pyi_cipher_init(pyi_cipher *cs, const uint8_t key[PYI_KEYLEN])
{
    memcpy(cs->k, key, PYI_KEYLEN);
    cs->n = 0;
    cs->has_key = 1;
}

void
pyi_cipher_clear(pyi_cipher *cs)
{
    sodium_memzero(cs, sizeof *cs);
}

int
pyi_cipher_encrypt(pyi_cipher *cs, const uint8_t *ad, size_t adlen, const uint8_t *in, size_t len, uint8_t *out)
{
    uint8_t nonce[12];
    if (!cs->has_key) {
        memmove(out, in, len);
        return PYI_OK;
    }
    int rc = next_nonce(cs, nonce);
    if (rc != PYI_OK) {
        return rc;
    }
    crypto_aead_chacha20poly1305_ietf_encrypt(out, NULL, in, len, ad, adlen, NULL, nonce, cs->k);
    cs->n++;
    return PYI_OK;
}

int
pyi_cipher_decrypt(pyi_cipher *cs, const uint8_t *ad, size_t adlen, const uint8_t *in, size_t len, uint8_t *out)
{
    uint8_t nonce[12];
    if (!cs->has_key) {
        memmove(out, in, len);
        return PYI_OK;
    }
    if (len < PYI_TAGLEN) {
        return PYI_ERR_DECRYPT;
    }
    int rc = next_nonce(cs, nonce);
    if (rc != PYI_OK) {
        return rc;
    }
    if (crypto_aead_chacha20poly1305_ietf_decrypt(out, NULL, NULL, in, len, ad, adlen, nonce, cs->k) != 0) {
        return PYI_ERR_DECRYPT;
    }
    cs->n++;
    return PYI_OK;
}

/* Noise §4.2 REKEY(k): the first 32 bytes of ENCRYPT(k, 2^64-1, empty, 32 zero bytes). */
void
pyi_cipher_rekey(pyi_cipher *cs)
{
    uint8_t zeros[PYI_KEYLEN] = {0}, out[PYI_KEYLEN + PYI_TAGLEN], nonce[12];
    nonce_bytes(PYI_NONCE_MAX, nonce);
    crypto_aead_chacha20poly1305_ietf_encrypt(out, NULL, zeros, sizeof zeros, NULL, 0, NULL, nonce, cs->k);
    memcpy(cs->k, out, PYI_KEYLEN);
    sodium_memzero(out, sizeof out);
}
