/* SymmetricState (Noise §5.2) with SHA-256 and HKDF over HMAC-SHA-256 (§4.3). */
#include <string.h>

#include <sodium.h>

#include "noise.h"

static void
hmac(const uint8_t key[PYI_HASHLEN], const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
     uint8_t out[PYI_HASHLEN])
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, PYI_HASHLEN);
    if (alen) {
        crypto_auth_hmacsha256_update(&st, a, alen);
    }
    if (blen) {
        crypto_auth_hmacsha256_update(&st, b, blen);
    }
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof st);
}

void
pyi_hkdf2(const uint8_t ck[PYI_HASHLEN], const uint8_t *ikm, size_t len, uint8_t out1[PYI_HASHLEN],
          uint8_t out2[PYI_HASHLEN])
{
    uint8_t temp[PYI_HASHLEN], one = 0x01, two = 0x02;
    hmac(ck, ikm, len, NULL, 0, temp);
    hmac(temp, &one, 1, NULL, 0, out1);
    hmac(temp, out1, PYI_HASHLEN, &two, 1, out2);
    sodium_memzero(temp, sizeof temp);
}

void
pyi_symmetric_init(pyi_symmetric *ss, const char *protocol_name)
{
    size_t len = strlen(protocol_name);
    memset(ss, 0, sizeof *ss);
    if (len <= PYI_HASHLEN) {
        memcpy(ss->h, protocol_name, len);
    } else {
        crypto_hash_sha256(ss->h, (const uint8_t *)protocol_name, len);
    }
    memcpy(ss->ck, ss->h, PYI_HASHLEN);
}

void
pyi_symmetric_mix_hash(pyi_symmetric *ss, const uint8_t *data, size_t len)
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, ss->h, PYI_HASHLEN);
    crypto_hash_sha256_update(&st, data, len);
    crypto_hash_sha256_final(&st, ss->h);
}

void
pyi_symmetric_mix_key(pyi_symmetric *ss, const uint8_t *ikm, size_t len)
{
    uint8_t ck[PYI_HASHLEN], k[PYI_HASHLEN];
    pyi_hkdf2(ss->ck, ikm, len, ck, k);
    memcpy(ss->ck, ck, PYI_HASHLEN);
    pyi_cipher_clear(&ss->cs);
    pyi_cipher_init(&ss->cs, k);
    sodium_memzero(ck, sizeof ck);
    sodium_memzero(k, sizeof k);
}

int
pyi_symmetric_encrypt_and_hash(pyi_symmetric *ss, const uint8_t *in, size_t len, uint8_t *out)
{
    int rc = pyi_cipher_encrypt(&ss->cs, ss->h, PYI_HASHLEN, in, len, out);
    if (rc == PYI_OK) {
        pyi_symmetric_mix_hash(ss, out, len + (ss->cs.has_key ? PYI_TAGLEN : 0));
    }
    return rc;
}

int
pyi_symmetric_decrypt_and_hash(pyi_symmetric *ss, const uint8_t *in, size_t len, uint8_t *out)
{
    uint8_t h[PYI_HASHLEN];
    memcpy(h, ss->h, PYI_HASHLEN);
    int rc = pyi_cipher_decrypt(&ss->cs, h, PYI_HASHLEN, in, len, out);
    if (rc == PYI_OK) {
        pyi_symmetric_mix_hash(ss, in, len);
    }
    return rc;
}

void
pyi_symmetric_split(pyi_symmetric *ss, pyi_cipher *c1, pyi_cipher *c2)
{
    uint8_t k1[PYI_HASHLEN], k2[PYI_HASHLEN];
    pyi_hkdf2(ss->ck, NULL, 0, k1, k2);
    pyi_cipher_init(c1, k1);
    pyi_cipher_init(c2, k2);
    sodium_memzero(k1, sizeof k1);
    sodium_memzero(k2, sizeof k2);
}

void
pyi_symmetric_clear(pyi_symmetric *ss)
{
    sodium_memzero(ss, sizeof *ss);
}
