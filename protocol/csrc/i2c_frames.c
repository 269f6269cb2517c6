/* protocol._native, the server's part: its common I2C request frame and its RESULT.
 *
 * Sans-I/O like the rest of protocol/: bytes in, objects out.  Optional: built only
 * by the compiled build (setup.py, BUSBRIDGE_COMPILE=1); without it protocol/accel.py
 * falls back to the pure path, which is also what runs for every frame this module
 * does not take.
 *
 * Decoder.feed(buf, pos, out) takes, from offset pos of a receive buffer, every
 * consecutive frame of exactly the common shape that the general path would accept
 * and admit:
 *
 *   prefix (u32 BE, <= max_frame) + fixarray(5) [
 *     2, uint id 1..0xFFFFFFFF (fixint/uint8/16/32),
 *     ASCII fixstr/str8 bus name of 1..64 bytes,
 *     fixarray(1..15, <= max_requests) of fixarray(2) [
 *       bin8(8) out_hdr: 7-bit address, zero padding, flags FAIL_NEXT|M_RD only,
 *       bin8/bin16 write data (<= max_i2c_len) | uint read length (<= max_i2c_len)],
 *     nil | uint timeout 1..3600000]
 *   with nothing after it, the last message without FAIL_NEXT, its RESULT room
 *   within max_frame, and its id neither in flight, nor a live subscription, nor
 *   over max_in_flight.
 *
 * For each it appends I2CRequest(id, bus, (I2CMsg, ...), timeout) to out and puts
 * the id in flight, as Connection._on_i2c does.  It stops at the first frame that is
 * anything else (or not complete) and returns that frame's offset: the general path
 * decodes it from there, so every refusal keeps its code, message, id and fatality.
 * Every read is bounds-checked against the frame; nothing is allocated before the
 * whole frame has been checked.
 *
 * result_body(id, status, reads) is accel._result_body in C: the msgpack bytes of
 * RESULT [4, id, status, reads, []] for a bytes status and up to 15 reads of up to
 * 255 bytes each, or None for anything else (msgpack's general encoder then);
 * result_frame(id, status, reads) the same with its length prefix, in one piece.
 */
#include "native.h"

typedef struct {
    uint32_t addr, flags, length; /* length: read length, or write length */
    const unsigned char *data;    /* write data (inside the frame), NULL for a read */
} Msg;

typedef struct {
    uint32_t rid;
    const unsigned char *bus;
    Py_ssize_t bus_len;
    int n;
    Msg msgs[MAX_MSGS];
    int has_timeout;
    uint32_t timeout;
} Frame;

typedef struct {
    PyObject_HEAD
    PyObject *in_flight; /* set[int], the connection's own */
    PyObject *live;      /* set[int], its live subscriptions */
    PyObject *msg_type;  /* I2CMsg */
    PyObject *req_type;  /* I2CRequest */
    PyObject *bus;       /* the last bus name built (a str), reused while it repeats */
    Py_ssize_t max_frame, max_requests, max_i2c_len, max_in_flight;
} Decoder;

