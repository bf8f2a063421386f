/*
 * The state digest's framing loop, in C: validation and snapshots hash every row of a store.
 *
 * feed(update, name, rows) -> None | (key, previous_key) | (key,)
 *
 * ``rows`` yields (key, value) tuples of bytes, keys strictly ascending. Each row is framed exactly
 * as projector.digest.digest_rows frames it (three 4-byte big-endian lengths: name, key, value;
 * then the three byte strings) and the frames are handed to ``update`` about a MiB at a time, the
 * rest at the end. A key that does not follow the one before it stops the loop and is returned with
 * that previous key; a row whose value does not end with the big-endian CRC-32 of its key and the
 * rest of the value (projector.encoding.seal) stops it and is returned alone; the caller raises its
 * own error. Anything but 2-tuples of bytes raises TypeError. The hashed bytes and the checks equal
 * the Python loop's (tests/test_digest_frames.py).
 *
 * seal(key, payload) -> bytes          payload followed by the big-endian CRC-32 of key + payload
 * unseal(key, value) -> bytes | None   value without its checksum, or None when the checksum fails
 *
 * The same bytes and answers as projector.encoding's Python seal and unseal; one call each, since
 * every stored row passes through one of them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define FLUSH_BYTES (1 << 20)

/* CRC-32 as zlib computes it (reflected polynomial 0xEDB88320), eight bytes a step. */
static uint32_t crc_table[8][256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) {
            uint32_t c = crc_table[t - 1][i];
            crc_table[t][i] = crc_table[0][c & 0xFF] ^ (c >> 8);
        }
    }
}

static uint32_t crc_update(uint32_t crc, const unsigned char *p, Py_ssize_t n) {
    crc = ~crc;
    while (n >= 8) {
        uint32_t a = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        uint32_t b = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        crc = crc_table[7][a & 0xFF] ^ crc_table[6][(a >> 8) & 0xFF] ^ crc_table[5][(a >> 16) & 0xFF] ^
              crc_table[4][a >> 24] ^ crc_table[3][b & 0xFF] ^ crc_table[2][(b >> 8) & 0xFF] ^
              crc_table[1][(b >> 16) & 0xFF] ^ crc_table[0][b >> 24];
        p += 8;
        n -= 8;
    }
    while (n-- > 0) crc = crc_table[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* 1 when ``value`` ends with the big-endian CRC-32 of ``key`` followed by the rest of ``value``. */
static int sealed(PyObject *key, PyObject *value) {
    Py_ssize_t size = PyBytes_GET_SIZE(value);
    if (size < 4) return 0;
    const unsigned char *v = (const unsigned char *)PyBytes_AS_STRING(value);
    uint32_t crc = crc_update(0, (const unsigned char *)PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key));
    crc = crc_update(crc, v, size - 4);
    const unsigned char *t = v + size - 4;
    return crc == ((uint32_t)t[0] << 24 | (uint32_t)t[1] << 16 | (uint32_t)t[2] << 8 | (uint32_t)t[3]);
}

typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Buffer;

static int reserve(Buffer *b, Py_ssize_t more) {
    if (b->size + more <= b->capacity) return 0;
    Py_ssize_t capacity = b->capacity ? b->capacity : FLUSH_BYTES * 2;
    while (capacity < b->size + more) capacity *= 2;
    char *grown = PyMem_Realloc(b->data, (size_t)capacity);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = grown;
    b->capacity = capacity;
    return 0;
}

static void put_length(char *at, Py_ssize_t length) {
    uint32_t n = (uint32_t)length;
    at[0] = (char)(n >> 24);
    at[1] = (char)(n >> 16);
    at[2] = (char)(n >> 8);
    at[3] = (char)n;
}

static int flush(Buffer *b, PyObject *update) {
    PyObject *chunk = PyBytes_FromStringAndSize(b->data, b->size);
    if (chunk == NULL) return -1;
    PyObject *done = PyObject_CallOneArg(update, chunk);
    Py_DECREF(chunk);
    if (done == NULL) return -1;
    Py_DECREF(done);
    b->size = 0;
    return 0;
}

/* <0, 0, >0 as bytewise a compares to b (a shorter prefix sorts first), as bytes' own order. */
static int compare(PyObject *a, PyObject *b) {
    Py_ssize_t la = PyBytes_GET_SIZE(a), lb = PyBytes_GET_SIZE(b);
    int c = memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), (size_t)(la < lb ? la : lb));
    if (c != 0) return c;
    return la < lb ? -1 : (la > lb ? 1 : 0);
}

