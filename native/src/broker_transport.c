/* The sealed channel's transport (docs/broker-protocol.md §4): a 4-byte big-endian
 * length, then ChaCha20-Poly1305 of the payload with the direction's implicit counter.
 * Any failure closes the transport: both keys are wiped and every later call is
 * refused, so nothing after a bad frame is ever delivered. Both directions apply Noise
 * Rekey() in lockstep every rekey_interval frames. */
#include <string.h>

#include <sodium.h>

#include "noise.h"

int
pyi_transport_from_handshake(pyi_transport *t, pyi_handshake *hs)
{
    memset(t, 0, sizeof *t);
    if (hs->step != 2) {
        return PYI_ERR_STATE;
    }
    pyi_cipher c1, c2;
    pyi_symmetric_split(&hs->ss, &c1, &c2);
    /* c1: initiator → responder (the cell sends), c2: responder → initiator. */
    t->send = hs->initiator ? c1 : c2;
    t->recv = hs->initiator ? c2 : c1;
    t->rekey_interval = PYI_REKEY_INTERVAL;
    sodium_memzero(&c1, sizeof c1);
    sodium_memzero(&c2, sizeof c2);
    pyi_handshake_clear(hs);
    return PYI_OK;
}

void
pyi_transport_close(pyi_transport *t)
{
    pyi_cipher_clear(&t->send);
    pyi_cipher_clear(&t->recv);
    t->closed = 1;
}

static int
refuse(pyi_transport *t, int rc)
{
    pyi_transport_close(t);
    return rc;
}

static void
after_frame(pyi_transport *t, pyi_cipher *cs)
{
    if (t->rekey_interval && cs->n % t->rekey_interval == 0) {
        pyi_cipher_rekey(cs);
    }
}

int
pyi_transport_seal(pyi_transport *t, const uint8_t *in, size_t len, uint8_t *out)
{
    if (t->closed) {
        return PYI_ERR_STATE;
    }
    if (len > PYI_MAX_PAYLOAD) {
        return PYI_ERR_LENGTH; /* the caller's mistake: the channel stays usable */
    }
    uint32_t sealed = (uint32_t)(len + PYI_TAGLEN);
    out[0] = (uint8_t)(sealed >> 24);
    out[1] = (uint8_t)(sealed >> 16);
    out[2] = (uint8_t)(sealed >> 8);
    out[3] = (uint8_t)sealed;
    int rc = pyi_cipher_encrypt(&t->send, NULL, 0, in, len, out + PYI_FRAME_HEADER);
    if (rc != PYI_OK) {
        return refuse(t, rc);
    }
    after_frame(t, &t->send);
    return PYI_OK;
}

int64_t
pyi_transport_check_header(pyi_transport *t, const uint8_t header[PYI_FRAME_HEADER])
{
    if (t->closed) {
        return PYI_ERR_STATE;
    }
    uint32_t len = ((uint32_t)header[0] << 24) | ((uint32_t)header[1] << 16) | ((uint32_t)header[2] << 8) | header[3];
    if (len < PYI_TAGLEN || len > PYI_MAX_SEALED) {
        return refuse(t, PYI_ERR_LENGTH);
    }
    return (int64_t)len;
}

int
pyi_transport_open(pyi_transport *t, const uint8_t *in, size_t len, uint8_t *out)
{
    if (t->closed) {
        return PYI_ERR_STATE;
    }
    if (len < PYI_TAGLEN || len > PYI_MAX_SEALED) {
        return refuse(t, PYI_ERR_LENGTH);
    }
    int rc = pyi_cipher_decrypt(&t->recv, NULL, 0, in, len, out);
    if (rc != PYI_OK) {
        sodium_memzero(out, len - PYI_TAGLEN);
        return refuse(t, rc);
    }
    after_frame(t, &t->recv);
    return PYI_OK;
}
