/*
 * The event window of projector/event_window.py in C: the same answers and the same stored bytes as
 * its pure-Python implementation, for a fraction of the cost on the hot path.
 *
 * Every event passes through claim, so it must cost one hash, one probe and, for a new id, a copy of
 * its bytes: no Python object is kept per id. The window holds
 *   - an open-addressing table of 8-byte slots, each the top 48 bits of the hash of the id's UTF-8
 *     bytes (SipHash, keyed per process, so a producer cannot choose ids that collide) and the low 16
 *     bits of its bucket number; a match is only a candidate, confirmed against the bucket's ids, so
 *     a collision never makes two events one, and the per-process hash never reaches the state;
 *   - the live buckets in a ring of RING_SLOTS (more than the WINDOW_BUCKETS + 1 ever live), each
 *     already laid out as its stored row: places (2 bytes), lengths (4 bytes) and the ids' bytes.
 *
 * Window()
 *   claim(event_id, offset) -> int      the offset event_id was applied at within the window, or -1;
 *                                       when -1, event_id is kept as applied at offset unless
 *                                       release undoes it (offsets only go forward)
 *   applied_at(event_id, offset) -> int  the same question without holding
 *   release(event_id, offset)           undo the claim just made (the event did not apply)
 *   changed_rows() -> dict[bytes, bytes | None]   the rows changed since the last call, sealed
 *   rows() -> list[tuple[bytes, bytes]]           every row, sealed, in key order
 *   load_bucket(number, payload)        add a stored bucket (ValueError naming what is wrong)
 *   len(window)                         ids held, claims included
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BUCKET_SHIFT 8
#define BUCKET_OFFSETS (1 << BUCKET_SHIFT)
#define WINDOW_BUCKETS 2048
#define RING_SLOTS 4096 /* a power of two above WINDOW_BUCKETS + 1 */
#define INITIAL_SLOTS 1024
#define MAX_CANDIDATES 64
#define LOW_BITS 0xFFFFLL
#define NO_OFFSET (-1LL)
#define BUCKET_FORMAT 1

typedef struct {
    long long number;
    int count;
    uint16_t places[BUCKET_OFFSETS];
    uint32_t lengths[BUCKET_OFFSETS];
    char *data;
    size_t size;
    size_t capacity;
} Bucket;

typedef struct {
    PyObject_HEAD
    uint64_t *slots; /* 0: empty */
    Py_ssize_t mask;
    Py_ssize_t count;
    Bucket **ring;
    Bucket *hot;
    long long newest;
    long long oldest; /* no live bucket is older; LLONG_MAX while there is none */
    long long last_offset;
    long long *changed;
    Py_ssize_t changed_count;
    Py_ssize_t changed_capacity;
} Window;

static PyObject *seal_function = NULL;        /* projector.encoding.seal */
static PyObject *invariant_violation = NULL;  /* rewind.ground.errors.InvariantViolation */

static int import_helpers(void) {
    if (seal_function != NULL) return 0;
    PyObject *encoding = PyImport_ImportModule("projector.encoding");
    if (encoding == NULL) return -1;
    PyObject *seal = PyObject_GetAttrString(encoding, "seal");
    Py_DECREF(encoding);
    if (seal == NULL) return -1;
    PyObject *errors = PyImport_ImportModule("rewind.ground.errors");
    if (errors == NULL) {
        Py_DECREF(seal);
        return -1;
    }
    invariant_violation = PyObject_GetAttrString(errors, "InvariantViolation");
    Py_DECREF(errors);
    if (invariant_violation == NULL) {
        Py_DECREF(seal);
        return -1;
    }
    seal_function = seal;
    return 0;
}

/* The id's UTF-8 bytes (surrogates passed through, as the pure implementation encodes them). */
typedef struct {
    const char *bytes;
    Py_ssize_t size;
    PyObject *owned;
} IdBytes;

static int id_bytes(PyObject *event_id, IdBytes *out) {
    if (!PyUnicode_Check(event_id)) {
        PyErr_Format(PyExc_TypeError, "event_id must be str, not %.80s", Py_TYPE(event_id)->tp_name);
        return -1;
    }
    out->owned = NULL;
    out->bytes = PyUnicode_AsUTF8AndSize(event_id, &out->size);
    if (out->bytes != NULL) return 0;
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return -1;
    PyErr_Clear();
    out->owned = PyUnicode_AsEncodedString(event_id, "utf-8", "surrogatepass");
    if (out->owned == NULL) return -1;
    out->bytes = PyBytes_AS_STRING(out->owned);
    out->size = PyBytes_GET_SIZE(out->owned);
    return 0;
}

