/* Optional compiled speedup for RFC 6455 masking: XOR a buffer with a 4-byte key.
 * The pure-Python path in _frames.py stays the reference; this module only replaces it
 * when it was built. Works eight bytes at a time, then the tail byte by byte. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *
apply_mask(PyObject *self, PyObject *args)
{
    Py_buffer data, mask;
    if (!PyArg_ParseTuple(args, "y*y*:apply_mask", &data, &mask)) {
        return NULL;
    }
    if (mask.len != 4) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&mask);
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes");
        return NULL;
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result == NULL) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&mask);
        return NULL;
    }
    const unsigned char *in = (const unsigned char *)data.buf;
    const unsigned char *key = (const unsigned char *)mask.buf;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    Py_ssize_t n = data.len, i = 0;
    uint64_t key8;
    unsigned char k8[8];
    for (int j = 0; j < 8; j++) k8[j] = key[j & 3];
    memcpy(&key8, k8, 8);
    Py_BEGIN_ALLOW_THREADS
    for (; i + 8 <= n; i += 8) {
        uint64_t chunk;
        memcpy(&chunk, in + i, 8);
        chunk ^= key8;
        memcpy(out + i, &chunk, 8);
    }
    for (; i < n; i++) {
        out[i] = in[i] ^ key[i & 3];
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", apply_mask, METH_VARARGS, "apply_mask(data, mask) -> bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "trio_ws.protocol._speedups", NULL, -1, speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&speedups_module);
}