static PyObject *feed(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *update, *rows;
    const char *name;
    Py_ssize_t name_size;
    if (!PyArg_ParseTuple(args, "Oy#O", &update, &name, &name_size, &rows)) return NULL;
    if (name_size > (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "table name longer than 2**32 - 1 bytes");
        return NULL;
    }
    PyObject *iterator = PyObject_GetIter(rows);
    if (iterator == NULL) return NULL;

    Buffer b = {NULL, 0, 0};
    PyObject *previous = NULL, *result = NULL, *row;
    while ((row = PyIter_Next(iterator)) != NULL) {
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(row, 0)) ||
            !PyBytes_Check(PyTuple_GET_ITEM(row, 1))) {
            PyErr_Format(PyExc_TypeError, "digest rows must be (bytes, bytes) tuples, not %R", row);
            Py_DECREF(row);
            goto done;
        }
        PyObject *key = PyTuple_GET_ITEM(row, 0), *value = PyTuple_GET_ITEM(row, 1);
        if (previous != NULL && compare(key, previous) <= 0) {
            result = PyTuple_Pack(2, key, previous);
            Py_DECREF(row);
            goto done;
        }
        if (!sealed(key, value)) {
            result = PyTuple_Pack(1, key);
            Py_DECREF(row);
            goto done;
        }
        Py_ssize_t key_size = PyBytes_GET_SIZE(key), value_size = PyBytes_GET_SIZE(value);
        if (key_size > (Py_ssize_t)UINT32_MAX || value_size > (Py_ssize_t)UINT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "digest row longer than 2**32 - 1 bytes");
            Py_DECREF(row);
            goto done;
        }
        if (reserve(&b, 12 + name_size + key_size + value_size) < 0) {
            Py_DECREF(row);
            goto done;
        }
        char *at = b.data + b.size;
        put_length(at, name_size);
        put_length(at + 4, key_size);
        put_length(at + 8, value_size);
        memcpy(at + 12, name, (size_t)name_size);
        memcpy(at + 12 + name_size, PyBytes_AS_STRING(key), (size_t)key_size);
        memcpy(at + 12 + name_size + key_size, PyBytes_AS_STRING(value), (size_t)value_size);
        b.size += 12 + name_size + key_size + value_size;
        Py_XSETREF(previous, Py_NewRef(key));
        Py_DECREF(row);
        if (b.size >= FLUSH_BYTES && flush(&b, update) < 0) goto done;
    }
    if (PyErr_Occurred()) goto done;
    if (b.size > 0 && flush(&b, update) < 0) goto done;
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(previous);
    Py_DECREF(iterator);
    PyMem_Free(b.data);
    return result;
}

static PyObject *seal(PyObject *module, PyObject *args) {
    (void)module;
    const char *key, *payload;
    Py_ssize_t key_size, payload_size;
    if (!PyArg_ParseTuple(args, "y#y#", &key, &key_size, &payload, &payload_size)) return NULL;
    PyObject *result = PyBytes_FromStringAndSize(NULL, payload_size + 4);
    if (result == NULL) return NULL;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    memcpy(out, payload, (size_t)payload_size);
    uint32_t crc = crc_update(crc_update(0, (const unsigned char *)key, key_size), (const unsigned char *)payload,
                              payload_size);
    out[payload_size] = (unsigned char)(crc >> 24);
    out[payload_size + 1] = (unsigned char)(crc >> 16);
    out[payload_size + 2] = (unsigned char)(crc >> 8);
    out[payload_size + 3] = (unsigned char)crc;
    return result;
}

static PyObject *unseal(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *key, *value;
    if (!PyArg_ParseTuple(args, "SS", &key, &value)) return NULL;
    if (!sealed(key, value)) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value) - 4);
}

static PyMethodDef methods[] = {
    {"seal", seal, METH_VARARGS, "seal(key, payload) -> payload + CRC-32 of key + payload, big-endian"},
    {"unseal", unseal, METH_VARARGS, "unseal(key, value) -> value without its checksum, or None if it fails"},
    {"feed", feed, METH_VARARGS, "feed(update, name, rows) -> None | (key, previous_key) | (key,)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_digest_frames", "The state digest's framing loop in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__digest_frames(void) {
    crc_init();
    return PyModule_Create(&module_def);
}