/* Check one frame body; 1 and *f filled if it is the common shape, else 0. */
static int
parse_frame(const Decoder *d, const unsigned char *body, Py_ssize_t n, Frame *f)
{
    Cur c = {body, body + n};
    if (n < 3 || body[0] != 0x95 || body[1] != 0x02)
        return 0;
    c.p = body + 2;
    if (!read_uint(&c, &f->rid) || f->rid == 0)
        return 0;
    /* the bus name */
    if (c.p >= c.end)
        return 0;
    Py_ssize_t blen;
    unsigned char b = *c.p;
    if ((b & 0xe0) == 0xa0) {
        blen = b & 0x1f;
        c.p += 1;
    }
    else if (b == 0xd9) {
        if (c.end - c.p < 2)
            return 0;
        blen = c.p[1];
        c.p += 2;
    }
    else
        return 0;
    if (blen < 1 || blen > MAX_BUS_NAME || c.end - c.p < blen)
        return 0;
    for (Py_ssize_t i = 0; i < blen; i++)
        if (c.p[i] & 0x80) /* ASCII only: one byte, one character */
            return 0;
    f->bus = c.p;
    f->bus_len = blen;
    c.p += blen;
    /* the requests */
    if (c.p >= c.end)
        return 0;
    b = *c.p++;
    if ((b & 0xf0) != 0x90)
        return 0;
    int count = b & 0x0f;
    if (count < 1 || count > d->max_requests)
        return 0;
    uint64_t rx = 0;
    uint32_t flags = 0;
    for (int i = 0; i < count; i++) {
        Msg *m = &f->msgs[i];
        /* [bin8(8) out_hdr, buf] */
        if (c.end - c.p < 11 || c.p[0] != 0x92 || c.p[1] != 0xc4 || c.p[2] != 0x08)
            return 0;
        const unsigned char *h = c.p + 3;
        uint32_t field = (uint32_t)h[0] | (uint32_t)h[1] << 8;
        uint32_t pad = (uint32_t)h[2] | (uint32_t)h[3] << 8;
        flags = (uint32_t)h[4] | (uint32_t)h[5] << 8 | (uint32_t)h[6] << 16 |
                (uint32_t)h[7] << 24;
        c.p += 11;
        /* 7-bit only (bit 0 clear, high byte zero, not a 10-bit low byte 11110xx0:
         * codec.decode_i2c_addr), zero padding, known flags; the rest is the general
         * path's, refusals included */
        if (field & 0xff01u || (field & 0xf9u) == 0xf0u || pad || flags & ~(FAIL_NEXT | M_RD))
            return 0;
        m->addr = field >> 1;
        m->flags = flags;
        if (flags & M_RD) {
            uint32_t len;
            if (!read_uint(&c, &len) || len > (uint64_t)d->max_i2c_len)
                return 0;
            m->length = len;
            m->data = NULL;
            rx += len;
        }
        else {
            if (c.p >= c.end)
                return 0;
            uint32_t len;
            if (c.p[0] == 0xc4) {
                if (c.end - c.p < 2)
                    return 0;
                len = c.p[1];
                c.p += 2;
            }
            else if (c.p[0] == 0xc5) {
                if (c.end - c.p < 3)
                    return 0;
                len = (uint32_t)c.p[1] << 8 | c.p[2];
                c.p += 3;
            }
            else
                return 0;
            if (len > (uint64_t)d->max_i2c_len || c.end - c.p < (Py_ssize_t)len)
                return 0;
            m->length = len;
            m->data = c.p;
            c.p += len;
        }
    }
    if (flags & FAIL_NEXT) /* the frame ends inside a chain */
        return 0;
    if ((uint64_t)RESULT_BASE + (uint64_t)RESULT_PER_REQUEST * (uint64_t)count + rx >
        (uint64_t)d->max_frame)
        return 0;
    f->n = count;
    /* the timeout */
    if (c.p >= c.end)
        return 0;
    if (*c.p == 0xc0) {
        f->has_timeout = 0;
        c.p += 1;
    }
    else {
        if (!read_uint(&c, &f->timeout) || f->timeout == 0 || f->timeout > MAX_TIMEOUT_MS)
            return 0;
        f->has_timeout = 1;
    }
    return c.p == c.end; /* trailing bytes: the general path refuses them */
}

/* The bus name as a str, the previous one's object while the name repeats. */
static PyObject *
bus_name(Decoder *d, const Frame *f)
{
    PyObject *last = d->bus;
    if (last != NULL && PyUnicode_GET_LENGTH(last) == f->bus_len &&
        memcmp(PyUnicode_1BYTE_DATA(last), f->bus, (size_t)f->bus_len) == 0) {
        Py_INCREF(last);
        return last;
    }
    PyObject *s = PyUnicode_DecodeASCII((const char *)f->bus, f->bus_len, NULL);
    if (s == NULL)
        return NULL;
    Py_INCREF(s);
    Py_XSETREF(d->bus, s);
    return s;
}

