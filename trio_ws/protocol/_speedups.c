/* Optional compiled speedups for the RFC 6455 frame layer: masking (XOR a buffer with a
 * 4-byte key) and parsing the next frame out of a receive buffer.
 *
 * The pure-Python code in _frames.py stays the reference: this module only replaces it
 * when it was built, and the tests run both and compare them. The parser takes only the
 * well-formed path: any header the Python parser would refuse, and any frame over the size
 * limit, returns NotImplemented so that the Python parser raises the error, with the same
 * words. take_messages() takes the frames that are whole messages on their own and leaves
 * every other frame, error or not, to that path. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Releasing the GIL costs more than XOR-ing a small buffer: only large ones do. */
#define RELEASE_GIL_MIN_SIZE (64 * 1024)

static void
xor_mask(const unsigned char *in, unsigned char *out, Py_ssize_t n, const unsigned char *key)
{
    Py_ssize_t i = 0;
    uint64_t key8;
    unsigned char k8[8];
    for (int j = 0; j < 8; j++) k8[j] = key[j & 3];
    memcpy(&key8, k8, 8);
    for (; i + 8 <= n; i += 8) {
        uint64_t chunk;
        memcpy(&chunk, in + i, 8);
        chunk ^= key8;
        memcpy(out + i, &chunk, 8);
    }
    for (; i < n; i++) {
        out[i] = in[i] ^ key[i & 3];
    }
}

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
    if (data.len >= RELEASE_GIL_MIN_SIZE) {
        Py_BEGIN_ALLOW_THREADS
        xor_mask(in, out, data.len, key);
        Py_END_ALLOW_THREADS
    }
    else {
        xor_mask(in, out, data.len, key);
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return result;
}

/* parse_frame(buf, expect_masked, allow_rsv1, max_frame_size)
 *   -> (opcode, payload, fin, rsv1) and the frame removed from buf,
 *      None when buf does not hold a whole frame yet,
 *      NotImplemented when the Python parser must look (it raises the error).
 * The same checks, in the same order, as _parse_frame_python. */
