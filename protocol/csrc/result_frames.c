/* protocol._native, the client's part: its common RESULT frames. */
#include "native.h"

/* ResultDecoder.feed(buf, pos, out) takes, from offset pos, every consecutive RESULT
 * frame of exactly the common shape that ClientConnection.receive's fast path and the
 * general path both accept the same way:
 *
 *   prefix (u32 BE, <= max_body, which is below every bound of the unpacker) +
 *   fixarray(5) [4, uint id (fixint/uint8/16/32), bin8 status,
 *                fixarray(0..15) of bin8 reads, fixarray(0) failures]
 *   with nothing after it, its id in flight, and fitting the shape recorded for the
 *   id in expect (shapes.misfit: one status byte per request, each read entry the
 *   bytes asked for when its status is OK, none otherwise), or no shape recorded.
 *
 * For each it appends Result(id, status, reads, []) to out, takes the id out of
 * in_flight and pops its expect entry, as Connection._on_result does.  It stops at
 * the first frame that is anything else (or not complete) and returns its offset:
 * the general path decodes it, and refuses a misfit or an unknown id itself. */

typedef struct {
    PyObject_HEAD
    PyObject *in_flight;   /* set[int], the connection's own */
    PyObject *expect;      /* dict[int, Shape], the connection's own */
    PyObject *result_type; /* a callable (id, status, reads, failures) -> Result */
    Py_ssize_t max_body;
} ResultDecoder;

typedef struct {
    uint32_t rid;
    const unsigned char *status;
    Py_ssize_t slen;
    int nreads;
    const unsigned char *reads[MAX_MSGS];
    Py_ssize_t rlens[MAX_MSGS];
} ResultFrame;

/* A msgpack bin8 at c; 1 and its bytes, else 0. */
static int
read_bin8(Cur *c, const unsigned char **data, Py_ssize_t *len)
{
    if (c->end - c->p < 2 || c->p[0] != 0xc4)
        return 0;
    Py_ssize_t n = c->p[1];
    if (c->end - c->p - 2 < n)
        return 0;
    *data = c->p + 2;
    *len = n;
    c->p += 2 + n;
    return 1;
}

static int
parse_result(const unsigned char *body, Py_ssize_t n, ResultFrame *f)
{
    Cur c = {body, body + n};
    if (n < 3 || body[0] != 0x95 || body[1] != 0x04)
        return 0;
    c.p = body + 2;
    if (!read_uint(&c, &f->rid) || f->rid == 0)
        return 0;
    if (!read_bin8(&c, &f->status, &f->slen))
        return 0;
    if (c.p >= c.end || (*c.p & 0xf0) != 0x90)
        return 0;
    f->nreads = *c.p++ & 0x0f;
    for (int j = 0; j < f->nreads; j++)
        if (!read_bin8(&c, &f->reads[j], &f->rlens[j]))
            return 0;
    if (c.p >= c.end || *c.p != 0x90) /* failures: the general path decodes them */
        return 0;
    c.p += 1;
    return c.p == c.end; /* trailing bytes: the general path refuses them */
}