/* I2CRequest(rid, bus, (I2CMsg, ...), timeout) of a checked frame; a new reference. */
static PyObject *
build(Decoder *d, const Frame *f, PyObject *rid)
{
    PyObject *bus = NULL, *msgs = NULL, *timeout = NULL, *req = NULL;
    bus = bus_name(d, f);
    if (bus == NULL)
        goto done;
    msgs = PyTuple_New(f->n);
    if (msgs == NULL)
        goto done;
    for (int i = 0; i < f->n; i++) {
        const Msg *m = &f->msgs[i];
        PyObject *args[5];
        args[0] = PyLong_FromUnsignedLong(m->addr);
        args[1] = PyLong_FromUnsignedLong(m->flags);
        if (m->data != NULL) {
            args[2] = PyBytes_FromStringAndSize((const char *)m->data, m->length);
            args[3] = PyLong_FromLong(0);
        }
        else {
            args[2] = PyBytes_FromStringAndSize(NULL, 0);
            args[3] = PyLong_FromUnsignedLong(m->length);
        }
        args[4] = Py_False;
        PyObject *msg = NULL;
        if (args[0] && args[1] && args[2] && args[3])
            msg = PyObject_Vectorcall(d->msg_type, args, 5, NULL);
        for (int k = 0; k < 4; k++)
            Py_XDECREF(args[k]);
        if (msg == NULL)
            goto done;
        PyTuple_SET_ITEM(msgs, i, msg);
    }
    if (f->has_timeout) {
        timeout = PyLong_FromUnsignedLong(f->timeout);
        if (timeout == NULL)
            goto done;
    }
    else {
        timeout = Py_None;
        Py_INCREF(timeout);
    }
    PyObject *args[4] = {rid, bus, msgs, timeout};
    req = PyObject_Vectorcall(d->req_type, args, 4, NULL);
done:
    Py_XDECREF(bus);
    Py_XDECREF(msgs);
    Py_XDECREF(timeout);
    return req;
}

static int
Decoder_init(Decoder *self, PyObject *args, PyObject *kw)
{
    PyObject *in_flight, *live, *msg_type, *req_type, *l0, *l1, *l2, *l3;
    static char *names[] = {"in_flight", "live", "msg_type", "req_type", "max_frame",
                            "max_requests", "max_i2c_len", "max_in_flight", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!OOOOOO:Decoder", names, &PySet_Type,
                                     &in_flight, &PySet_Type, &live, &msg_type, &req_type,
                                     &l0, &l1, &l2, &l3))
        return -1;
    if (!PyCallable_Check(msg_type) || !PyCallable_Check(req_type)) {
        PyErr_SetString(PyExc_TypeError, "msg_type and req_type must be callable");
        return -1;
    }
    Py_ssize_t mf = as_limit(l0), mr = as_limit(l1), ml = as_limit(l2), mi = as_limit(l3);
    if (mf < 0 || mr < 0 || ml < 0 || mi < 0)
        return -1;
    Py_INCREF(in_flight);
    Py_XSETREF(self->in_flight, in_flight);
    Py_INCREF(live);
    Py_XSETREF(self->live, live);
    Py_INCREF(msg_type);
    Py_XSETREF(self->msg_type, msg_type);
    Py_INCREF(req_type);
    Py_XSETREF(self->req_type, req_type);
    Py_CLEAR(self->bus);
    self->max_frame = mf;
    self->max_requests = mr;
    self->max_i2c_len = ml;
    self->max_in_flight = mi;
    return 0;
}

