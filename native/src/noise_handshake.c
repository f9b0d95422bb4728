/* HandshakeState (Noise §5.3) for one pattern:
 *
 *   IK:  <- s  ...  -> e, es, s, ss [, skem]   <- e, ee, se
 *
 * The cell is the initiator, the supervisor the responder. `skem` is PyIsolate's hybrid
 * token (docs/broker-protocol.md §3): the initiator encapsulates to the responder's
 * X-Wing public key, sends the 1120-byte ciphertext in clear, MixHash(ct), MixKey(ss). */
#include <string.h>

#include <sodium.h>

#include "noise.h"

static int
dh(uint8_t out[PYI_DHLEN], const uint8_t priv[PYI_DHLEN], const uint8_t pub[PYI_DHLEN])
{
    /* libsodium refuses an all-zero result (a low-order public key). */
    return crypto_scalarmult_curve25519(out, priv, pub) == 0 ? PYI_OK : PYI_ERR_DH;
}

static int
mix_dh(pyi_handshake *hs, const uint8_t priv[PYI_DHLEN], const uint8_t pub[PYI_DHLEN])
{
    uint8_t shared[PYI_DHLEN];
    int rc = dh(shared, priv, pub);
    if (rc == PYI_OK) {
        pyi_symmetric_mix_key(&hs->ss, shared, sizeof shared);
    }
    sodium_memzero(shared, sizeof shared);
    return rc;
}

int
pyi_handshake_init(pyi_handshake *hs, int initiator, int hybrid, const uint8_t *prologue, size_t prologue_len,
                   const uint8_t s[PYI_DHLEN], const uint8_t *rs, const uint8_t *kem)
{
    memset(hs, 0, sizeof *hs);
    if ((initiator && rs == NULL) || (hybrid && kem == NULL)) {
        return PYI_ERR_STATE;
    }
    hs->initiator = initiator;
    hs->hybrid = hybrid;
    memcpy(hs->s, s, PYI_DHLEN);
    crypto_scalarmult_curve25519_base(hs->s_pub, hs->s);
    pyi_symmetric_init(&hs->ss, hybrid ? PYI_PROTOCOL_HYBRID : PYI_PROTOCOL_CLASSICAL);
    pyi_symmetric_mix_hash(&hs->ss, prologue, prologue_len);
    /* Pre-message "<- s": the responder's static key. */
    if (initiator) {
        memcpy(hs->rs, rs, PYI_DHLEN);
        pyi_symmetric_mix_hash(&hs->ss, hs->rs, PYI_DHLEN);
        if (hybrid) {
            memcpy(hs->kem_pk, kem, PYI_KEM_PKLEN);
        }
    } else {
        pyi_symmetric_mix_hash(&hs->ss, hs->s_pub, PYI_DHLEN);
        if (hybrid) {
            memcpy(hs->kem_sk, kem, PYI_KEM_SKLEN);
        }
    }
    return PYI_OK;
}

void
pyi_handshake_set_ephemeral_for_testing_only(pyi_handshake *hs, const uint8_t e[PYI_DHLEN])
{
    memcpy(hs->e, e, PYI_DHLEN);
    hs->fixed_e = 1;
}

static void
make_ephemeral(pyi_handshake *hs)
{
    if (!hs->fixed_e) {
        randombytes_buf(hs->e, PYI_DHLEN);
    }
    crypto_scalarmult_curve25519_base(hs->e_pub, hs->e);
}

static size_t
overhead(const pyi_handshake *hs, int step)
{
    /* message 1: e, s (encrypted: 32 + 16), payload tag; message 2: e, payload tag */
    if (step == 0) {
        return PYI_DHLEN + PYI_DHLEN + PYI_TAGLEN + PYI_TAGLEN + (hs->hybrid ? PYI_KEM_CTLEN : 0);
    }
    return PYI_DHLEN + PYI_TAGLEN;
}

size_t
pyi_handshake_message_len(const pyi_handshake *hs, size_t payload_len)
{
    return overhead(hs, hs->step) + payload_len;
}

static int
fail(pyi_handshake *hs, int rc)
{
    pyi_handshake_clear(hs);
    hs->step = -1;
    return rc;
}

static int
write_skem(pyi_handshake *hs, uint8_t *out)
{
    uint8_t shared[32];
    if (crypto_kem_xwing_enc(out, shared, hs->kem_pk) != 0) {
        return PYI_ERR_KEM;
    }
    pyi_symmetric_mix_hash(&hs->ss, out, PYI_KEM_CTLEN);
    pyi_symmetric_mix_key(&hs->ss, shared, sizeof shared);
    sodium_memzero(shared, sizeof shared);
    return PYI_OK;
}

