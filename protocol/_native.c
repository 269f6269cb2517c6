/* protocol._native: the common frames of both sides in C (see protocol/accel.py).
 *
 * Sans-I/O like the rest of protocol/: bytes in, objects out.  Optional: built only
 * by the compiled build (setup.py, BUSBRIDGE_COMPILE=1); without it protocol/accel.py
 * falls back to the pure path, which is also what runs for every frame this module
 * does not take.  The parts live in protocol/csrc/: i2c_frames.c (the server's common
 * I2C request frame and its RESULT) and result_frames.c (the client's common RESULT).
 */
#include "csrc/native.h"

static PyMethodDef module_methods[] = {
    {"result_body", (PyCFunction)(void (*)(void))bb_result_body, METH_FASTCALL,
     "bb_result_body(id, status, reads) -> the common RESULT's msgpack body, or None"},
    {"result_frame", (PyCFunction)(void (*)(void))bb_result_frame, METH_FASTCALL,
     "bb_result_frame(id, status, reads) -> the common RESULT's frame (prefix + body), or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "protocol._native",
    .m_doc = "The server's common I2C request frame and RESULT in C (see protocol/accel.py).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    if (PyType_Ready(&bb_DecoderType) < 0 || PyType_Ready(&bb_ResultDecoderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&bb_DecoderType);
    if (PyModule_AddObject(m, "Decoder", (PyObject *)&bb_DecoderType) < 0) {
        Py_DECREF(&bb_DecoderType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&bb_ResultDecoderType);
    if (PyModule_AddObject(m, "ResultDecoder", (PyObject *)&bb_ResultDecoderType) < 0) {
        Py_DECREF(&bb_ResultDecoderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

