/* The broker's Python face inside _pyisolate: NoiseHandshake, SealedTransport, the
 * X25519/X-Wing key helpers, the linked libsodium's version and the C-level bench.
 * pyisolate.broker wraps these in the sealed channel; see docs/broker-protocol.md. */
#include <errno.h>

#include <sodium.h>

#include "_pyisolate.h"
#include "broker_relay.h"
#include "noise.h"

typedef struct {
    PyObject *handshake_type;
    PyObject *transport_type;
    PyObject *error;
} broker_state;

/* The module has m_size 0 (it keeps no state): the broker's types live here, set once
 * by the exec slot of the one (main) interpreter allowed to load the module. */
static broker_state state;

static PyObject *
broker_error(int status)
{
    PyObject *args = Py_BuildValue("(is)", status, pyi_status_text(status));
    if (args != NULL) {
        PyErr_SetObject(state.error, args);
        Py_DECREF(args);
    }
    return NULL;
}

static int
exact_len(Py_buffer *buf, Py_ssize_t len, const char *what)
{
    if (buf->len != len) {
        PyErr_Format(PyExc_ValueError, "%s must be %zd bytes, got %zd", what, len, buf->len);
        return -1;
    }
    return 0;
}

/* ---- NoiseHandshake ------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyMutex lock;
    pyi_handshake hs;
    int consumed;
    uint8_t h[PYI_HASHLEN];
    uint8_t rs[PYI_DHLEN];
    int have_rs;
} HandshakeObject;

static PyObject *
handshake_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"initiator", "static_key", "prologue", "remote_static", "kem_key",
                             "ephemeral_for_testing_only", NULL};
    int initiator;
    Py_buffer s = {0}, prologue = {0}, rs = {0}, kem = {0}, e = {0};
    HandshakeObject *self = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "py*|$y*z*z*z*", kwlist, &initiator, &s, &prologue, &rs, &kem, &e)) {
        return NULL;
    }
    int hybrid = kem.buf != NULL;
    if (prologue.buf == NULL) {
        PyErr_SetString(PyExc_TypeError, "NoiseHandshake() needs prologue= (bytes; may be empty)");
        goto done;
    }
    if (exact_len(&s, PYI_DHLEN, "static_key") < 0 ||
        (initiator && rs.buf == NULL && (PyErr_SetString(PyExc_ValueError, "the initiator needs remote_static"), 1)) ||
        (rs.buf && exact_len(&rs, PYI_DHLEN, "remote_static") < 0) ||
        (!initiator && rs.buf && (PyErr_SetString(PyExc_ValueError, "the responder learns remote_static"), 1)) ||
        (hybrid && exact_len(&kem, initiator ? PYI_KEM_PKLEN : PYI_KEM_SKLEN, "kem_key") < 0) ||
        (e.buf && exact_len(&e, PYI_DHLEN, "ephemeral_for_testing_only") < 0)) {
        goto done;
    }
    if (pyi_sodium_init() != PYI_OK) {
        broker_error(PYI_ERR_INIT);
        goto done;
    }
    self = (HandshakeObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        goto done;
    }
    int rc = pyi_handshake_init(&self->hs, initiator, hybrid, prologue.buf, (size_t)prologue.len, s.buf, rs.buf,
                                kem.buf);
    if (rc != PYI_OK) {
        Py_CLEAR(self);
        broker_error(rc);
        goto done;
    }
    if (e.buf) {
        pyi_handshake_set_ephemeral_for_testing_only(&self->hs, e.buf);
    }
done:
    PyBuffer_Release(&s);
    PyBuffer_Release(&prologue);
    PyBuffer_Release(&rs);
    PyBuffer_Release(&kem);
    PyBuffer_Release(&e);
    return (PyObject *)self;
}

static void
handshake_dealloc(PyObject *op)
{
    HandshakeObject *self = (HandshakeObject *)op;
    PyTypeObject *tp = Py_TYPE(self);
    pyi_handshake_clear(&self->hs);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static void
handshake_note(HandshakeObject *self)
{
    if (!self->hs.initiator && self->hs.step >= 1 && !self->have_rs) {
        memcpy(self->rs, self->hs.rs, PYI_DHLEN);
        self->have_rs = 1;
    }
    if (self->hs.step == 2) {
        memcpy(self->h, self->hs.ss.h, PYI_HASHLEN);
    }
}

static PyObject *
handshake_write(PyObject *op, PyObject *args)
{
    HandshakeObject *self = (HandshakeObject *)op;
    Py_buffer payload = {0};
    PyObject *out = NULL;
    if (!PyArg_ParseTuple(args, "|y*:write_message", &payload)) {
        return NULL;
    }
    PyMutex_Lock(&self->lock);
    if (self->consumed || self->hs.step < 0) {
        broker_error(PYI_ERR_STATE);
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)pyi_handshake_message_len(&self->hs, (size_t)payload.len));
    if (out == NULL) {
        goto done;
    }
    int rc = pyi_handshake_write(&self->hs, payload.buf ? payload.buf : (const uint8_t *)"", (size_t)payload.len,
                                 (uint8_t *)PyBytes_AS_STRING(out));
    if (rc != PYI_OK) {
        Py_CLEAR(out);
        broker_error(rc);
        goto done;
    }
    handshake_note(self);
done:
    PyMutex_Unlock(&self->lock);
    PyBuffer_Release(&payload);
    return out;
}

static PyObject *
handshake_read(PyObject *op, PyObject *arg)
{
    HandshakeObject *self = (HandshakeObject *)op;
    Py_buffer msg;
    PyObject *result = NULL;
    uint8_t *plain = NULL;
    if (PyObject_GetBuffer(arg, &msg, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyMutex_Lock(&self->lock);
    if (self->consumed || self->hs.step < 0) {
        broker_error(PYI_ERR_STATE);
        goto done;
    }
    plain = PyMem_Malloc((size_t)msg.len + 1);
    if (plain == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    size_t plen = 0;
    int rc = pyi_handshake_read(&self->hs, msg.buf, (size_t)msg.len, plain, &plen);
    if (rc != PYI_OK) {
        broker_error(rc);
        goto done;
    }
    handshake_note(self);
    result = PyBytes_FromStringAndSize((const char *)plain, (Py_ssize_t)plen);
done:
    PyMutex_Unlock(&self->lock);
    if (plain) {
        sodium_memzero(plain, (size_t)msg.len);
        PyMem_Free(plain);
    }
    PyBuffer_Release(&msg);
    return result;
}

typedef struct {
    PyObject_HEAD
    PyMutex send_lock, recv_lock;
    pyi_transport t;
} TransportObject;

static PyObject *
handshake_to_transport(PyObject *op, PyObject *unused)
{
    HandshakeObject *self = (HandshakeObject *)op;
    PyTypeObject *tp = (PyTypeObject *)state.transport_type;
    TransportObject *t = (TransportObject *)tp->tp_alloc(tp, 0);
    if (t == NULL) {
        return NULL;
    }
    PyMutex_Lock(&self->lock);
    int rc = self->consumed ? PYI_ERR_STATE : pyi_transport_from_handshake(&t->t, &self->hs);
    if (rc == PYI_OK) {
        self->consumed = 1;
    }
    PyMutex_Unlock(&self->lock);
    if (rc != PYI_OK) {
        Py_DECREF(t);
        return broker_error(rc);
    }
    return (PyObject *)t;
}

static PyObject *
handshake_get_finished(PyObject *op, void *closure)
{
    HandshakeObject *self = (HandshakeObject *)op;
    return PyBool_FromLong(self->hs.step == 2 || self->consumed);
}

static PyObject *
handshake_get_remote_static(PyObject *op, void *closure)
{
    HandshakeObject *self = (HandshakeObject *)op;
    if (!self->have_rs) {
        Py_RETURN_NONE;
    }
    return PyBytes_FromStringAndSize((const char *)self->rs, PYI_DHLEN);
}

static PyObject *
handshake_get_hash(PyObject *op, void *closure)
{
    HandshakeObject *self = (HandshakeObject *)op;
    if (!(self->hs.step == 2 || self->consumed)) {
        Py_RETURN_NONE;
    }
    return PyBytes_FromStringAndSize((const char *)self->h, PYI_HASHLEN);
}

static PyMethodDef handshake_methods[] = {
    {"write_message", handshake_write, METH_VARARGS,
     "write_message(payload=b'') -> bytes: the next handshake message (this side's turn)."},
    {"read_message", handshake_read, METH_O,
     "read_message(message) -> bytes: process the peer's message; its payload. Any failure ends the handshake."},
    {"to_transport", handshake_to_transport, METH_NOARGS,
     "to_transport() -> SealedTransport: Split(); consumes the finished handshake (its secrets are wiped)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef handshake_getset[] = {
    {"finished", handshake_get_finished, NULL, "both messages processed", NULL},
    {"remote_static", handshake_get_remote_static, NULL,
     "the initiator's static public key (responder side, after message 1)", NULL},
    {"handshake_hash", handshake_get_hash, NULL, "h after the handshake (channel binding)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot handshake_slots[] = {
    {Py_tp_new, handshake_new},
    {Py_tp_dealloc, handshake_dealloc},
    {Py_tp_methods, handshake_methods},
    {Py_tp_getset, handshake_getset},
    {Py_tp_doc, "NoiseHandshake(initiator, static_key, *, prologue, remote_static=None, kem_key=None)\n\n"
                "Noise_IK_25519_ChaChaPoly_SHA256; with kem_key (X-Wing public key for the initiator,\n"
                "secret key for the responder) the hybrid pattern of docs/broker-protocol.md."},
    {0, NULL},
};

static PyType_Spec handshake_spec = {
    .name = "_pyisolate.NoiseHandshake",
    .basicsize = sizeof(HandshakeObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = handshake_slots,
};

/* ---- SealedTransport ------------------------------------------------------------------ */