static int
read_skem(pyi_handshake *hs, const uint8_t *in)
{
    uint8_t shared[32];
    pyi_symmetric_mix_hash(&hs->ss, in, PYI_KEM_CTLEN);
    if (crypto_kem_xwing_dec(shared, in, hs->kem_sk) != 0) {
        return PYI_ERR_KEM;
    }
    pyi_symmetric_mix_key(&hs->ss, shared, sizeof shared);
    sodium_memzero(shared, sizeof shared);
    return PYI_OK;
}

int
pyi_handshake_write(pyi_handshake *hs, const uint8_t *payload, size_t payload_len, uint8_t *out)
{
    int rc;
    /* The initiator writes message 1, the responder message 2. */
    if (hs->step != (hs->initiator ? 0 : 1) || payload_len > PYI_MAX_PAYLOAD) {
        return fail(hs, payload_len > PYI_MAX_PAYLOAD ? PYI_ERR_LENGTH : PYI_ERR_STATE);
    }
    make_ephemeral(hs);
    memcpy(out, hs->e_pub, PYI_DHLEN);
    pyi_symmetric_mix_hash(&hs->ss, hs->e_pub, PYI_DHLEN);
    out += PYI_DHLEN;
    if (hs->initiator) {
        if ((rc = mix_dh(hs, hs->e, hs->rs)) != PYI_OK) /* es */
            return fail(hs, rc);
        if ((rc = pyi_symmetric_encrypt_and_hash(&hs->ss, hs->s_pub, PYI_DHLEN, out)) != PYI_OK) /* s */
            return fail(hs, rc);
        out += PYI_DHLEN + PYI_TAGLEN;
        if ((rc = mix_dh(hs, hs->s, hs->rs)) != PYI_OK) /* ss */
            return fail(hs, rc);
        if (hs->hybrid) {
            if ((rc = write_skem(hs, out)) != PYI_OK)
                return fail(hs, rc);
            out += PYI_KEM_CTLEN;
        }
    } else {
        if ((rc = mix_dh(hs, hs->e, hs->re)) != PYI_OK) /* ee */
            return fail(hs, rc);
        if ((rc = mix_dh(hs, hs->e, hs->rs)) != PYI_OK) /* se */
            return fail(hs, rc);
    }
    if ((rc = pyi_symmetric_encrypt_and_hash(&hs->ss, payload, payload_len, out)) != PYI_OK)
        return fail(hs, rc);
    hs->step++;
    return PYI_OK;
}

int
pyi_handshake_read(pyi_handshake *hs, const uint8_t *msg, size_t len, uint8_t *out, size_t *payload_len)
{
    int rc;
    size_t need = overhead(hs, hs->step);
    if (hs->step != (hs->initiator ? 1 : 0)) {
        return fail(hs, PYI_ERR_STATE);
    }
    if (len < need || len - need > PYI_MAX_PAYLOAD) {
        return fail(hs, PYI_ERR_LENGTH);
    }
    memcpy(hs->re, msg, PYI_DHLEN);
    pyi_symmetric_mix_hash(&hs->ss, hs->re, PYI_DHLEN);
    msg += PYI_DHLEN;
    len -= PYI_DHLEN;
    if (!hs->initiator) {
        if ((rc = mix_dh(hs, hs->s, hs->re)) != PYI_OK) /* es */
            return fail(hs, rc);
        if ((rc = pyi_symmetric_decrypt_and_hash(&hs->ss, msg, PYI_DHLEN + PYI_TAGLEN, hs->rs)) != PYI_OK) /* s */
            return fail(hs, rc);
        msg += PYI_DHLEN + PYI_TAGLEN;
        len -= PYI_DHLEN + PYI_TAGLEN;
        if ((rc = mix_dh(hs, hs->s, hs->rs)) != PYI_OK) /* ss */
            return fail(hs, rc);
        if (hs->hybrid) {
            if ((rc = read_skem(hs, msg)) != PYI_OK)
                return fail(hs, rc);
            msg += PYI_KEM_CTLEN;
            len -= PYI_KEM_CTLEN;
        }
    } else {
        if ((rc = mix_dh(hs, hs->e, hs->re)) != PYI_OK) /* ee */
            return fail(hs, rc);
        if ((rc = mix_dh(hs, hs->s, hs->re)) != PYI_OK) /* se */
            return fail(hs, rc);
    }
    if ((rc = pyi_symmetric_decrypt_and_hash(&hs->ss, msg, len, out)) != PYI_OK)
        return fail(hs, rc);
    *payload_len = len - PYI_TAGLEN;
    hs->step++;
    return PYI_OK;
}

void
pyi_handshake_clear(pyi_handshake *hs)
{
    sodium_memzero(hs, sizeof *hs);
}
