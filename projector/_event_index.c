/*
 * The event window's membership index, in C: which bucket each recently applied event_id is in.
 *
 * Every event's path asks it once, so it must cost one cache miss, not the two or three of a dict
 * of strings: one open-addressing table of 8-byte slots, each the top 48 bits of the id's Python
 * hash (SipHash, keyed per process, so a producer cannot choose ids that collide) and the low 16
 * bits of its bucket number. Linear probing, backward-shift deletion, load kept under three quarters.
 *
 * The table only narrows the search. A hash match is a candidate that projector/event_window.py
 * confirms against the bucket's ids, so a collision never makes two events one; the table is never
 * stored, so the per-process hash never reaches the state.
 *
 * Index() -> an empty index
 *   claim(event_id, bucket) -> None | tuple[int, ...]
 *       no entry has event_id's hash: add (event_id, bucket) and return None; otherwise add
 *       nothing and return the low 16 bits of the buckets of those entries.
 *   find(event_id) -> tuple[int, ...]    the low 16 bits of the buckets of entries with its hash
 *   add(event_id, bucket) -> None       add an entry even if others have the same hash
 *   remove(event_id, bucket) -> bool    remove one entry of event_id's hash and that bucket
 *   len(index)                          entries held
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define INITIAL_SLOTS 1024
#define MAX_CANDIDATES 64

typedef struct {
    PyObject_HEAD
    uint64_t *slots; /* 0: empty */
    Py_ssize_t mask; /* slot count - 1 (a power of two) */
    Py_ssize_t count;
} Index;

static uint64_t entry_of(Py_hash_t hash, long long bucket) {
    uint64_t high = ((uint64_t)hash & 0xFFFFFFFFFFFF0000ULL) | 0x8000000000000000ULL;
    return high | ((uint64_t)bucket & 0xFFFFULL);
}

static Py_ssize_t home_of(uint64_t entry, Py_ssize_t mask) { return (Py_ssize_t)((entry >> 16) & (uint64_t)mask); }

static int grow(Index *self) {
    Py_ssize_t size = (self->mask + 1) * 2;
    uint64_t *slots = PyMem_Calloc((size_t)size, sizeof(uint64_t));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t mask = size - 1;
    for (Py_ssize_t i = 0; i <= self->mask; i++) {
        uint64_t entry = self->slots[i];
        if (entry == 0) continue;
        Py_ssize_t j = home_of(entry, mask);
        while (slots[j] != 0) j = (j + 1) & mask;
        slots[j] = entry;
    }
    PyMem_Free(self->slots);
    self->slots = slots;
    self->mask = mask;
    return 0;
}

static int insert(Index *self, uint64_t entry) {
    if ((self->count + 1) * 4 > (self->mask + 1) * 3 && grow(self) < 0) return -1;
    Py_ssize_t i = home_of(entry, self->mask);
    while (self->slots[i] != 0) i = (i + 1) & self->mask;
    self->slots[i] = entry;
    self->count++;
    return 0;
}

static int parse(PyObject *args, Py_hash_t *hash, long long *bucket) {
    PyObject *event_id;
    if (!PyArg_ParseTuple(args, "UL", &event_id, bucket)) return -1;
    *hash = PyObject_Hash(event_id);
    return *hash == -1 && PyErr_Occurred() ? -1 : 0;
}

/* The bucket low bits of the entries with ``entry``'s hash bits, into ``found``; how many. */
static int candidates_of(Index *self, uint64_t entry, long *found) {
    uint64_t high = entry >> 16;
    int candidates = 0;
    for (Py_ssize_t i = home_of(entry, self->mask); self->slots[i] != 0; i = (i + 1) & self->mask) {
        if (self->slots[i] >> 16 == high && candidates < MAX_CANDIDATES) {
            found[candidates++] = (long)(self->slots[i] & 0xFFFFULL);
        }
    }
    return candidates;
}