static PyObject *
parse_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "parse_frame takes 4 arguments");
        return NULL;
    }
    PyObject *buf = args[0];
    if (!PyByteArray_CheckExact(buf)) {
        PyErr_SetString(PyExc_TypeError, "parse_frame needs a bytearray");
        return NULL;
    }
    int expect_masked = PyObject_IsTrue(args[1]);
    int allow_rsv1 = PyObject_IsTrue(args[2]);
    if (expect_masked < 0 || allow_rsv1 < 0) {
        return NULL;
    }
    Py_ssize_t max_frame_size = PyLong_AsSsize_t(args[3]);
    if (max_frame_size == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return NULL;
        }
        PyErr_Clear(); /* a limit beyond any length: no limit */
        max_frame_size = PY_SSIZE_T_MAX;
    }
    if (max_frame_size < 0) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    Py_ssize_t avail = PyByteArray_GET_SIZE(buf);
    if (avail < 2) {
        Py_RETURN_NONE;
    }
    const unsigned char *p = (const unsigned char *)PyByteArray_AS_STRING(buf);
    unsigned char b0 = p[0], b1 = p[1];
    int opcode = b0 & 0x0F;
    int fin = (b0 & 0x80) != 0;
    int rsv1 = (b0 & 0x40) != 0;
    int masked = (b1 & 0x80) != 0;
    if ((b0 & 0x30) || (rsv1 && !allow_rsv1)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    if (opcode >= 0x8) {
        if (opcode > 0xA || !fin || rsv1) {
            Py_RETURN_NOTIMPLEMENTED;
        }
    }
    else if (opcode > 0x2) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    if (masked != (expect_masked != 0)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    uint64_t length = b1 & 0x7F;
    Py_ssize_t pos = 2;
    if (length >= 126) {
        if (opcode >= 0x8) {
            Py_RETURN_NOTIMPLEMENTED;
        }
        if (length == 126) {
            if (avail < 4) {
                Py_RETURN_NONE;
            }
            length = ((uint64_t)p[2] << 8) | p[3];
            pos = 4;
        }
        else {
            if (avail < 10) {
                Py_RETURN_NONE;
            }
            length = 0;
            for (int j = 2; j < 10; j++) {
                length = (length << 8) | p[j];
            }
            if (length >> 63) {
                Py_RETURN_NOTIMPLEMENTED;
            }
            pos = 10;
        }
        if (length > (uint64_t)max_frame_size) {
            Py_RETURN_NOTIMPLEMENTED;
        }
    }
    else if (opcode < 0x8 && length > (uint64_t)max_frame_size) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    Py_ssize_t n = (Py_ssize_t)length;
    Py_ssize_t start = pos + (masked ? 4 : 0);
    if (avail - start < n) {
        Py_RETURN_NONE;
    }
    PyObject *payload;
    if (masked) {
        payload = PyBytes_FromStringAndSize(NULL, n);
        if (payload == NULL) {
            return NULL;
        }
        unsigned char key[4];
        memcpy(key, p + pos, 4);
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(payload);
        if (n >= RELEASE_GIL_MIN_SIZE) {
            /* The bytearray cannot change meanwhile: its owner is waiting on this call. */
            Py_BEGIN_ALLOW_THREADS
            xor_mask(p + start, out, n, key);
            Py_END_ALLOW_THREADS
        }
        else {
            xor_mask(p + start, out, n, key);
        }
    }
    else {
        payload = PyBytes_FromStringAndSize((const char *)p + start, n);
        if (payload == NULL) {
            return NULL;
        }
    }
    /* Deleting from the front of a bytearray only moves its start. */
    if (PySequence_DelSlice(buf, 0, start + n) < 0) {
        Py_DECREF(payload);
        return NULL;
    }
    PyObject *result = PyTuple_New(4);
    if (result == NULL) {
        Py_DECREF(payload);
        return NULL;
    }
    PyObject *op = PyLong_FromLong(opcode);
    if (op == NULL) {
        Py_DECREF(payload);
        Py_DECREF(result);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, op);
    PyTuple_SET_ITEM(result, 1, payload);
    PyTuple_SET_ITEM(result, 2, Py_NewRef(fin ? Py_True : Py_False));
    PyTuple_SET_ITEM(result, 3, Py_NewRef(rsv1 ? Py_True : Py_False));
    return result;
}

/* unmask_join(chunks, mask) -> bytes: the chunks (a list of buffers) joined, and unmasked
 * with the 4-byte key as one payload: a large frame received in pieces costs one copy. */
static PyObject *
unmask_join(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "unmask_join(chunks: list, mask: bytes)");
        return NULL;
    }
    PyObject *chunks = args[0];
    Py_buffer mask;
    if (PyObject_GetBuffer(args[1], &mask, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (mask.len != 4) {
        PyBuffer_Release(&mask);
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes");
        return NULL;
    }
    unsigned char key[4];
    memcpy(key, mask.buf, 4);
    PyBuffer_Release(&mask);
    Py_ssize_t count = PyList_GET_SIZE(chunks), total = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(PyList_GET_ITEM(chunks, i), &view, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
        total += view.len;
        PyBuffer_Release(&view);
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) {
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    Py_ssize_t done = 0;
    for (Py_ssize_t i = 0; i < count && done < total; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(PyList_GET_ITEM(chunks, i), &view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(result);
            return NULL;
        }
        Py_ssize_t n = view.len < total - done ? view.len : total - done;
        /* The key rotates with the position in the payload, not in the chunk. */
        unsigned char k[4];
        for (int j = 0; j < 4; j++) k[j] = key[(done + j) & 3];
        xor_mask((const unsigned char *)view.buf, out + done, n, k);
        done += n;
        PyBuffer_Release(&view);
    }
    if (done != total) { /* a chunk shrank meanwhile: nothing sensible to return */
        Py_DECREF(result);
        PyErr_SetString(PyExc_RuntimeError, "a chunk changed size during unmask_join");
        return NULL;
    }
    return result;
}

/* take_messages(buf, events, max_message_size, expect_masked) -> int
 *
 * The receive path's common case in one call: from the front of buf (the parser's
 * bytearray), every whole frame that is a complete message on its own (FIN set, no RSV
 * bit, TEXT or BINARY, masked as expect_masked says, at most max_message_size bytes) is
 * unmasked, its text decoded as strict UTF-8, and appended to events as str or bytes, and
 * the frames are removed from buf. It stops, taking nothing more, at the first frame that
 * is anything else: not all there yet, a control frame, a fragment, a header the parser
 * refuses, text that is not UTF-8; the frame-by-frame path (parse_frame and the protocol)
 * then handles it, and raises its errors, exactly as if this had not run. Returns how many
 * messages were taken.
 *
 * The caller calls it only between messages (no fragmented message in progress), when a
 * frame complete on its own is a message to the protocol with no other change of state. */
static PyObject *
take_messages(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyByteArray_CheckExact(args[0]) || !PyList_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "take_messages(buf: bytearray, events: list, max_message_size: int, "
                        "expect_masked: bool)");
        return NULL;
    }
    PyObject *buf = args[0], *events = args[1];
    Py_ssize_t max_size = PyLong_AsSsize_t(args[2]);
    if (max_size == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return NULL;
        }
        PyErr_Clear(); /* a limit beyond any length: no limit */
        max_size = PY_SSIZE_T_MAX;
    }
    int expect_masked = PyObject_IsTrue(args[3]);
    if (expect_masked < 0) {
        return NULL;
    }
    Py_ssize_t avail = PyByteArray_GET_SIZE(buf), pos = 0, taken = 0;
    unsigned char *p = (unsigned char *)PyByteArray_AS_STRING(buf);
    while (avail - pos >= 2) {
        unsigned char b0 = p[pos], b1 = p[pos + 1];
        /* FIN, no RSV bit, TEXT (0x81) or BINARY (0x82); masked as expected. */
        if ((b0 != 0x81 && b0 != 0x82) || ((b1 & 0x80) != 0) != (expect_masked != 0)) {
            break;
        }
        uint64_t length = b1 & 0x7F;
        Py_ssize_t head = 2;
        if (length == 126) {
            if (avail - pos < 4) {
                break;
            }
            length = ((uint64_t)p[pos + 2] << 8) | p[pos + 3];
            head = 4;
        }
        else if (length == 127) {
            if (avail - pos < 10) {
                break;
            }
            length = 0;
            for (int j = 2; j < 10; j++) {
                length = (length << 8) | p[pos + j];
            }
            head = 10;
        }
        /* Also refuses the 64-bit lengths with the top bit set (above any Py_ssize_t). */
        if (length > (uint64_t)max_size) {
            break;
        }
        Py_ssize_t n = (Py_ssize_t)length;
        Py_ssize_t start = pos + head + (expect_masked ? 4 : 0);
        if (avail - start < n) {
            break;
        }
        unsigned char *data = p + start;
        PyObject *message;
        if (b0 == 0x81) {
            /* Unmasked in place: these bytes leave the buffer once taken. */
            unsigned char key[4];
            if (expect_masked) {
                memcpy(key, p + pos + head, 4);
                xor_mask(data, data, n, key);
            }
            message = PyUnicode_DecodeUTF8((const char *)data, n, "strict");
            if (message == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                    return NULL;
                }
                PyErr_Clear();
                if (expect_masked) {
                    xor_mask(data, data, n, key); /* masked again, as it came */
                }
                break; /* the frame-by-frame path refuses it with 1007 */
            }
        }
        else if (expect_masked) {
            message = PyBytes_FromStringAndSize(NULL, n);
            if (message == NULL) {
                return NULL;
            }
            unsigned char *out = (unsigned char *)PyBytes_AS_STRING(message);
            if (n >= RELEASE_GIL_MIN_SIZE) {
                /* The bytearray cannot change meanwhile: its owner is waiting on this call. */
                Py_BEGIN_ALLOW_THREADS
                xor_mask(data, out, n, p + pos + head);
                Py_END_ALLOW_THREADS
            }
            else {
                xor_mask(data, out, n, p + pos + head);
            }
        }
        else {
            message = PyBytes_FromStringAndSize((const char *)data, n);
            if (message == NULL) {
                return NULL;
            }
        }
        int failed = PyList_Append(events, message);
        Py_DECREF(message);
        if (failed) {
            return NULL;
        }
        taken++;
        pos = start + n;
    }
    if (pos && PySequence_DelSlice(buf, 0, pos) < 0) {
        return NULL;
    }
    return PyLong_FromSsize_t(taken);
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", apply_mask, METH_VARARGS, "apply_mask(data, mask) -> bytes"},
    {"parse_frame", (PyCFunction)(void (*)(void))parse_frame, METH_FASTCALL,
     "parse_frame(buf, expect_masked, allow_rsv1, max_frame_size) -> tuple | None | NotImplemented"},
    {"unmask_join", (PyCFunction)(void (*)(void))unmask_join, METH_FASTCALL,
     "unmask_join(chunks, mask) -> bytes"},
    {"take_messages", (PyCFunction)(void (*)(void))take_messages, METH_FASTCALL,
     "take_messages(buf, events, max_message_size, expect_masked) -> int"},
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