static void
Decoder_dealloc(Decoder *self)
{
    Py_XDECREF(self->in_flight);
    Py_XDECREF(self->live);
    Py_XDECREF(self->msg_type);
    Py_XDECREF(self->req_type);
    Py_XDECREF(self->bus);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Decoder_feed(Decoder *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos;
    if (!feed_args(args, nargs, self->in_flight != NULL, "Decoder", &view, &pos))
        return NULL;
    PyObject *out = args[2];
    const unsigned char *buf = (const unsigned char *)view.buf;
    Py_ssize_t size = view.len;
    Frame f;
    while (size - pos >= 4) {
        const unsigned char *p = buf + pos;
        uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if ((uint64_t)n > (uint64_t)self->max_frame || (Py_ssize_t)n > size - pos - 4)
            break; /* over the limit (the general path refuses it) or not all here */
        if (!parse_frame(self, p + 4, (Py_ssize_t)n, &f))
            break;
        if (PySet_GET_SIZE(self->in_flight) >= self->max_in_flight)
            break;
        PyObject *rid = PyLong_FromUnsignedLong(f.rid);
        if (rid == NULL)
            goto fail;
        int dup = PySet_Contains(self->in_flight, rid);
        if (dup == 0 && PySet_GET_SIZE(self->live))
            dup = PySet_Contains(self->live, rid);
        if (dup != 0) {
            Py_DECREF(rid);
            if (dup < 0)
                goto fail;
            break; /* refused by the general path (duplicate id, live subscription) */
        }
        PyObject *req = build(self, &f, rid);
        if (req == NULL) {
            Py_DECREF(rid);
            goto fail;
        }
        int err = PyList_Append(out, req);
        Py_DECREF(req);
        if (err == 0)
            err = PySet_Add(self->in_flight, rid);
        Py_DECREF(rid);
        if (err < 0)
            goto fail;
        pos += 4 + (Py_ssize_t)n;
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(pos);
fail:
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef Decoder_methods[] = {
    {"feed", (PyCFunction)(void (*)(void))Decoder_feed, METH_FASTCALL,
     "feed(buf, pos, out) -> the offset of the first frame not taken"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject bb_DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "protocol._native.Decoder",
    .tp_basicsize = sizeof(Decoder),
    .tp_dealloc = (destructor)Decoder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The common I2C request frames of one server connection, decoded in C.",
    .tp_methods = Decoder_methods,
    .tp_init = (initproc)Decoder_init,
    .tp_new = PyType_GenericNew,
};

/* -- the RESULT ---------------------------------------------------------------- */

static PyObject *
result(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t prefix)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "takes 3 arguments: id, status, reads");
        return NULL;
    }
    PyObject *rido = args[0], *status = args[1], *reads = args[2];
    if (!PyLong_Check(rido) || !PyBytes_CheckExact(status) || !PyList_CheckExact(reads))
        Py_RETURN_NONE;
    int overflow = 0;
    long long rid = PyLong_AsLongLongAndOverflow(rido, &overflow);
    if (rid == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t slen = PyBytes_GET_SIZE(status);
    Py_ssize_t nreads = PyList_GET_SIZE(reads);
    if (overflow || rid <= 0 || rid > 0xFFFFFFFFLL || slen > 255 || nreads > 15)
        Py_RETURN_NONE;
    Py_ssize_t size = 2 + (rid < 0x80 ? 1 : rid < 0x100 ? 2 : rid < 0x10000 ? 3 : 5) + 2 +
                      slen + 1 + 1;
    for (Py_ssize_t i = 0; i < nreads; i++) {
        PyObject *r = PyList_GET_ITEM(reads, i);
        if (!PyBytes_CheckExact(r) || PyBytes_GET_SIZE(r) > 255)
            Py_RETURN_NONE;
        size += 2 + PyBytes_GET_SIZE(r);
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, prefix + size);
    if (out == NULL)
        return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    if (prefix) { /* the frame's length prefix: u32 big-endian (size < 5,000) */
        *p++ = 0;
        *p++ = 0;
        *p++ = (unsigned char)(size >> 8);
        *p++ = (unsigned char)size;
    }
    *p++ = 0x95;
    *p++ = 0x04;
    uint32_t id = (uint32_t)rid;
    if (id < 0x80)
        *p++ = (unsigned char)id;
    else if (id < 0x100) {
        *p++ = 0xcc;
        *p++ = (unsigned char)id;
    }
    else if (id < 0x10000) {
        *p++ = 0xcd;
        *p++ = (unsigned char)(id >> 8);
        *p++ = (unsigned char)id;
    }
    else {
        *p++ = 0xce;
        *p++ = (unsigned char)(id >> 24);
        *p++ = (unsigned char)(id >> 16);
        *p++ = (unsigned char)(id >> 8);
        *p++ = (unsigned char)id;
    }
    *p++ = 0xc4;
    *p++ = (unsigned char)slen;
    memcpy(p, PyBytes_AS_STRING(status), (size_t)slen);
    p += slen;
    *p++ = (unsigned char)(0x90 | nreads);
    for (Py_ssize_t i = 0; i < nreads; i++) {
        PyObject *r = PyList_GET_ITEM(reads, i);
        Py_ssize_t n = PyBytes_GET_SIZE(r);
        *p++ = 0xc4;
        *p++ = (unsigned char)n;
        memcpy(p, PyBytes_AS_STRING(r), (size_t)n);
        p += n;
    }
    *p++ = 0x90; /* no failures */
    assert(p == (unsigned char *)PyBytes_AS_STRING(out) + prefix + size);
    return out;
}

PyObject *
bb_result_body(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    return result(args, nargs, 0);
}

PyObject *
bb_result_frame(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    return result(args, nargs, 4);
}

