/*
 * Avro single-object encoding of one flat record, in C: the producer's hot path.
 *
 * encode(plan, event) -> bytes | None
 *
 * ``plan`` is built by schemas.record_plan from a schema: (header, fields), each field a tuple
 * (name, kind, symbols, has_default). ``event`` must be a dict holding exactly the schema's fields
 * (a field with a default may be absent), each of its exact Avro type: str for string and enum,
 * int (not bool) within 64 bits for long, bool for boolean, None for null. Anything else gives
 * None, never an exception and never a guess: the caller then takes the reference path, which
 * decides and words the error. The bytes are exactly those of fastavro's writer
 * (tests/test_record_encoder.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { K_NULL = 0, K_BOOLEAN = 1, K_LONG = 2, K_STRING = 3, K_ENUM = 4, K_UNION = 5 };

typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
    char inline_data[512];
} Buffer;

static int reserve(Buffer *b, Py_ssize_t more) {
    if (b->size + more <= b->capacity) return 0;
    Py_ssize_t capacity = b->capacity * 2;
    while (capacity < b->size + more) capacity *= 2;
    char *grown = PyMem_Malloc((size_t)capacity);
    if (grown == NULL) return -1;
    memcpy(grown, b->data, (size_t)b->size);
    if (b->data != b->inline_data) PyMem_Free(b->data);
    b->data = grown;
    b->capacity = capacity;
    return 0;
}

static int put_long(Buffer *b, int64_t value) {
    if (reserve(b, 10) < 0) return -1;
    uint64_t z = ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
    while (z >= 0x80) {
        b->data[b->size++] = (char)((z & 0x7F) | 0x80);
        z >>= 7;
    }
    b->data[b->size++] = (char)z;
    return 0;
}

/* 1 written, 0 not a string this encoder writes, -1 out of memory. */
static int put_string(Buffer *b, PyObject *value) {
    if (!PyUnicode_CheckExact(value)) return 0;
    Py_ssize_t length;
    const char *utf8 = PyUnicode_AsUTF8AndSize(value, &length);
    if (utf8 == NULL) { /* lone surrogates: not encodable, the reference path words it */
        PyErr_Clear();
        return 0;
    }
    if (put_long(b, (int64_t)length) < 0 || reserve(b, length) < 0) return -1;
    memcpy(b->data + b->size, utf8, (size_t)length);
    b->size += length;
    return 1;
}

/* 1 written, 0 not an exact 64-bit int, -1 error. */
static int put_exact_long(Buffer *b, PyObject *value) {
    if (!PyLong_CheckExact(value)) return 0;
    int overflow;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow) return 0;
    if (number == -1 && PyErr_Occurred()) return -1;
    return put_long(b, (int64_t)number) < 0 ? -1 : 1;
}

/* Whether ``value`` is exactly of the plain Avro type ``kind`` (null, boolean, long, string). */
static int is_kind(PyObject *value, long kind) {
    switch (kind) {
    case K_NULL: return value == Py_None;
    case K_BOOLEAN: return PyBool_Check(value);
    case K_LONG: return PyLong_CheckExact(value);
    case K_STRING: return PyUnicode_CheckExact(value);
    default: return 0;
    }
}

/* 1 written, 0 does not fit, -1 error. */
static int put_value(Buffer *b, PyObject *value, long kind, PyObject *extra) {
    switch (kind) {
    case K_NULL:
        return value == Py_None;
    case K_BOOLEAN:
        if (!PyBool_Check(value)) return 0;
        if (reserve(b, 1) < 0) return -1;
        b->data[b->size++] = value == Py_True ? 1 : 0;
        return 1;
    case K_LONG:
        return put_exact_long(b, value);
    case K_STRING:
        return put_string(b, value);
    case K_ENUM: {
        if (!PyUnicode_CheckExact(value)) return 0;
        PyObject *index = PyDict_GetItemWithError(extra, value); /* borrowed */
        if (index == NULL) return PyErr_Occurred() ? -1 : 0;
        return put_long(b, (int64_t)PyLong_AsLongLong(index)) < 0 ? -1 : 1;
    }
    case K_UNION: { /* extra: the branch kinds in schema order; the first that fits is written */
        Py_ssize_t branches = PyTuple_GET_SIZE(extra);
        for (Py_ssize_t i = 0; i < branches; i++) {
            long branch = PyLong_AsLong(PyTuple_GET_ITEM(extra, i));
            if (!is_kind(value, branch)) continue;
            if (put_long(b, (int64_t)i) < 0) return -1;
            return put_value(b, value, branch, NULL);
        }
        return 0;
    }
    default:
        return 0;
    }
}

static PyObject *encode(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "encode(plan, event) takes two arguments");
        return NULL;
    }
    PyObject *plan = args[0], *event = args[1];
    if (!PyTuple_CheckExact(plan) || PyTuple_GET_SIZE(plan) != 2) {
        PyErr_SetString(PyExc_TypeError, "plan must be (header, fields)");
        return NULL;
    }
    if (!PyDict_Check(event)) Py_RETURN_NONE;
    PyObject *header = PyTuple_GET_ITEM(plan, 0), *fields = PyTuple_GET_ITEM(plan, 1);
    Buffer b = {.size = 0, .capacity = (Py_ssize_t)sizeof b.inline_data};
    b.data = b.inline_data;
    PyObject *result = NULL;
    Py_ssize_t present = 0;
    Py_ssize_t count = PyTuple_GET_SIZE(fields);
    if (reserve(&b, PyBytes_GET_SIZE(header)) < 0) goto done;
    memcpy(b.data, PyBytes_AS_STRING(header), (size_t)PyBytes_GET_SIZE(header));
    b.size = PyBytes_GET_SIZE(header);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *field = PyTuple_GET_ITEM(fields, i);
        PyObject *name = PyTuple_GET_ITEM(field, 0);
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(field, 1));
        PyObject *extra = PyTuple_GET_ITEM(field, 2);
        int has_default = PyTuple_GET_ITEM(field, 3) == Py_True;
        PyObject *value = PyDict_GetItemWithError(event, name); /* borrowed */
        if (value == NULL) {
            if (PyErr_Occurred()) goto done;
            if (!has_default) goto does_not_fit;
            value = Py_None; /* the only default this encoder is given: null, the union's first branch */
        } else {
            present++;
        }
        int written = put_value(&b, value, kind, extra);
        if (written < 0) goto done;
        if (written == 0) goto does_not_fit;
    }
    if (present != PyDict_GET_SIZE(event)) goto does_not_fit; /* a field the schema does not have */
    result = PyBytes_FromStringAndSize(b.data, b.size);
    goto done;
does_not_fit:
    result = Py_NewRef(Py_None);
done:
    if (b.data != b.inline_data) PyMem_Free(b.data);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", (PyCFunction)(void (*)(void))encode, METH_FASTCALL,
     "encode(plan, event) -> bytes | None: the single-object encoding of an event that fits exactly."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "schemas._record_encoder",
    .m_doc = "Avro single-object encoding of flat records in C (see schemas/record_plan.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__record_encoder(void) { return PyModule_Create(&module_def); }