static PyObject *as_tuple(const long *found, int candidates) {
    PyObject *result = PyTuple_New(candidates);
    if (result == NULL) return NULL;
    for (int k = 0; k < candidates; k++) {
        PyObject *number = PyLong_FromLong(found[k]);
        if (number == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyTuple_SET_ITEM(result, k, number);
    }
    return result;
}

/* claim takes its arguments without building a tuple: it is called once for every event. */
static PyObject *claim(Index *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "claim(event_id: str, bucket: int)");
        return NULL;
    }
    Py_hash_t hash = PyObject_Hash(args[0]);
    if (hash == -1 && PyErr_Occurred()) return NULL;
    long long bucket = PyLong_AsLongLong(args[1]);
    if (bucket == -1 && PyErr_Occurred()) return NULL;
    uint64_t entry = entry_of(hash, bucket);
    long found[MAX_CANDIDATES];
    int candidates = candidates_of(self, entry, found);
    if (candidates == 0) {
        if (insert(self, entry) < 0) return NULL;
        Py_RETURN_NONE;
    }
    return as_tuple(found, candidates);
}

static PyObject *find(Index *self, PyObject *event_id) {
    if (!PyUnicode_Check(event_id)) {
        PyErr_Format(PyExc_TypeError, "event_id must be str, not %.80s", Py_TYPE(event_id)->tp_name);
        return NULL;
    }
    Py_hash_t hash = PyObject_Hash(event_id);
    if (hash == -1 && PyErr_Occurred()) return NULL;
    long found[MAX_CANDIDATES];
    int candidates = candidates_of(self, entry_of(hash, 0), found);
    return as_tuple(found, candidates);
}

static PyObject *add(Index *self, PyObject *args) {
    Py_hash_t hash;
    long long bucket;
    if (parse(args, &hash, &bucket) < 0) return NULL;
    if (insert(self, entry_of(hash, bucket)) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *remove_entry(Index *self, PyObject *args) {
    Py_hash_t hash;
    long long bucket;
    if (parse(args, &hash, &bucket) < 0) return NULL;
    uint64_t entry = entry_of(hash, bucket);
    Py_ssize_t mask = self->mask;
    Py_ssize_t i = home_of(entry, mask);
    while (self->slots[i] != entry) {
        if (self->slots[i] == 0) Py_RETURN_FALSE;
        i = (i + 1) & mask;
    }
    /* Backward-shift deletion: move later entries of the run into the hole when their home allows. */
    Py_ssize_t hole = i;
    for (Py_ssize_t j = (hole + 1) & mask; self->slots[j] != 0; j = (j + 1) & mask) {
        Py_ssize_t home = home_of(self->slots[j], mask);
        int reachable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
        if (reachable) {
            self->slots[hole] = self->slots[j];
            hole = j;
        }
    }
    self->slots[hole] = 0;
    self->count--;
    Py_RETURN_TRUE;
}

static Py_ssize_t length(Index *self) { return self->count; }

static PyObject *index_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (!_PyArg_NoPositional("Index", args) || !_PyArg_NoKeywords("Index", kwargs)) return NULL;
    Index *self = (Index *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->slots = PyMem_Calloc(INITIAL_SLOTS, sizeof(uint64_t));
    if (self->slots == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->mask = INITIAL_SLOTS - 1;
    self->count = 0;
    return (PyObject *)self;
}

static void index_dealloc(Index *self) {
    PyMem_Free(self->slots);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef index_methods[] = {
    {"claim", (PyCFunction)(void (*)(void))claim, METH_FASTCALL, "claim(event_id, bucket) -> None | tuple of bucket low bits"},
    {"find", (PyCFunction)find, METH_O, "find(event_id) -> tuple of bucket low bits"},
    {"add", (PyCFunction)add, METH_VARARGS, "add(event_id, bucket) -> None"},
    {"remove", (PyCFunction)remove_entry, METH_VARARGS, "remove(event_id, bucket) -> bool"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods index_sequence = {.sq_length = (lenfunc)length};

static PyTypeObject IndexType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "projector._event_index.Index",
    .tp_basicsize = sizeof(Index),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Which bucket each recently applied event_id is in (hash and bucket low bits).",
    .tp_new = index_new,
    .tp_dealloc = (destructor)index_dealloc,
    .tp_methods = index_methods,
    .tp_as_sequence = &index_sequence,
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_event_index", "The event window's membership index in C.", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__event_index(void) {
    if (PyType_Ready(&IndexType) < 0) return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    Py_INCREF(&IndexType);
    if (PyModule_AddObject(module, "Index", (PyObject *)&IndexType) < 0) {
        Py_DECREF(&IndexType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