static void
transport_dealloc(PyObject *op)
{
    TransportObject *self = (TransportObject *)op;
    PyTypeObject *tp = Py_TYPE(self);
    pyi_transport_close(&self->t);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *
transport_seal(PyObject *op, PyObject *arg)
{
    TransportObject *self = (TransportObject *)op;
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if ((size_t)in.len > PYI_MAX_PAYLOAD) {
        PyBuffer_Release(&in);
        return broker_error(PYI_ERR_LENGTH);
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, PYI_FRAME_HEADER + in.len + PYI_TAGLEN);
    if (out != NULL) {
        PyMutex_Lock(&self->send_lock);
        int rc = pyi_transport_seal(&self->t, in.buf, (size_t)in.len, (uint8_t *)PyBytes_AS_STRING(out));
        PyMutex_Unlock(&self->send_lock);
        if (rc != PYI_OK) {
            Py_CLEAR(out);
            broker_error(rc);
        }
    }
    PyBuffer_Release(&in);
    return out;
}

static PyObject *
transport_frame_length(PyObject *op, PyObject *arg)
{
    TransportObject *self = (TransportObject *)op;
    Py_buffer hdr;
    if (PyObject_GetBuffer(arg, &hdr, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    int64_t len = PYI_ERR_LENGTH;
    PyMutex_Lock(&self->recv_lock);
    if (hdr.len == PYI_FRAME_HEADER) {
        len = pyi_transport_check_header(&self->t, hdr.buf);
    } else {
        PyMutex_Lock(&self->send_lock);
        pyi_transport_close(&self->t);
        PyMutex_Unlock(&self->send_lock);
    }
    PyMutex_Unlock(&self->recv_lock);
    PyBuffer_Release(&hdr);
    if (len < 0) {
        return broker_error((int)len);
    }
    return PyLong_FromLongLong(len);
}

static PyObject *
transport_open(PyObject *op, PyObject *arg)
{
    TransportObject *self = (TransportObject *)op;
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    int rc = PYI_ERR_LENGTH;
    PyObject *out = NULL;
    if (in.len >= PYI_TAGLEN && (size_t)in.len <= PYI_MAX_SEALED) {
        out = PyBytes_FromStringAndSize(NULL, in.len - PYI_TAGLEN);
        if (out == NULL) {
            PyBuffer_Release(&in);
            return NULL;
        }
    }
    PyMutex_Lock(&self->recv_lock);
    if (out != NULL) {
        rc = pyi_transport_open(&self->t, in.buf, (size_t)in.len, (uint8_t *)PyBytes_AS_STRING(out));
    }
    if (rc != PYI_OK) {
        PyMutex_Lock(&self->send_lock);
        pyi_transport_close(&self->t); /* any failure closes both directions */
        PyMutex_Unlock(&self->send_lock);
    }
    PyMutex_Unlock(&self->recv_lock);
    PyBuffer_Release(&in);
    if (rc != PYI_OK) {
        Py_XDECREF(out);
        return broker_error(rc);
    }
    return out;
}

static PyObject *
transport_close(PyObject *op, PyObject *unused)
{
    TransportObject *self = (TransportObject *)op;
    PyMutex_Lock(&self->recv_lock);
    PyMutex_Lock(&self->send_lock);
    pyi_transport_close(&self->t);
    PyMutex_Unlock(&self->send_lock);
    PyMutex_Unlock(&self->recv_lock);
    Py_RETURN_NONE;
}

static PyObject *
transport_set_for_testing_only(PyObject *op, PyObject *args, PyObject *kwargs)
{
    TransportObject *self = (TransportObject *)op;
    static char *kwlist[] = {"send_nonce", "recv_nonce", "rekey_interval", NULL};
    PyObject *send = Py_None, *recv = Py_None, *interval = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOO", kwlist, &send, &recv, &interval)) {
        return NULL;
    }
    unsigned long long v;
    PyMutex_Lock(&self->recv_lock);
    PyMutex_Lock(&self->send_lock);
#define SETFIELD(obj, field)                                                                                  \
    if (obj != Py_None) {                                                                                     \
        v = PyLong_AsUnsignedLongLong(obj);                                                                   \
        if (v == (unsigned long long)-1 && PyErr_Occurred()) {                                                \
            goto done;                                                                                        \
        }                                                                                                     \
        field = v;                                                                                            \
    }
    SETFIELD(send, self->t.send.n)
    SETFIELD(recv, self->t.recv.n)
    SETFIELD(interval, self->t.rekey_interval)
#undef SETFIELD
done:
    PyMutex_Unlock(&self->send_lock);
    PyMutex_Unlock(&self->recv_lock);
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
transport_key_digest_for_testing_only(PyObject *op, PyObject *unused)
{
    TransportObject *self = (TransportObject *)op;
    /* A digest of both keys, never the keys: shows that a rekey rotated them. */
    uint8_t digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_state st;
    PyMutex_Lock(&self->recv_lock);
    PyMutex_Lock(&self->send_lock);
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, self->t.send.k, PYI_KEYLEN);
    crypto_hash_sha256_update(&st, self->t.recv.k, PYI_KEYLEN);
    crypto_hash_sha256_final(&st, digest);
    PyMutex_Unlock(&self->send_lock);
    PyMutex_Unlock(&self->recv_lock);
    return PyBytes_FromStringAndSize((const char *)digest, sizeof digest);
}

static PyObject *
transport_rekey(PyObject *op, PyObject *unused)
{
    TransportObject *self = (TransportObject *)op;
    /* Noise Rekey() of the send direction; the peer must call rekey_recv() in lockstep. */
    PyMutex_Lock(&self->send_lock);
    if (!self->t.closed) {
        pyi_cipher_rekey(&self->t.send);
    }
    PyMutex_Unlock(&self->send_lock);
    Py_RETURN_NONE;
}

static PyObject *
transport_rekey_recv(PyObject *op, PyObject *unused)
{
    TransportObject *self = (TransportObject *)op;
    PyMutex_Lock(&self->recv_lock);
    if (!self->t.closed) {
        pyi_cipher_rekey(&self->t.recv);
    }
    PyMutex_Unlock(&self->recv_lock);
    Py_RETURN_NONE;
}

static PyObject *
transport_get_closed(PyObject *op, void *c)
{
    TransportObject *self = (TransportObject *)op;
    return PyBool_FromLong(self->t.closed);
}

static PyObject *
transport_get_send_nonce(PyObject *op, void *c)
{
    TransportObject *self = (TransportObject *)op;
    return PyLong_FromUnsignedLongLong(self->t.send.n);
}

static PyObject *
transport_get_recv_nonce(PyObject *op, void *c)
{
    TransportObject *self = (TransportObject *)op;
    return PyLong_FromUnsignedLongLong(self->t.recv.n);
}

static PyObject *
transport_get_rekey_interval(PyObject *op, void *c)
{
    TransportObject *self = (TransportObject *)op;
    return PyLong_FromUnsignedLongLong(self->t.rekey_interval);
}

static PyMethodDef transport_methods[] = {
    {"seal", transport_seal, METH_O,
     "seal(payload) -> bytes: one frame (4-byte big-endian length + ciphertext and tag)."},
    {"frame_length", transport_frame_length, METH_O,
     "frame_length(header) -> int: the sealed length a 4-byte header announces; a bad one closes the transport."},
    {"open", transport_open, METH_O,
     "open(body) -> bytes: authenticate and decrypt one frame's body; any failure closes the transport."},
    {"close", transport_close, METH_NOARGS, "close(): wipe both keys; every later call is refused."},
    {"rekey", transport_rekey, METH_NOARGS, "rekey(): Noise Rekey() of the sending key."},
    {"rekey_recv", transport_rekey_recv, METH_NOARGS, "rekey_recv(): Noise Rekey() of the receiving key."},
    {"set_for_testing_only", (PyCFunction)(void (*)(void))transport_set_for_testing_only,
     METH_VARARGS | METH_KEYWORDS, "set_for_testing_only(*, send_nonce, recv_nonce, rekey_interval): tests only."},
    {"key_digest_for_testing_only", transport_key_digest_for_testing_only, METH_NOARGS,
     "SHA-256 of both keys (never the keys): tests only."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef transport_getset[] = {
    {"closed", transport_get_closed, NULL, "refuses everything (closed, or a frame failed)", NULL},
    {"send_nonce", transport_get_send_nonce, NULL, "the next sending counter", NULL},
    {"recv_nonce", transport_get_recv_nonce, NULL, "the next expected receiving counter", NULL},
    {"rekey_interval", transport_get_rekey_interval, NULL, "frames between lockstep rekeys", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot transport_slots[] = {
    {Py_tp_dealloc, transport_dealloc},
    {Py_tp_methods, transport_methods},
    {Py_tp_getset, transport_getset},
    {Py_tp_doc, "The two CipherStates of a finished NoiseHandshake, with the broker's framing."},
    {0, NULL},
};

static PyType_Spec transport_spec = {
    .name = "_pyisolate.SealedTransport",
    .basicsize = sizeof(TransportObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = transport_slots,
};

/* ---- functions ----------------------------------------------------------------------- */

static PyObject *
sodium_version(PyObject *module, PyObject *unused)
{
    return PyUnicode_FromString(sodium_version_string());
}

static PyObject *
x25519_keypair(PyObject *module, PyObject *unused)
{
    uint8_t sk[PYI_DHLEN], pk[PYI_DHLEN];
    if (pyi_sodium_init() != PYI_OK) {
        return broker_error(PYI_ERR_INIT);
    }
    randombytes_buf(sk, sizeof sk);
    crypto_scalarmult_curve25519_base(pk, sk);
    PyObject *r = Py_BuildValue("(y#y#)", sk, (Py_ssize_t)sizeof sk, pk, (Py_ssize_t)sizeof pk);
    sodium_memzero(sk, sizeof sk);
    return r;
}

static PyObject *
x25519_public(PyObject *module, PyObject *arg)
{
    Py_buffer sk;
    uint8_t pk[PYI_DHLEN];
    if (PyObject_GetBuffer(arg, &sk, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (exact_len(&sk, PYI_DHLEN, "private key") < 0) {
        PyBuffer_Release(&sk);
        return NULL;
    }
    crypto_scalarmult_curve25519_base(pk, sk.buf);
    PyBuffer_Release(&sk);
    return PyBytes_FromStringAndSize((const char *)pk, sizeof pk);
}

static PyObject *
xwing_keypair(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"seed", NULL};
    Py_buffer seed = {0};
    uint8_t pk[PYI_KEM_PKLEN], sk[PYI_KEM_SKLEN];
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|z*:xwing_keypair", kwlist, &seed)) {
        return NULL;
    }
    if (pyi_sodium_init() != PYI_OK) {
        PyBuffer_Release(&seed);
        return broker_error(PYI_ERR_INIT);
    }
    if (seed.buf && exact_len(&seed, crypto_kem_xwing_SEEDBYTES, "seed") < 0) {
        PyBuffer_Release(&seed);
        return NULL;
    }
    int rc = seed.buf ? crypto_kem_xwing_seed_keypair(pk, sk, seed.buf) : crypto_kem_xwing_keypair(pk, sk);
    PyBuffer_Release(&seed);
    if (rc != 0) {
        return broker_error(PYI_ERR_KEM);
    }
    PyObject *r = Py_BuildValue("(y#y#)", pk, (Py_ssize_t)sizeof pk, sk, (Py_ssize_t)sizeof sk);
    sodium_memzero(sk, sizeof sk);
    return r;
}

static PyObject *
xwing_encapsulate(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"public_key", "seed_for_testing_only", NULL};
    Py_buffer pk, seed = {0};
    uint8_t ct[PYI_KEM_CTLEN], ss[crypto_kem_xwing_SHAREDSECRETBYTES];
    PyObject *r = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|$z*:xwing_encapsulate", kwlist, &pk, &seed)) {
        return NULL;
    }
    if (exact_len(&pk, PYI_KEM_PKLEN, "public_key") == 0 && (!seed.buf || exact_len(&seed, 64, "seed") == 0)) {
        int rc = seed.buf ? crypto_kem_xwing_enc_deterministic(ct, ss, pk.buf, seed.buf)
                          : crypto_kem_xwing_enc(ct, ss, pk.buf);
        r = rc != 0 ? broker_error(PYI_ERR_KEM)
                    : Py_BuildValue("(y#y#)", ct, (Py_ssize_t)sizeof ct, ss, (Py_ssize_t)sizeof ss);
    }
    sodium_memzero(ss, sizeof ss);
    PyBuffer_Release(&pk);
    PyBuffer_Release(&seed);
    return r;
}

static PyObject *
xwing_decapsulate(PyObject *module, PyObject *args)
{
    Py_buffer ct, sk;
    uint8_t ss[crypto_kem_xwing_SHAREDSECRETBYTES];
    PyObject *r = NULL;
    if (!PyArg_ParseTuple(args, "y*y*:xwing_decapsulate", &ct, &sk)) {
        return NULL;
    }
    if (exact_len(&ct, PYI_KEM_CTLEN, "ciphertext") == 0 && exact_len(&sk, PYI_KEM_SKLEN, "secret_key") == 0) {
        r = crypto_kem_xwing_dec(ss, ct.buf, sk.buf) != 0 ? broker_error(PYI_ERR_KEM)
                                                           : PyBytes_FromStringAndSize((const char *)ss, sizeof ss);
    }
    sodium_memzero(ss, sizeof ss);
    PyBuffer_Release(&ct);
    PyBuffer_Release(&sk);
    return r;
}

static PyObject *
broker_bench(PyObject *module, PyObject *args)
{
    const char *what;
    unsigned long long iterations;
    if (!PyArg_ParseTuple(args, "sK:broker_bench", &what, &iterations)) {
        return NULL;
    }
    double ns;
    Py_BEGIN_ALLOW_THREADS
    ns = pyi_bench_ns(what, iterations);
    Py_END_ALLOW_THREADS
    if (ns < 0) {
        PyErr_Format(PyExc_ValueError, "broker_bench: unknown measurement %R or a failure", PyTuple_GET_ITEM(args, 0));
        return NULL;
    }
    return PyFloat_FromDouble(ns);
}

static PyObject *
relay_sandbox(PyObject *module, PyObject *args)
{
    /* The transport's state moves to the native relay (broker_relay.c) and the object's
     * copy is wiped (it reads as closed): the relay thread never touches Python, so it
     * shares nothing with the object's lifetime. */
    PyObject *obj;
    int sealed, inner;
    if (!PyArg_ParseTuple(args, "O!ii:relay_sandbox", (PyTypeObject *)state.transport_type, &obj, &sealed, &inner)) {
        return NULL;
    }
    TransportObject *self = (TransportObject *)obj;
    PyMutex_Lock(&self->recv_lock);
    PyMutex_Lock(&self->send_lock);
    int rc = pyi_relay_add(sealed, inner, &self->t);
    if (rc == 0) {
        pyi_transport_close(&self->t);
    }
    PyMutex_Unlock(&self->send_lock);
    PyMutex_Unlock(&self->recv_lock);
    if (rc == -EINVAL) {
        return broker_error(PYI_ERR_STATE);
    }
    if (rc < 0) {
        errno = -rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyMethodDef broker_functions[] = {
    {"sodium_version", sodium_version, METH_NOARGS, "sodium_version() -> str: the statically linked libsodium's version."},
    {"x25519_keypair", x25519_keypair, METH_NOARGS, "x25519_keypair() -> (private, public)"},
    {"x25519_public", x25519_public, METH_O, "x25519_public(private) -> public"},
    {"xwing_keypair", (PyCFunction)(void (*)(void))xwing_keypair, METH_VARARGS | METH_KEYWORDS,
     "xwing_keypair(seed=None) -> (public_key, secret_key)"},
    {"xwing_encapsulate", (PyCFunction)(void (*)(void))xwing_encapsulate, METH_VARARGS | METH_KEYWORDS,
     "xwing_encapsulate(public_key, *, seed_for_testing_only=None) -> (ciphertext, shared_secret)"},
    {"xwing_decapsulate", xwing_decapsulate, METH_VARARGS, "xwing_decapsulate(ciphertext, secret_key) -> shared_secret"},
    {"broker_bench", broker_bench, METH_VARARGS,
     "broker_bench(what, iterations) -> float: C-level nanoseconds per operation (handshake, handshake_hybrid, "
     "seal_open_64, seal_open_1024, seal_64; baselines x25519, aead_64)."},
    {"relay_sandbox", relay_sandbox, METH_VARARGS,
     "relay_sandbox(transport, sealed_fd, inner_fd): the cell's native relay takes both descriptors and the\n"
     "transport's keys (the object is left closed) and seals/opens every frame between them."},
    {NULL, NULL, 0, NULL},
};

int
pyi_broker_exec(PyObject *module)
{
    if (pyi_sodium_init() != PYI_OK) {
        PyErr_SetString(PyExc_ImportError, "libsodium failed to initialise");
        return -1;
    }
    if (state.error == NULL) {
        state.error = PyErr_NewException("_pyisolate.BrokerError", NULL, NULL);
        state.handshake_type = PyType_FromSpec(&handshake_spec);
        state.transport_type = PyType_FromSpec(&transport_spec);
        if (state.error == NULL || state.handshake_type == NULL || state.transport_type == NULL) {
            return -1;
        }
    }
    if (PyModule_AddFunctions(module, broker_functions) < 0 ||
        PyModule_AddObjectRef(module, "BrokerError", state.error) < 0 ||
        PyModule_AddObjectRef(module, "NoiseHandshake", state.handshake_type) < 0 ||
        PyModule_AddObjectRef(module, "SealedTransport", state.transport_type) < 0 ||
        PyModule_AddIntConstant(module, "BROKER_MAX_PAYLOAD", PYI_MAX_PAYLOAD) < 0) {
        return -1;
    }
    return 0;
}