static uint64_t entry_of(const char *bytes, Py_ssize_t size, long long bucket) {
    uint64_t hash = (uint64_t)_Py_HashBytes(bytes, size);
    return (hash & 0xFFFFFFFFFFFF0000ULL) | 0x8000000000000000ULL | ((uint64_t)bucket & 0xFFFFULL);
}

static Py_ssize_t home_of(uint64_t entry, Py_ssize_t mask) { return (Py_ssize_t)((entry >> 16) & (uint64_t)mask); }

/* The hash table */

static int grow(Window *self) {
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

static int insert(Window *self, uint64_t entry) {
    if ((self->count + 1) * 4 > (self->mask + 1) * 3 && grow(self) < 0) return -1;
    Py_ssize_t i = home_of(entry, self->mask);
    while (self->slots[i] != 0) i = (i + 1) & self->mask;
    self->slots[i] = entry;
    self->count++;
    return 0;
}

static void remove_entry(Window *self, uint64_t entry) {
    Py_ssize_t mask = self->mask;
    Py_ssize_t i = home_of(entry, mask);
    while (self->slots[i] != entry) {
        if (self->slots[i] == 0) return;
        i = (i + 1) & mask;
    }
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
}

static int candidates_of(Window *self, uint64_t entry, long long *found) {
    uint64_t high = entry >> 16;
    int candidates = 0;
    for (Py_ssize_t i = home_of(entry, self->mask); self->slots[i] != 0; i = (i + 1) & self->mask) {
        if (self->slots[i] >> 16 == high && candidates < MAX_CANDIDATES) {
            found[candidates++] = (long long)(self->slots[i] & 0xFFFFULL);
        }
    }
    return candidates;
}

/* The buckets */

static Bucket *bucket_at(Window *self, long long number) {
    if (number < 0) return NULL;
    Bucket *bucket = self->ring[number & (RING_SLOTS - 1)];
    return bucket != NULL && bucket->number == number ? bucket : NULL;
}

static int mark_changed(Window *self, long long number) {
    if (self->changed_count == self->changed_capacity) {
        Py_ssize_t capacity = self->changed_capacity ? self->changed_capacity * 2 : 16;
        long long *changed = PyMem_Realloc(self->changed, (size_t)capacity * sizeof(long long));
        if (changed == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->changed = changed;
        self->changed_capacity = capacity;
    }
    self->changed[self->changed_count++] = number;
    return 0;
}

static Bucket *new_bucket(Window *self, long long number) {
    if (number < 0 || self->ring[number & (RING_SLOTS - 1)] != NULL) {
        PyErr_Format(PyExc_ValueError, "bucket %lld is more than %d buckets from another one held", number,
                     RING_SLOTS);
        return NULL;
    }
    Bucket *bucket = PyMem_Calloc(1, sizeof(Bucket));
    if (bucket == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    bucket->number = number;
    self->ring[number & (RING_SLOTS - 1)] = bucket;
    if (number < self->oldest) self->oldest = number;
    if (number > self->newest) self->newest = number;
    return bucket;
}

static void free_bucket(Bucket *bucket) {
    PyMem_Free(bucket->data);
    PyMem_Free(bucket);
}

static int append_id(Bucket *bucket, const char *bytes, Py_ssize_t size, long long place) {
    if (bucket->count >= BUCKET_OFFSETS || size > (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "more ids than offsets in a bucket, or an id over 4 GiB");
        return -1;
    }
    if (bucket->size + (size_t)size > bucket->capacity) {
        size_t capacity = bucket->capacity ? bucket->capacity : 1024;
        while (capacity < bucket->size + (size_t)size) capacity *= 2;
        char *data = PyMem_Realloc(bucket->data, capacity);
        if (data == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        bucket->data = data;
        bucket->capacity = capacity;
    }
    memcpy(bucket->data + bucket->size, bytes, (size_t)size);
    bucket->size += (size_t)size;
    bucket->places[bucket->count] = (uint16_t)place;
    bucket->lengths[bucket->count] = (uint32_t)size;
    bucket->count++;
    return 0;
}

/* The offset of the id in ``bucket``, or NO_OFFSET (the first occurrence, as list.index finds it). */
static long long offset_in(const Bucket *bucket, const char *bytes, Py_ssize_t size) {
    size_t at = 0;
    for (int k = 0; k < bucket->count; k++) {
        if (bucket->lengths[k] == (uint32_t)size && memcmp(bucket->data + at, bytes, (size_t)size) == 0) {
            return (bucket->number << BUCKET_SHIFT) + bucket->places[k];
        }
        at += bucket->lengths[k];
    }
    return NO_OFFSET;
}

static void evict(Window *self, Bucket *bucket) {
    uint64_t entries[BUCKET_OFFSETS];
    size_t at = 0;
    for (int k = 0; k < bucket->count; k++) {
        entries[k] = entry_of(bucket->data + at, bucket->lengths[k], bucket->number);
        __builtin_prefetch(&self->slots[home_of(entries[k], self->mask)], 1);
        at += bucket->lengths[k];
    }
    for (int k = 0; k < bucket->count; k++) remove_entry(self, entries[k]);
    self->ring[bucket->number & (RING_SLOTS - 1)] = NULL;
    if (self->hot == bucket) self->hot = NULL;
    free_bucket(bucket);
}

/* Evict every bucket older than ``limit``, marking each changed. */
static int evict_before(Window *self, long long limit) {
    if (self->oldest >= limit) return 0;
    if (limit - self->oldest >= RING_SLOTS) {
        for (Py_ssize_t slot = 0; slot < RING_SLOTS; slot++) {
            Bucket *bucket = self->ring[slot];
            if (bucket == NULL || bucket->number >= limit) continue;
            if (mark_changed(self, bucket->number) < 0) return -1;
            evict(self, bucket);
        }
    } else {
        for (long long number = self->oldest; number < limit; number++) {
            Bucket *bucket = bucket_at(self, number);
            if (bucket == NULL) continue;
            if (mark_changed(self, number) < 0) return -1;
            evict(self, bucket);
        }
    }
    self->oldest = limit;
    return 0;
}

static long long confirm(Window *self, const char *bytes, Py_ssize_t size, const long long *candidates, int count,
                         long long offset) {
    long long newest = self->newest;
    long long oldest_live = (offset >> BUCKET_SHIFT) - WINDOW_BUCKETS;
    for (int k = 0; k < count; k++) {
        long long number = newest - ((newest - candidates[k]) & LOW_BITS);
        Bucket *bucket = bucket_at(self, number);
        if (bucket != NULL && number >= oldest_live) {
            long long found = offset_in(bucket, bytes, size);
            if (found != NO_OFFSET) return found;
        }
    }
    return NO_OFFSET;
}

static int parse_id_offset(PyObject *const *args, Py_ssize_t nargs, const char *name, IdBytes *id,
                           long long *offset) {
    if (nargs != 2 || !PyLong_Check(args[1])) {
        PyErr_Format(PyExc_TypeError, "%s(event_id: str, offset: int)", name);
        return -1;
    }
    *offset = PyLong_AsLongLong(args[1]);
    if (*offset == -1 && PyErr_Occurred()) return -1;
    return id_bytes(args[0], id);
}

/* The methods */

/* Raise rewind.ground.errors.InvariantViolation(what, fix); returns NULL. */
static void *invariant_broken(PyObject *what, const char *fix) {
    if (what == NULL || import_helpers() < 0) {
        Py_XDECREF(what);
        return NULL;
    }
    PyObject *error = PyObject_CallFunction(invariant_violation, "Os", what, fix);
    Py_DECREF(what);
    if (error != NULL) {
        PyErr_SetObject(invariant_violation, error);
        Py_DECREF(error);
    }
    return NULL;
}

/* Move the window's end to bucket ``number`` if it is newer, evicting what falls out. */
static int advance(Window *self, long long number) {
    if (number <= self->newest) return 0;
    self->newest = number;
    return evict_before(self, number - WINDOW_BUCKETS);
}

/* Make ``offset``'s bucket the one written to: evict what fell out of the window, mark it changed. */
static Bucket *enter(Window *self, long long offset) {
    if (offset <= self->last_offset) {
        return invariant_broken(
            PyUnicode_FromFormat("event window: offset %lld claimed after %lld", offset, self->last_offset),
            "offsets only move forward: this is a bug; report it with this message");
    }
    long long number = offset >> BUCKET_SHIFT;
    if (advance(self, number) < 0) return NULL;
    Bucket *bucket = bucket_at(self, number);
    if (bucket == NULL && (bucket = new_bucket(self, number)) == NULL) return NULL;
    if (mark_changed(self, number) < 0) return NULL;
    self->hot = bucket;
    return bucket;
}

/* Take the last id out of ``bucket``; a bucket left empty is dropped (it was never stored: every
 * stored bucket holds ids at offsets before any claim still open). */
static void drop_last(Window *self, Bucket *bucket) {
    bucket->count--;
    bucket->size -= bucket->lengths[bucket->count];
    if (bucket->count > 0) return;
    Py_ssize_t kept = 0;
    for (Py_ssize_t k = 0; k < self->changed_count; k++) {
        if (self->changed[k] != bucket->number) self->changed[kept++] = self->changed[k];
    }
    self->changed_count = kept;
    self->ring[bucket->number & (RING_SLOTS - 1)] = NULL;
    if (self->hot == bucket) self->hot = NULL;
    free_bucket(bucket);
}

/* Keep the new id ``id`` (hashed as ``entry``) as applied at ``offset``. */
static int hold(Window *self, const IdBytes *id, uint64_t entry, long long offset) {
    Bucket *hot = self->hot;
    if (hot == NULL || offset >> BUCKET_SHIFT != hot->number || offset <= self->last_offset) hot = enter(self, offset);
    if (hot == NULL || append_id(hot, id->bytes, id->size, offset & (BUCKET_OFFSETS - 1)) < 0) return -1;
    if (insert(self, entry) < 0) {
        drop_last(self, hot);
        return -1;
    }
    self->last_offset = offset;
    return 0;
}

static PyObject *claim(Window *self, PyObject *const *args, Py_ssize_t nargs) {
    IdBytes id;
    long long offset;
    if (parse_id_offset(args, nargs, "claim", &id, &offset) < 0) return NULL;
    long long number = offset >> BUCKET_SHIFT;
    uint64_t entry = entry_of(id.bytes, id.size, number);
    long long found[MAX_CANDIDATES];
    int candidates = candidates_of(self, entry, found);
    long long earlier = candidates ? confirm(self, id.bytes, id.size, found, candidates, offset) : NO_OFFSET;
    /* a repeat moves the window's end too */
    int failed = earlier == NO_OFFSET ? hold(self, &id, entry, offset) : advance(self, number);
    Py_XDECREF(id.owned);
    return failed ? NULL : PyLong_FromLongLong(earlier);
}

static PyObject *applied_at(Window *self, PyObject *const *args, Py_ssize_t nargs) {
    IdBytes id;
    long long offset;
    if (parse_id_offset(args, nargs, "applied_at", &id, &offset) < 0) return NULL;
    long long found[MAX_CANDIDATES];
    int candidates = candidates_of(self, entry_of(id.bytes, id.size, 0), found);
    long long earlier = confirm(self, id.bytes, id.size, found, candidates, offset);
    Py_XDECREF(id.owned);
    return PyLong_FromLongLong(earlier);
}

static PyObject *release(Window *self, PyObject *const *args, Py_ssize_t nargs) {
    IdBytes id;
    long long offset;
    if (parse_id_offset(args, nargs, "release", &id, &offset) < 0) return NULL;
    long long number = offset >> BUCKET_SHIFT;
    Bucket *bucket = bucket_at(self, number);
    int last = bucket != NULL && bucket->count > 0 && offset == self->last_offset &&
               bucket->places[bucket->count - 1] == (uint16_t)(offset & (BUCKET_OFFSETS - 1)) &&
               bucket->lengths[bucket->count - 1] == (uint32_t)id.size &&
               memcmp(bucket->data + bucket->size - (size_t)id.size, id.bytes, (size_t)id.size) == 0;
    if (last) {
        remove_entry(self, entry_of(id.bytes, id.size, number));
        drop_last(self, bucket);
    }
    Py_XDECREF(id.owned);
    if (!last) {
        return invariant_broken(
            PyUnicode_FromFormat("event window: release of %R at offset %lld, which is not the last claim",
                                 args[0], offset),
            "only the claim just made can be released: this is a bug; report it with this message");
    }
    Py_RETURN_NONE;
}

static void put_le(char *to, uint64_t value, int width) {
    for (int k = 0; k < width; k++) to[k] = (char)((value >> (8 * k)) & 0xFF);
}

static PyObject *key_of(long long number) {
    char key[8];
    for (int k = 0; k < 8; k++) key[k] = (char)(((uint64_t)number >> (8 * (7 - k))) & 0xFF);
    return PyBytes_FromStringAndSize(key, 8);
}

/* The bucket's row: the format byte, the count (4 bytes), the places (2 bytes each), the lengths (4
 * bytes each), the ids' bytes; little-endian, as the pure implementation's _Bucket.encode. */
static PyObject *sealed_row(PyObject *key, const Bucket *bucket) {
    Py_ssize_t header = 5 + 6 * (Py_ssize_t)bucket->count;
    PyObject *payload = PyBytes_FromStringAndSize(NULL, header + (Py_ssize_t)bucket->size);
    if (payload == NULL) return NULL;
    char *out = PyBytes_AS_STRING(payload);
    out[0] = BUCKET_FORMAT;
    put_le(out + 1, (uint64_t)bucket->count, 4);
    for (int k = 0; k < bucket->count; k++) {
        put_le(out + 5 + 2 * k, bucket->places[k], 2);
        put_le(out + 5 + 2 * bucket->count + 4 * k, bucket->lengths[k], 4);
    }
    if (bucket->size) memcpy(out + header, bucket->data, bucket->size);
    PyObject *sealed = PyObject_CallFunctionObjArgs(seal_function, key, payload, NULL);
    Py_DECREF(payload);
    return sealed;
}

static int by_number(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static PyObject *changed_rows(Window *self, PyObject *Py_UNUSED(ignored)) {
    if (import_helpers() < 0) return NULL;
    PyObject *rows = PyDict_New();
    if (rows == NULL) return NULL;
    qsort(self->changed, (size_t)self->changed_count, sizeof(long long), by_number);
    for (Py_ssize_t k = 0; k < self->changed_count; k++) {
        long long number = self->changed[k];
        if (k > 0 && number == self->changed[k - 1]) continue;
        PyObject *key = key_of(number);
        if (key == NULL) goto failed;
        Bucket *bucket = bucket_at(self, number);
        PyObject *value = bucket == NULL ? Py_NewRef(Py_None) : sealed_row(key, bucket);
        int put = value == NULL ? -1 : PyDict_SetItem(rows, key, value);
        Py_DECREF(key);
        Py_XDECREF(value);
        if (put < 0) goto failed;
    }
    self->changed_count = 0;
    self->hot = NULL;
    return rows;
failed:
    Py_DECREF(rows);
    return NULL;
}

static PyObject *all_rows(Window *self, PyObject *Py_UNUSED(ignored)) {
    if (import_helpers() < 0) return NULL;
    long long numbers[RING_SLOTS];
    Py_ssize_t held = 0;
    for (Py_ssize_t slot = 0; slot < RING_SLOTS; slot++) {
        if (self->ring[slot] != NULL) numbers[held++] = self->ring[slot]->number;
    }
    qsort(numbers, (size_t)held, sizeof(long long), by_number);
    PyObject *rows = PyList_New(held);
    if (rows == NULL) return NULL;
    for (Py_ssize_t k = 0; k < held; k++) {
        PyObject *key = key_of(numbers[k]);
        PyObject *value = key == NULL ? NULL : sealed_row(key, bucket_at(self, numbers[k]));
        PyObject *row = value == NULL ? NULL : PyTuple_Pack(2, key, value);
        Py_XDECREF(key);
        Py_XDECREF(value);
        if (row == NULL) {
            Py_DECREF(rows);
            return NULL;
        }
        PyList_SET_ITEM(rows, k, row);
    }
    return rows;
}

static uint64_t get_le(const unsigned char *from, int width) {
    uint64_t value = 0;
    for (int k = 0; k < width; k++) value |= (uint64_t)from[k] << (8 * k);
    return value;
}

static PyObject *refuse(const char *why) {
    PyErr_SetString(PyExc_ValueError, why);
    return NULL;
}

static int all_ascii(const unsigned char *bytes, size_t size) {
    for (size_t k = 0; k < size; k++) {
        if (bytes[k] & 0x80) return 0;
    }
    return 1;
}

static PyObject *load_bucket(Window *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyLong_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "load_bucket(number: int, payload: bytes)");
        return NULL;
    }
    long long number = PyLong_AsLongLong(args[0]);
    if (number == -1 && PyErr_Occurred()) return NULL;
    const unsigned char *payload = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[1]);
    if (size < 5 || payload[0] != BUCKET_FORMAT) return refuse("no format byte and count");
    uint64_t count = get_le(payload + 1, 4);
    if (count == 0 || (uint64_t)size < 5 + 6 * count) {
        PyErr_Format(PyExc_ValueError, "%llu ids in %zd bytes", (unsigned long long)count, size);
        return NULL;
    }
    Py_ssize_t header = 5 + 6 * (Py_ssize_t)count;
    uint64_t total = 0;
    for (uint64_t k = 0; k < count; k++) total += get_le(payload + 5 + 2 * count + 4 * k, 4);
    if (total != (uint64_t)(size - header)) return refuse("the id lengths do not add up to the bytes that follow");
    for (uint64_t k = 0; k < count; k++) {
        uint64_t place = get_le(payload + 5 + 2 * k, 2);
        if (place >= BUCKET_OFFSETS || (k > 0 && place <= get_le(payload + 5 + 2 * (k - 1), 2))) {
            return refuse("offsets not ascending inside the bucket");
        }
    }
    if (!all_ascii(payload + header, (size_t)(size - header))) {
        size_t at = (size_t)header;
        for (uint64_t k = 0; k < count; k++) {
            uint64_t length = get_le(payload + 5 + 2 * count + 4 * k, 4);
            PyObject *text = PyUnicode_DecodeUTF8((const char *)payload + at, (Py_ssize_t)length, "surrogatepass");
            if (text == NULL) {
                PyErr_Clear();
                return refuse("an id is not UTF-8");
            }
            Py_DECREF(text);
            at += length;
        }
    }
    Bucket *bucket = new_bucket(self, number);
    if (bucket == NULL) return NULL;
    size_t at = (size_t)header;
    for (uint64_t k = 0; k < count; k++) {
        uint64_t length = get_le(payload + 5 + 2 * count + 4 * k, 4);
        const char *id = (const char *)payload + at;
        if (append_id(bucket, id, (Py_ssize_t)length, (long long)get_le(payload + 5 + 2 * k, 2)) < 0 ||
            insert(self, entry_of(id, (Py_ssize_t)length, number)) < 0) {
            return NULL;
        }
        at += length;
    }
    long long last = (number << BUCKET_SHIFT) + bucket->places[bucket->count - 1];
    if (last > self->last_offset) self->last_offset = last;
    Py_RETURN_NONE;
}

static Py_ssize_t length(Window *self) { return self->count; }

static PyObject *window_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (!_PyArg_NoPositional("Window", args) || !_PyArg_NoKeywords("Window", kwargs)) return NULL;
    Window *self = (Window *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->slots = PyMem_Calloc(INITIAL_SLOTS, sizeof(uint64_t));
    self->ring = PyMem_Calloc(RING_SLOTS, sizeof(Bucket *));
    if (self->slots == NULL || self->ring == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->mask = INITIAL_SLOTS - 1;
    self->newest = -1;
    self->oldest = LLONG_MAX;
    self->last_offset = NO_OFFSET;
    return (PyObject *)self;
}

static void window_dealloc(Window *self) {
    if (self->ring != NULL) {
        for (Py_ssize_t slot = 0; slot < RING_SLOTS; slot++) {
            if (self->ring[slot] != NULL) free_bucket(self->ring[slot]);
        }
    }
    PyMem_Free(self->ring);
    PyMem_Free(self->slots);
    PyMem_Free(self->changed);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef window_methods[] = {
    {"claim", (PyCFunction)(void (*)(void))claim, METH_FASTCALL, "claim(event_id, offset) -> int"},
    {"applied_at", (PyCFunction)(void (*)(void))applied_at, METH_FASTCALL, "applied_at(event_id, offset) -> int"},
    {"release", (PyCFunction)(void (*)(void))release, METH_FASTCALL, "release(event_id, offset) -> None"},
    {"changed_rows", (PyCFunction)changed_rows, METH_NOARGS, "changed_rows() -> dict of sealed rows"},
    {"rows", (PyCFunction)all_rows, METH_NOARGS, "rows() -> list of (key, sealed row)"},
    {"load_bucket", (PyCFunction)(void (*)(void))load_bucket, METH_FASTCALL, "load_bucket(number, payload)"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods window_sequence = {.sq_length = (lenfunc)length};

static PyTypeObject WindowType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "projector._event_window.Window",
    .tp_basicsize = sizeof(Window),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The event_ids one partition applied recently (see projector/event_window.py).",
    .tp_new = window_new,
    .tp_dealloc = (destructor)window_dealloc,
    .tp_methods = window_methods,
    .tp_as_sequence = &window_sequence,
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_event_window", "The event window in C.", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__event_window(void) {
    if (PyType_Ready(&WindowType) < 0) return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    Py_INCREF(&WindowType);
    if (PyModule_AddObject(module, "Window", (PyObject *)&WindowType) < 0) {
        Py_DECREF(&WindowType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
