/* What the parts of protocol._native share: msgpack reading helpers and the
 * objects each part gives the module (protocol/_native.c puts them together). */
#ifndef BUSBRIDGE_NATIVE_H
#define BUSBRIDGE_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_BUS_NAME 64
#define MAX_TIMEOUT_MS 3600000u
#define RESULT_BASE 64
#define RESULT_PER_REQUEST 128
#define FAIL_NEXT 0x1u
#define M_RD 0x2u
#define MAX_MSGS 15 /* a fixarray's limit */

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
} Cur;

/* A msgpack unsigned integer in its fixint/uint8/16/32 forms; 0 if anything else. */
static inline int
read_uint(Cur *c, uint32_t *v)
{
    const unsigned char *p = c->p;
    if (p >= c->end)
        return 0;
    unsigned char b = *p;
    if (b < 0x80) {
        *v = b;
        c->p = p + 1;
        return 1;
    }
    if (b == 0xcc) {
        if (c->end - p < 2)
            return 0;
        *v = p[1];
        c->p = p + 2;
        return 1;
    }
    if (b == 0xcd) {
        if (c->end - p < 3)
            return 0;
        *v = (uint32_t)p[1] << 8 | p[2];
        c->p = p + 3;
        return 1;
    }
    if (b == 0xce) {
        if (c->end - p < 5)
            return 0;
        *v = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
        c->p = p + 5;
        return 1;
    }
    return 0;
}

/* A limit passed to a decoder's __init__: -1 with an exception set if it is not >= 0. */
static inline Py_ssize_t
as_limit(PyObject *o)
{
    Py_ssize_t v = PyLong_AsSsize_t(o);
    if (v < 0 && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "a limit must be >= 0");
    return v;
}

/* The arguments of a decoder's feed(buf, pos, out): 1 with ``view`` held (release it)
 * and ``pos`` inside it, or 0 with an exception set.  ``ready``: __init__ ran. */
static inline int
feed_args(PyObject *const *args, Py_ssize_t nargs, int ready, const char *what,
          Py_buffer *view, Py_ssize_t *pos)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "feed(buf, pos, out) takes 3 arguments");
        return 0;
    }
    if (!ready) {
        PyErr_Format(PyExc_RuntimeError, "%s not initialised", what);
        return 0;
    }
    if (!PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "out must be a list");
        return 0;
    }
    *pos = PyLong_AsSsize_t(args[1]);
    if (*pos == -1 && PyErr_Occurred())
        return 0;
    if (PyObject_GetBuffer(args[0], view, PyBUF_SIMPLE) < 0)
        return 0;
    if (*pos < 0 || *pos > view->len) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "pos outside the buffer");
        return 0;
    }
    return 1;
}

/* i2c_frames.c: the server's common I2C request frames, and its common RESULT. */
extern PyTypeObject bb_DecoderType;
PyObject *bb_result_body(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);
PyObject *bb_result_frame(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);

/* result_frames.c: the client's common RESULT frames. */
extern PyTypeObject bb_ResultDecoderType;

#endif