/* A Python int as a long long; 0 (and no error set) if it is not one or too large. */
static int
as_ll(PyObject *o, long long *v)
{
    if (!PyLong_CheckExact(o))
        return 0;
    int overflow = 0;
    *v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (*v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* Whether the frame fits shape (a Shape tuple, or None: nothing recorded); 0 for a
 * misfit or anything unexpected (the general path then decides). */
static int
fits(const ResultFrame *f, PyObject *shape)
{
    if (shape == Py_None)
        return 1;
    if (!PyTuple_CheckExact(shape) || PyTuple_GET_SIZE(shape) != 2)
        return 0;
    long long n;
    PyObject *reads = PyTuple_GET_ITEM(shape, 1);
    if (!as_ll(PyTuple_GET_ITEM(shape, 0), &n) || n != f->slen || !PyTuple_CheckExact(reads) ||
        PyTuple_GET_SIZE(reads) != f->nreads)
        return 0;
    for (int j = 0; j < f->nreads; j++) {
        PyObject *e = PyTuple_GET_ITEM(reads, j);
        long long i, length;
        if (!PyTuple_CheckExact(e) || PyTuple_GET_SIZE(e) != 2 ||
            !as_ll(PyTuple_GET_ITEM(e, 0), &i) || !as_ll(PyTuple_GET_ITEM(e, 1), &length) ||
            i < 0 || i >= f->slen)
            return 0;
        if (f->rlens[j] != (f->status[i] == 0 ? length : 0))
            return 0;
    }
    return 1;
}

/* Result(rid, status, [reads...], []) of a checked frame; a new reference. */
static PyObject *
build_result(ResultDecoder *d, const ResultFrame *f, PyObject *rid)
{
    PyObject *status = NULL, *reads = NULL, *fails = NULL, *ev = NULL;
    status = PyBytes_FromStringAndSize((const char *)f->status, f->slen);
    if (status == NULL)
        goto done;
    reads = PyList_New(f->nreads);
    if (reads == NULL)
        goto done;
    for (int j = 0; j < f->nreads; j++) {
        PyObject *r = PyBytes_FromStringAndSize((const char *)f->reads[j], f->rlens[j]);
        if (r == NULL)
            goto done;
        PyList_SET_ITEM(reads, j, r);
    }
    fails = PyList_New(0);
    if (fails == NULL)
        goto done;
    PyObject *args[4] = {rid, status, reads, fails};
    ev = PyObject_Vectorcall(d->result_type, args, 4, NULL);
done:
    Py_XDECREF(status);
    Py_XDECREF(reads);
    Py_XDECREF(fails);
    return ev;
}

static int
ResultDecoder_init(ResultDecoder *self, PyObject *args, PyObject *kw)
{
    PyObject *in_flight, *expect, *result_type, *l0;
    static char *names[] = {"in_flight", "expect", "result_type", "max_body", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!OO:ResultDecoder", names, &PySet_Type,
                                     &in_flight, &PyDict_Type, &expect, &result_type, &l0))
        return -1;
    if (!PyCallable_Check(result_type)) {
        PyErr_SetString(PyExc_TypeError, "result_type must be callable");
        return -1;
    }
    Py_ssize_t mb = as_limit(l0);
    if (mb < 0)
        return -1;
    Py_INCREF(in_flight);
    Py_XSETREF(self->in_flight, in_flight);
    Py_INCREF(expect);
    Py_XSETREF(self->expect, expect);
    Py_INCREF(result_type);
    Py_XSETREF(self->result_type, result_type);
    self->max_body = mb;
    return 0;
}

static void
ResultDecoder_dealloc(ResultDecoder *self)
{
    Py_XDECREF(self->in_flight);
    Py_XDECREF(self->expect);
    Py_XDECREF(self->result_type);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
ResultDecoder_feed(ResultDecoder *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos;
    if (!feed_args(args, nargs, self->in_flight != NULL, "ResultDecoder", &view, &pos))
        return NULL;
    PyObject *out = args[2];
    const unsigned char *buf = (const unsigned char *)view.buf;
    Py_ssize_t size = view.len;
    ResultFrame f;
    while (size - pos >= 4) {
        const unsigned char *p = buf + pos;
        uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if ((uint64_t)n > (uint64_t)self->max_body || (Py_ssize_t)n > size - pos - 4)
            break; /* large (the general path's) or not all here */
        if (!parse_result(p + 4, (Py_ssize_t)n, &f))
            break;
        PyObject *rid = PyLong_FromUnsignedLong(f.rid);
        if (rid == NULL)
            goto fail;
        int known = PySet_Contains(self->in_flight, rid);
        if (known <= 0) {
            Py_DECREF(rid);
            if (known < 0)
                goto fail;
            break; /* not in flight: the general path refuses it */
        }
        PyObject *shape = PyDict_GetItemWithError(self->expect, rid); /* borrowed */
        if (shape == NULL && PyErr_Occurred()) {
            Py_DECREF(rid);
            goto fail;
        }
        int found = shape != NULL;
        if (found && !fits(&f, shape)) {
            Py_DECREF(rid);
            break; /* a misfit: the general path refuses it */
        }
        PyObject *ev = build_result(self, &f, rid);
        if (ev == NULL) {
            Py_DECREF(rid);
            goto fail;
        }
        int err = PyList_Append(out, ev);
        Py_DECREF(ev);
        if (err == 0)
            err = PySet_Discard(self->in_flight, rid) < 0 ? -1 : 0;
        if (err == 0 && found && PyDict_DelItem(self->expect, rid) < 0) {
            if (PyErr_ExceptionMatches(PyExc_KeyError))
                PyErr_Clear();
            else
                err = -1;
        }
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

static PyMethodDef ResultDecoder_methods[] = {
    {"feed", (PyCFunction)(void (*)(void))ResultDecoder_feed, METH_FASTCALL,
     "feed(buf, pos, out) -> the offset of the first frame not taken"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject bb_ResultDecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "protocol._native.ResultDecoder",
    .tp_basicsize = sizeof(ResultDecoder),
    .tp_dealloc = (destructor)ResultDecoder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The common RESULT frames of one client connection, decoded in C.",
    .tp_methods = ResultDecoder_methods,
    .tp_init = (initproc)ResultDecoder_init,
    .tp_new = PyType_GenericNew,
};
