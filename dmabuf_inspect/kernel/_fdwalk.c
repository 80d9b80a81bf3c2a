/* The hot loop of a live scan: one fstatat() per entry of a /proc/PID/fd directory.
 *
 * fds_by_inode(dirfd, dev) -> {inode: (fd, ...)}: the fds whose target's st_dev is `dev` (the
 * dma-buf filesystem's), by their target's inode. An entry that cannot be stat()ed (closed
 * meanwhile) is skipped. The walk runs without the GIL and builds no Python object per fd it
 * drops; in Python, os.stat() makes an os.stat_result for every fd.
 * Optional: dmabuf_inspect.fdwalk does the same with os.stat() when this is not built.
 *
 * bufinfo_plain(body) -> columns or None: the objects of a debugfs bufinfo that has no fence and
 * no attached device (the common file), split and converted in one pass; kernel/bufinfo.py does
 * the same with bytes.split() and int() per distinct field when this is not built, and for any
 * file this returns None for.
 *
 * fd_records(data) -> {pid: {inode: fds}} or None: the task_file iterator's records (pid u32, fd
 * u32, inode u64, native order) grouped as kernel/bpf/records.py's parse_fd_records() groups them;
 * None where a pid's records are not together or not in fd order (Python sorts them then).
 *
 * buffer_records(data, exp_bytes, name_bytes) -> columns or None: our dma-buf iterator's records
 * of buffers with no attachment split into columns, as kernel/bpf/records.py's _buffer_columns()
 * and _exporters_and_names() split them when this is not built.
 *
 * weave_columns(pieces, columns, sep, nested, lookups) -> str: the JSON text of many objects of
 * one shape (the buffers of `dump`), from their columns.
 *
 * hold(held, refs, pid, fds, holder, maps): one process's holders (by fd and by mapping) added to a
 * scan's holdings, as scan/snapshot.py's _Holdings._add() adds them when this is not built.
 *
 * rows(cls, n, columns) -> [cls, ...]: rows of a tuple type (a NamedTuple) made from columns, as
 * map(tuple.__new__, repeat(cls), zip(*columns)) makes them, with no tuple per row between.
 *
 * held_sums(buffers, helds) -> [(rss, pss), ...] or None: each process's Rss and Pss of dma-bufs
 * (the sizes of the buffers it holds, and their shares), as scan/snapshot.py's _held_bytes() sums
 * them with two dicts over every held buffer when this is not built.
 *
 * bpf(cmd, attr, pointers) -> int: the bpf(2) system call for kernel/bpf/syscall.py, which
 * otherwise calls it through ctypes (whose import costs a whole-process `dump` more than the
 * calls themselves under TCG).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct {
    long fd;
    unsigned long long ino;
} found_t;

static int parse_fd(const char *name, long *out) {
    long v = 0;
    if (!*name) return 0;
    for (const char *p = name; *p; p++) {
        if (*p < '0' || *p > '9' || v > (1L << 40)) return 0;
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return 1;
}

static int by_fd(const void *a, const void *b) {
    long x = ((const found_t *)a)->fd, y = ((const found_t *)b)->fd;
    return (x > y) - (x < y);
}

static PyObject *fds_by_inode(PyObject *self, PyObject *args) {
    int dirfd;
    unsigned long long dev;
    (void)self;
    if (!PyArg_ParseTuple(args, "iK:fds_by_inode", &dirfd, &dev)) return NULL;

    found_t *found = NULL;
    size_t n = 0, cap = 0;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    /* As os.listdir(fd): a dup of the caller's fd, read from the start; the caller keeps its own. */
    int d = dup(dirfd);
    DIR *dir = d < 0 ? NULL : fdopendir(d);
    if (dir == NULL) {
        err = errno;
        if (d >= 0) close(d);
    } else {
        rewinddir(dir);
        struct dirent *e;
        struct stat st;
        for (;;) {
            errno = 0;
            e = readdir(dir);
            if (e == NULL) {
                err = errno;
                break;
            }
            long fd;
            if (!parse_fd(e->d_name, &fd)) continue;
            if (fstatat(dirfd, e->d_name, &st, 0) != 0) continue; /* closed meanwhile */
            if ((unsigned long long)st.st_dev != dev) continue;
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                found_t *grown = realloc(found, ncap * sizeof *found);
                if (grown == NULL) {
                    err = ENOMEM;
                    break;
                }
                found = grown;
                cap = ncap;
            }
            found[n].fd = fd;
            found[n].ino = (unsigned long long)st.st_ino;
            n++;
        }
        rewinddir(dir); /* the offset is shared with the caller's fd: rewound, as os.listdir(fd) leaves it */
        closedir(dir);
    }
    Py_END_ALLOW_THREADS

    if (err) {
        free(found);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    int ascending = 1;
    for (size_t i = 1; i < n && ascending; i++) ascending = found[i - 1].fd < found[i].fd;
    if (!ascending) qsort(found, n, sizeof *found, by_fd);
    /* inode -> its fds, ascending; inodes in the order of their first fd */
    PyObject *by_inode = PyDict_New();
    if (by_inode == NULL) goto fail;
    for (size_t i = 0; i < n; i++) {
        PyObject *ino = PyLong_FromUnsignedLongLong(found[i].ino);
        PyObject *fd = PyLong_FromLong(found[i].fd);
        PyObject *fds = NULL;
        if (ino != NULL && fd != NULL) {
            PyObject *had = PyDict_GetItemWithError(by_inode, ino); /* borrowed */
            if (had == NULL && !PyErr_Occurred()) {
                fds = PyTuple_Pack(1, fd);
            } else if (had != NULL) { /* one buffer under several fds: rare, and few fds each */
                Py_ssize_t k = PyTuple_GET_SIZE(had);
                fds = PyTuple_New(k + 1);
                if (fds != NULL) {
                    for (Py_ssize_t j = 0; j < k; j++) {
                        PyObject *item = PyTuple_GET_ITEM(had, j);
                        Py_INCREF(item);
                        PyTuple_SET_ITEM(fds, j, item);
                    }
                    Py_INCREF(fd);
                    PyTuple_SET_ITEM(fds, k, fd);
                }
            }
        }
        int bad = fds == NULL || PyDict_SetItem(by_inode, ino, fds) != 0;
        Py_XDECREF(ino);
        Py_XDECREF(fd);
        Py_XDECREF(fds);
        if (bad) {
            Py_DECREF(by_inode);
            goto fail;
        }
    }
    free(found);
    return by_inode;

fail:
    free(found);
    return NULL;
}

/* The text of many JSON objects of one shape, for the JSON writer (scan/jsonout.py), which falls
 * back to str.join where this is not built: weave_columns() below. Each row of n values
 * (n = len(pieces) - 1) is written as pieces[0] v0 pieces[1] v1 ... v(n-1) pieces[n]; rows are
 * separated by `sep`. A value is written as: a str, as it is (the
 * caller JSON-encodes strings, into ASCII); an int (not a bool), in decimal; None, as null; a
 * tuple of ints, in decimal joined by ","; and in a column k of `nested` ({k: pieces}), a
 * sequence of rows, woven with those pieces and ",". ASCII only: a str that is not is a
 * ValueError, any other value a TypeError. */
typedef struct {
    char *p;
    size_t len, cap;
} text_t;

static int text_grow(text_t *t, size_t more) {
    if (t->len + more <= t->cap) return 0;
    size_t cap = t->cap ? t->cap : 1 << 16;
    while (cap < t->len + more) cap *= 2;
    char *p = realloc(t->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->p = p;
    t->cap = cap;
    return 0;
}

/* The text as an ASCII str (NULL where r, the writing's result, says it failed); freed either way. */
static PyObject *text_finish(text_t *t, int r) {
    PyObject *out = r ? NULL : PyUnicode_New((Py_ssize_t)t->len, 127);
    if (out != NULL && t->len) memcpy(PyUnicode_1BYTE_DATA(out), t->p, t->len);
    free(t->p);
    return out;
}

static int text_str(text_t *t, PyObject *s) {
    if (!PyUnicode_IS_ASCII(s)) {
        PyErr_SetString(PyExc_ValueError, "weave: a str that is not ASCII");
        return -1;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    if (text_grow(t, (size_t)n)) return -1;
    memcpy(t->p + t->len, PyUnicode_1BYTE_DATA(s), (size_t)n);
    t->len += (size_t)n;
    return 0;
}

static int text_int(text_t *t, PyObject *v) {
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred()) return -1;
    if (overflow) { /* past 2^63: as Python writes it */
        PyObject *s = PyObject_Str(v);
        if (s == NULL) return -1;
        int r = text_str(t, s);
        Py_DECREF(s);
        return r;
    }
    if (text_grow(t, 24)) return -1;
    static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                "8081828384858687888990919293949596979899";
    char digits[24], *d = digits + sizeof digits;
    unsigned long long u = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
    while (u >= 100) {
        unsigned k = (unsigned)(u % 100) * 2;
        u /= 100;
        *--d = pairs[k + 1];
        *--d = pairs[k];
    }
    if (u >= 10) {
        *--d = pairs[u * 2 + 1];
        *--d = pairs[u * 2];
    } else {
        *--d = (char)('0' + u);
    }
    if (x < 0) *--d = '-';
    size_t n = (size_t)(digits + sizeof digits - d);
    memcpy(t->p + t->len, d, n);
    t->len += n;
    return 0;
}

static int weave_rows(text_t *t, PyObject *pieces, PyObject *rows, const char *sep, size_t sep_len,
                      PyObject *nested);

static int text_value(text_t *t, PyObject *v, PyObject *sub) {
    if (sub != NULL) return weave_rows(t, sub, v, ",", 1, NULL);
    if (PyUnicode_Check(v)) return text_str(t, v);
    if (PyLong_Check(v) && !PyBool_Check(v)) return text_int(t, v);
    if (v == Py_None) {
        if (text_grow(t, 4)) return -1;
        memcpy(t->p + t->len, "null", 4);
        t->len += 4;
        return 0;
    }
    if (PyTuple_Check(v)) {
        Py_ssize_t n = PyTuple_GET_SIZE(v);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PyTuple_GET_ITEM(v, i);
            if (!PyLong_Check(item) || PyBool_Check(item)) {
                PyErr_SetString(PyExc_TypeError, "weave: a tuple of something else than ints");
                return -1;
            }
            if (i) {
                if (text_grow(t, 1)) return -1;
                t->p[t->len++] = ',';
            }
            if (text_int(t, item)) return -1;
        }
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "weave: cannot write a %.100s", Py_TYPE(v)->tp_name);
    return -1;
}

static int weave_rows(text_t *t, PyObject *pieces, PyObject *rows, const char *sep, size_t sep_len,
                      PyObject *nested) {
    Py_ssize_t n = PyTuple_GET_SIZE(pieces) - 1;
    PyObject *subs[64] = {NULL};
    if (n < 0 || n > 64) {
        PyErr_SetString(PyExc_ValueError, "weave: 1 to 65 pieces");
        return -1;
    }
    if (nested != NULL) {
        for (Py_ssize_t k = 0; k < n; k++) {
            PyObject *key = PyLong_FromSsize_t(k);
            if (key == NULL) return -1;
            subs[k] = PyDict_GetItemWithError(nested, key); /* borrowed */
            Py_DECREF(key);
            if (subs[k] == NULL && PyErr_Occurred()) return -1;
            if (subs[k] != NULL && (!PyTuple_Check(subs[k]) || PyTuple_GET_SIZE(subs[k]) < 1)) {
                PyErr_SetString(PyExc_TypeError, "weave: nested pieces must be a non-empty tuple");
                return -1;
            }
        }
    }
    PyObject *it = PyObject_GetIter(rows);
    if (it == NULL) return -1;
    PyObject *row;
    int first = 1, r = 0;
    while (r == 0 && (row = PyIter_Next(it)) != NULL) {
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != n) {
            PyErr_Format(PyExc_TypeError, "weave: each row must be a tuple of %zd values", n);
            r = -1;
        }
        if (r == 0 && !first) {
            if (text_grow(t, sep_len)) r = -1;
            else {
                memcpy(t->p + t->len, sep, sep_len);
                t->len += sep_len;
            }
        }
        first = 0;
        for (Py_ssize_t k = 0; r == 0 && k <= n; k++) {
            r = text_str(t, PyTuple_GET_ITEM(pieces, k));
            if (r == 0 && k < n) r = text_value(t, PyTuple_GET_ITEM(row, k), subs[k]);
        }
        Py_DECREF(row);
    }
    Py_DECREF(it);
    if (r == 0 && PyErr_Occurred()) r = -1;
    return r;
}

/* dma_buf_debug_show() (5.3+) ends an object with no fence and no device so. */
static const char PLAIN_END[] = "\n\tAttached Devices:\nTotal 0 devices attached\n\n";
#define BUFINFO_COLUMNS 7

/* A field of 1..20 decimal digits (1..16 hex digits), as bufinfo.py's _numbers() takes it; 0
 * for anything else, or past 2^64 - 1 (Python's int would take it: the caller steps aside). */
static int field_number(const char *p, size_t n, int hex, unsigned long long *out) {
    unsigned long long v = 0;
    if (n == 0 || n > (hex ? 16u : 20u)) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned c = (unsigned char)p[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (hex && c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (hex && c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return 0;
        if (hex) v = (v << 4) | d;
        else {
            if (v > (ULLONG_MAX - d) / 10) return 0;
            v = v * 10 + d;
        }
    }
    *out = v;
    return 1;
}

/* Columns: size, flags, mode, count, inode as ints (flags and mode hex), exp_name and name as
 * bytes. A field equal to the one above it is the same object (a column holds few values). */
static PyObject *bufinfo_plain(PyObject *self, PyObject *args) {
    Py_buffer body;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*:bufinfo_plain", &body)) return NULL;
    static const int is_hex[BUFINFO_COLUMNS] = {0, 1, 1, 0, -1, 0, -1}; /* -1: bytes */
    const size_t end_len = sizeof PLAIN_END - 1;
    const char *p = body.buf, *end = p + body.len;
    PyObject *cols[BUFINFO_COLUMNS] = {NULL}, *prev[BUFINFO_COLUMNS] = {NULL}, *result = NULL;
    const char *prev_at[BUFINFO_COLUMNS] = {NULL};
    size_t prev_len[BUFINFO_COLUMNS] = {0};
    int plain = 0;
    for (int k = 0; k < BUFINFO_COLUMNS; k++)
        if ((cols[k] = PyList_New(0)) == NULL) goto done;
    while (p < end) {
        if (end - p == 1 && *p == '\n') {
            plain = PyList_GET_SIZE(cols[0]) > 0;
            break;
        }
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL || (size_t)(end - nl) < end_len || memcmp(nl, PLAIN_END, end_len) != 0) break;
        const char *at[BUFINFO_COLUMNS];
        size_t len[BUFINFO_COLUMNS];
        int k = 0;
        for (const char *f = p;; k++) {
            const char *tab = k < BUFINFO_COLUMNS - 1 ? memchr(f, '\t', (size_t)(nl - f)) : NULL;
            if (k == BUFINFO_COLUMNS - 1) {
                if (memchr(f, '\t', (size_t)(nl - f)) != NULL) k = -1; /* a tab in the name */
                at[BUFINFO_COLUMNS - 1] = f;
                len[BUFINFO_COLUMNS - 1] = (size_t)(nl - f);
                break;
            }
            if (tab == NULL) {
                k = -1;
                break;
            }
            at[k] = f;
            len[k] = (size_t)(tab - f);
            f = tab + 1;
        }
        if (k < 0) break;
        int ok = 1;
        for (k = 0; ok && k < BUFINFO_COLUMNS; k++) {
            PyObject *v;
            if (prev[k] != NULL && prev_len[k] == len[k] && memcmp(prev_at[k], at[k], len[k]) == 0) {
                v = prev[k];
                Py_INCREF(v);
            } else if (is_hex[k] < 0) {
                v = PyBytes_FromStringAndSize(at[k], (Py_ssize_t)len[k]);
            } else {
                unsigned long long x;
                if (!field_number(at[k], len[k], is_hex[k], &x)) {
                    ok = 0;
                    break;
                }
                v = PyLong_FromUnsignedLongLong(x);
            }
            if (v == NULL) goto done;
            int appended = PyList_Append(cols[k], v);
            Py_DECREF(v); /* the list holds it */
            if (appended) goto done;
            prev[k] = v;
            prev_at[k] = at[k];
            prev_len[k] = len[k];
        }
        if (!ok) break;
        p = nl + end_len;
    }
    if (!plain) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    for (int k = 0; k < BUFINFO_COLUMNS; k++) {
        if (is_hex[k] >= 0) {
            PyObject *t = PyList_AsTuple(cols[k]);
            if (t == NULL) goto done;
            Py_SETREF(cols[k], t);
        }
    }
    result = PyTuple_Pack(BUFINFO_COLUMNS, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6]);
done:
    for (int k = 0; k < BUFINFO_COLUMNS; k++) Py_XDECREF(cols[k]);
    PyBuffer_Release(&body);
    return result;
}

static PyObject *fd_records(PyObject *self, PyObject *args) {
    Py_buffer data;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*:fd_records", &data)) return NULL;
    typedef struct {
        uint32_t pid, fd;
        uint64_t inode;
    } __attribute__((packed)) record_t;
    PyObject *out = NULL, *held = NULL;
    if (data.len % (Py_ssize_t)sizeof(record_t)) {
        PyErr_SetString(PyExc_ValueError, "fd_records: not a whole number of 16-byte records");
        goto fail;
    }
    if ((out = PyDict_New()) == NULL) goto fail;
    const char *at = data.buf;
    Py_ssize_t n = data.len / (Py_ssize_t)sizeof(record_t);
    uint32_t pid = 0, last_fd = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        record_t r;
        memcpy(&r, at + i * (Py_ssize_t)sizeof r, sizeof r);
        if (held == NULL || r.pid != pid) {
            PyObject *key = PyLong_FromUnsignedLong(r.pid);
            if (key == NULL) goto fail;
            int seen = PyDict_Contains(out, key);
            held = seen == 0 ? PyDict_New() : NULL;
            if (held == NULL || PyDict_SetItem(out, key, held)) {
                Py_DECREF(key);
                if (seen == 1) { /* a task's records apart: Python sorts them */
                    Py_DECREF(out);
                    PyBuffer_Release(&data);
                    Py_RETURN_NONE;
                }
                goto fail;
            }
            Py_DECREF(key);
            Py_DECREF(held); /* out holds it */
            pid = r.pid;
        } else if (r.fd <= last_fd) { /* the iterator walks a task's fds in order */
            Py_DECREF(out);
            PyBuffer_Release(&data);
            Py_RETURN_NONE;
        }
        last_fd = r.fd;
        PyObject *inode = PyLong_FromUnsignedLongLong(r.inode), *fd = PyLong_FromUnsignedLong(r.fd), *fds = NULL;
        PyObject *had = inode && fd ? PyDict_GetItemWithError(held, inode) : NULL; /* borrowed */
        if (inode && fd && (had != NULL || !PyErr_Occurred())) {
            /* one fd (most buffers): a 1-tuple; another fd of the same buffer: a longer copy */
            Py_ssize_t k = had == NULL ? 0 : PyTuple_GET_SIZE(had);
            fds = PyTuple_New(k + 1);
            for (Py_ssize_t j = 0; fds != NULL && j < k; j++) PyTuple_SET_ITEM(fds, j, Py_NewRef(PyTuple_GET_ITEM(had, j)));
            if (fds != NULL) PyTuple_SET_ITEM(fds, k, Py_NewRef(fd));
        }
        int bad = fds == NULL || PyDict_SetItem(held, inode, fds) != 0;
        Py_XDECREF(fds);
        Py_XDECREF(inode);
        Py_XDECREF(fd);
        if (bad) goto fail;
    }
    PyBuffer_Release(&data);
    return out;
fail:
    Py_XDECREF(out);
    PyBuffer_Release(&data);
    return NULL;
}

/* A BUFFER record (kernel/bpf/programs.py): inode u64, size u64, count u64, flags u32, mode u32,
 * attachments u32, named u16, fences u16, exp_name[exp_bytes], name[name_bytes]. */
#define BUFFER_HEAD 40
#define BUFFER_COLUMNS 8

static PyObject *buffer_records(PyObject *self, PyObject *args) {
    Py_buffer data;
    Py_ssize_t exp_bytes, name_bytes;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nn:buffer_records", &data, &exp_bytes, &name_bytes)) return NULL;
    PyObject *cols[BUFFER_COLUMNS] = {NULL}, *prev[BUFFER_COLUMNS] = {NULL}, *result = NULL;
    uint64_t prev_value[BUFFER_COLUMNS] = {0};
    const char *prev_at[BUFFER_COLUMNS] = {NULL};
    size_t prev_len[BUFFER_COLUMNS] = {0};
    if (exp_bytes < 1 || name_bytes < 1) {
        PyErr_SetString(PyExc_ValueError, "buffer_records: field sizes must be positive");
        goto done;
    }
    Py_ssize_t size = BUFFER_HEAD + exp_bytes + name_bytes;
    if (data.len % size) {
        PyErr_Format(PyExc_ValueError, "buffer_records: %zd bytes is no multiple of %zd", data.len, size);
        goto done;
    }
    Py_ssize_t n = data.len / size;
    for (int k = 0; k < BUFFER_COLUMNS; k++)
        if ((cols[k] = PyTuple_New(n)) == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *at = (const char *)data.buf + i * size;
        uint64_t inode, bytes, count;
        uint32_t flags, mode, attachments;
        uint16_t named, fences;
        memcpy(&inode, at, 8);
        memcpy(&bytes, at + 8, 8);
        memcpy(&count, at + 16, 8);
        memcpy(&flags, at + 24, 4);
        memcpy(&mode, at + 28, 4);
        memcpy(&attachments, at + 32, 4);
        memcpy(&named, at + 36, 2);
        memcpy(&fences, at + 38, 2);
        if (inode == UINT64_MAX || attachments || named) { /* devices follow: Python reads them */
            result = Py_NewRef(Py_None);
            goto done;
        }
        const uint64_t numbers[6] = {inode, bytes, count, flags, mode, fences};
        for (int k = 0; k < BUFFER_COLUMNS; k++) {
            PyObject *v;
            if (k < 6) {
                if (prev[k] != NULL && prev_value[k] == numbers[k]) v = Py_NewRef(prev[k]);
                else v = PyLong_FromUnsignedLongLong(numbers[k]);
                prev_value[k] = numbers[k];
            } else { /* a C string: up to its first NUL */
                const char *field = k == 6 ? at + BUFFER_HEAD : at + BUFFER_HEAD + exp_bytes;
                size_t cap = (size_t)(k == 6 ? exp_bytes : name_bytes);
                const char *nul = memchr(field, 0, cap);
                size_t len = nul ? (size_t)(nul - field) : cap;
                if (prev[k] != NULL && prev_len[k] == len && memcmp(prev_at[k], field, len) == 0)
                    v = Py_NewRef(prev[k]);
                else
                    v = PyBytes_FromStringAndSize(field, (Py_ssize_t)len);
                prev_at[k] = field;
                prev_len[k] = len;
            }
            if (v == NULL) goto done;
            PyTuple_SET_ITEM(cols[k], i, v); /* the tuple holds it */
            prev[k] = v;
        }
    }
    result = PyTuple_New(BUFFER_COLUMNS);
    for (int k = 0; result != NULL && k < BUFFER_COLUMNS; k++) {
        PyTuple_SET_ITEM(result, k, cols[k]);
        cols[k] = NULL;
    }
done:
    for (int k = 0; k < BUFFER_COLUMNS; k++) Py_XDECREF(cols[k]);
    PyBuffer_Release(&data);
    return result;
}

/* One row of `cls` (a tuple type) from these fields, as tuple.__new__(cls, fields) makes it. Before
 * 3.14, where tuples cache no hash, without the copy: allocated and filled in place. */
static PyObject *new_row(PyTypeObject *cls, PyObject **fields, Py_ssize_t width) {
#if PY_VERSION_HEX < 0x030E0000
    PyObject *row = cls->tp_alloc(cls, width);
    if (row == NULL) {
        for (Py_ssize_t k = 0; k < width; k++) Py_DECREF(fields[k]);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < width; k++) PyTuple_SET_ITEM(row, k, fields[k]);
    return row;
#else
    PyObject *plain = PyTuple_New(width);
    if (plain == NULL) {
        for (Py_ssize_t k = 0; k < width; k++) Py_DECREF(fields[k]);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < width; k++) PyTuple_SET_ITEM(plain, k, fields[k]);
    PyObject *call = PyTuple_Pack(1, plain);
    Py_DECREF(plain);
    PyObject *row = call ? PyTuple_Type.tp_new(cls, call, NULL) : NULL;
    Py_XDECREF(call);
    return row;
#endif
}

/* held[inode] += (holder(pid, fds, mappings, mapped),), refs[inode] += len(fds) + mappings. */
static int add_holder(PyObject *held, PyObject *refs, PyObject *inode, PyObject *holder, PyObject *pid, PyObject *fds,
                      PyObject *mappings, PyObject *mapped) {
    PyObject *fields[4] = {Py_NewRef(pid), Py_NewRef(fds), Py_NewRef(mappings), Py_NewRef(mapped)};
    PyObject *h = new_row((PyTypeObject *)holder, fields, 4);
    PyObject *one = h ? PyTuple_Pack(1, h) : NULL;
    Py_XDECREF(h);
    if (one == NULL) return -1;
    PyObject *had = PyDict_GetItemWithError(held, inode); /* borrowed */
    PyObject *both = had ? PySequence_Concat(had, one) : (PyErr_Occurred() ? NULL : Py_NewRef(one));
    Py_DECREF(one);
    if (both == NULL) return -1;
    int r = PyDict_SetItem(held, inode, both);
    Py_DECREF(both);
    if (r) return -1;
    PyObject *before = PyDict_GetItemWithError(refs, inode); /* borrowed */
    if (before == NULL && PyErr_Occurred()) return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(fds) + PyLong_AsSsize_t(mappings);
    if (before != NULL) n += PyLong_AsSsize_t(before);
    if (PyErr_Occurred()) return -1;
    PyObject *count = PyLong_FromSsize_t(n);
    if (count == NULL) return -1;
    r = PyDict_SetItem(refs, inode, count);
    Py_DECREF(count);
    return r;
}

/* sum(end - start) of a list of mappings (tuples: start at 0, end at 1) */
static PyObject *mapped_bytes(PyObject *entries) {
    PyObject *total = PyLong_FromLong(0);
    for (Py_ssize_t i = 0; total != NULL && i < PyList_GET_SIZE(entries); i++) {
        PyObject *m = PyList_GET_ITEM(entries, i);
        if (!PyTuple_Check(m) || PyTuple_GET_SIZE(m) < 2) {
            PyErr_SetString(PyExc_TypeError, "hold: a mapping must be a tuple (start, end, ...)");
            Py_CLEAR(total);
            break;
        }
        PyObject *length = PyNumber_Subtract(PyTuple_GET_ITEM(m, 1), PyTuple_GET_ITEM(m, 0));
        PyObject *sum = length ? PyNumber_Add(total, length) : NULL;
        Py_XDECREF(length);
        Py_SETREF(total, sum);
    }
    return total;
}

static PyObject *hold(PyObject *self, PyObject *args) {
    PyObject *held, *refs, *pid, *fds, *holder, *maps, *zero = NULL, *empty = NULL, *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O:hold", &PyDict_Type, &held, &PyDict_Type, &refs, &PyLong_Type, &pid,
                          &PyDict_Type, &fds, &PyType_Type, &holder, &maps))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)holder, &PyTuple_Type) || (maps != Py_None && !PyDict_Check(maps))) {
        PyErr_SetString(PyExc_TypeError, "hold: holder must be a tuple type, maps a dict or None");
        return NULL;
    }
    if ((zero = PyLong_FromLong(0)) == NULL || (empty = PyTuple_New(0)) == NULL) goto done;
    PyObject *inode, *its_fds, *entries;
    Py_ssize_t pos = 0;
    while (PyDict_Next(fds, &pos, &inode, &its_fds)) {
        if (!PyTuple_Check(its_fds)) {
            PyErr_SetString(PyExc_TypeError, "hold: each inode's fds must be a tuple");
            goto done;
        }
        if (maps != Py_None) {
            int mapped = PyDict_Contains(maps, inode);
            if (mapped < 0) goto done;
            if (mapped) continue; /* with its mappings, below */
        }
        if (add_holder(held, refs, inode, holder, pid, its_fds, zero, zero)) goto done;
    }
    pos = 0;
    while (maps != Py_None && PyDict_Next(maps, &pos, &inode, &entries)) {
        if (!PyList_Check(entries)) {
            PyErr_SetString(PyExc_TypeError, "hold: each inode's mappings must be a list");
            goto done;
        }
        its_fds = PyDict_GetItemWithError(fds, inode); /* borrowed */
        if (its_fds == NULL && PyErr_Occurred()) goto done;
        if (its_fds != NULL && !PyTuple_Check(its_fds)) {
            PyErr_SetString(PyExc_TypeError, "hold: each inode's fds must be a tuple");
            goto done;
        }
        PyObject *mappings = PyLong_FromSsize_t(PyList_GET_SIZE(entries));
        PyObject *mapped = mappings ? mapped_bytes(entries) : NULL;
        int r = mapped ? add_holder(held, refs, inode, holder, pid, its_fds ? its_fds : empty, mappings, mapped) : -1;
        Py_XDECREF(mappings);
        Py_XDECREF(mapped);
        if (r) goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(zero);
    Py_XDECREF(empty);
    return result;
}

/* rows(cls, n, columns) -> [cls(...), ...]: n rows of a tuple type, field k of row i from column k:
 * its item i where it is a list or tuple (of length n), else its next item (any iterator). */
static PyObject *rows(PyObject *self, PyObject *args) {
    PyObject *cls, *columns, *out = NULL, *iters[64] = {NULL};
    Py_ssize_t n;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!nO!:rows", &PyType_Type, &cls, &n, &PyTuple_Type, &columns)) return NULL;
    Py_ssize_t width = PyTuple_GET_SIZE(columns);
    if (!PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type) || width < 1 || width > 64 || n < 0) {
        PyErr_SetString(PyExc_TypeError, "rows: a tuple type, n >= 0 and 1 to 64 columns");
        return NULL;
    }
    for (Py_ssize_t k = 0; k < width; k++) {
        PyObject *col = PyTuple_GET_ITEM(columns, k);
        if (PyList_CheckExact(col) || PyTuple_CheckExact(col)) {
            if (PySequence_Fast_GET_SIZE(col) != n) {
                PyErr_Format(PyExc_ValueError, "rows: column %zd has %zd items, not %zd", k,
                             PySequence_Fast_GET_SIZE(col), n);
                goto done;
            }
        } else if ((iters[k] = PyObject_GetIter(col)) == NULL) {
            goto done;
        }
    }
    if ((out = PyList_New(n)) == NULL) goto done;
    PyObject *fields[64];
    for (Py_ssize_t i = 0; i < n; i++) {
        for (Py_ssize_t k = 0; k < width; k++) {
            if (iters[k] == NULL) {
                fields[k] = Py_NewRef(PySequence_Fast_GET_ITEM(PyTuple_GET_ITEM(columns, k), i));
                continue;
            }
            fields[k] = PyIter_Next(iters[k]);
            if (fields[k] == NULL) {
                if (!PyErr_Occurred())
                    PyErr_Format(PyExc_ValueError, "rows: column %zd ends before row %zd", k, i);
                for (Py_ssize_t j = 0; j < k; j++) Py_DECREF(fields[j]);
                Py_CLEAR(out);
                goto done;
            }
        }
        PyObject *row = new_row((PyTypeObject *)cls, fields, width);
        if (row == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, row);
    }
done:
    for (Py_ssize_t k = 0; k < width && k < 64; k++) Py_XDECREF(iters[k]);
    return out;
}

static int cmp_inode(const void *key, const void *item) {
    long long a = *(const long long *)key, b = *(const long long *)item;
    return (a > b) - (a < b);
}

/* held_sums(buffers, helds): buffers are Buffer rows sorted by inode (inode at 0, size at 1,
 * holders at 7); None (Python decides) where they are not, or an inode or a sum is past int64. */
static PyObject *held_sums(PyObject *self, PyObject *args) {
    PyObject *buffers, *helds, *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!:held_sums", &PyList_Type, &buffers, &PyList_Type, &helds)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(buffers), m = 0;
    long long *inodes = PyMem_Malloc(sizeof(long long) * 3 * (size_t)(n ? n : 1));
    if (inodes == NULL) return PyErr_NoMemory();
    long long *sizes = inodes + n, *shares = inodes + 2 * n, prev = LLONG_MIN;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyList_GET_ITEM(buffers, i);
        if (!PyTuple_Check(b) || PyTuple_GET_SIZE(b) < 8 || !PyTuple_Check(PyTuple_GET_ITEM(b, 7))) goto python;
        Py_ssize_t k = PyTuple_GET_SIZE(PyTuple_GET_ITEM(b, 7));
        if (k == 0) continue;
        long long inode = PyLong_AsLongLong(PyTuple_GET_ITEM(b, 0));
        long long size = PyLong_AsLongLong(PyTuple_GET_ITEM(b, 1));
        if (PyErr_Occurred() || inode <= prev || size < 0) goto python;
        inodes[m] = prev = inode;
        sizes[m] = size;
        shares[m] = size / k;
        m++;
    }
    result = PyList_New(PyList_GET_SIZE(helds));
    for (Py_ssize_t j = 0; result != NULL && j < PyList_GET_SIZE(helds); j++) {
        PyObject *it = PyObject_GetIter(PyList_GET_ITEM(helds, j)), *x;
        if (it == NULL) goto fail;
        long long rss = 0, pss = 0;
        while ((x = PyIter_Next(it)) != NULL) {
            long long inode = PyLong_AsLongLong(x);
            Py_DECREF(x);
            const long long *at = PyErr_Occurred() ? NULL : bsearch(&inode, inodes, (size_t)m, sizeof inode, cmp_inode);
            if (at == NULL || __builtin_add_overflow(rss, sizes[at - inodes], &rss) ||
                __builtin_add_overflow(pss, shares[at - inodes], &pss)) {
                Py_DECREF(it);
                Py_CLEAR(result);
                goto python;
            }
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) goto fail;
        PyObject *pair = Py_BuildValue("(LL)", rss, pss);
        if (pair == NULL) goto fail;
        PyList_SET_ITEM(result, j, pair);
    }
    PyMem_Free(inodes);
    return result;
fail:
    Py_CLEAR(result);
    PyMem_Free(inodes);
    return NULL;
python:
    PyErr_Clear();
    PyMem_Free(inodes);
    Py_RETURN_NONE;
}

/* weave_columns(pieces, columns, sep, nested, lookups) -> str: the rows (columns[0][i],
 * columns[1][i], ...) woven as above, with no row tuple: where lookups has a table for
 * column k, its value is lookups[k][columns[k][i]]. */
static PyObject *weave_columns(PyObject *self, PyObject *args) {
    PyObject *pieces, *columns, *sep, *nested, *lookups;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!UO!O!:weave_columns", &PyTuple_Type, &pieces, &PyTuple_Type, &columns, &sep,
                          &PyDict_Type, &nested, &PyDict_Type, &lookups))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(pieces) - 1;
    if (n < 1 || n > 64 || PyTuple_GET_SIZE(columns) != n) {
        PyErr_SetString(PyExc_ValueError, "weave_columns: 2 to 65 pieces, one column fewer");
        return NULL;
    }
    for (Py_ssize_t i = 0; i <= n; i++) {
        PyObject *piece = PyTuple_GET_ITEM(pieces, i);
        if (!PyUnicode_Check(piece) || !PyUnicode_IS_ASCII(piece)) {
            PyErr_SetString(PyExc_TypeError, "weave_columns: pieces must be ASCII str");
            return NULL;
        }
    }
    if (!PyUnicode_IS_ASCII(sep)) {
        PyErr_SetString(PyExc_ValueError, "weave: a str that is not ASCII");
        return NULL;
    }
    PyObject *cols[64], *subs[64], *tables[64];
    Py_ssize_t rows = -1;
    for (Py_ssize_t k = 0; k < n; k++) {
        cols[k] = PyTuple_GET_ITEM(columns, k);
        if (!PyTuple_Check(cols[k]) && !PyList_Check(cols[k])) {
            PyErr_SetString(PyExc_TypeError, "weave_columns: each column must be a tuple or a list");
            return NULL;
        }
        if (rows >= 0 && PySequence_Fast_GET_SIZE(cols[k]) != rows) {
            PyErr_SetString(PyExc_ValueError, "weave_columns: columns of different lengths");
            return NULL;
        }
        rows = PySequence_Fast_GET_SIZE(cols[k]);
        PyObject *key = PyLong_FromSsize_t(k);
        if (key == NULL) return NULL;
        subs[k] = PyDict_GetItemWithError(nested, key); /* borrowed */
        tables[k] = subs[k] || PyErr_Occurred() ? NULL : PyDict_GetItemWithError(lookups, key);
        Py_DECREF(key);
        if (PyErr_Occurred()) return NULL;
        if (subs[k] != NULL && (!PyTuple_Check(subs[k]) || PyTuple_GET_SIZE(subs[k]) < 1)) {
            PyErr_SetString(PyExc_TypeError, "weave: nested pieces must be a non-empty tuple");
            return NULL;
        }
        if (tables[k] != NULL && !PyDict_Check(tables[k])) {
            PyErr_SetString(PyExc_TypeError, "weave_columns: a lookup must be a dict");
            return NULL;
        }
    }
    const char *s = (const char *)PyUnicode_1BYTE_DATA(sep);
    size_t s_len = (size_t)PyUnicode_GET_LENGTH(sep);
    PyObject *last_key[64] = {NULL}, *last_text[64] = {NULL}; /* borrowed: the columns and tables hold them */
    text_t t = {NULL, 0, 0};
    int r = 0;
    for (Py_ssize_t i = 0; r == 0 && i < rows; i++) {
        if (i) {
            if ((r = text_grow(&t, s_len)) != 0) break;
            memcpy(t.p + t.len, s, s_len);
            t.len += s_len;
        }
        for (Py_ssize_t k = 0; r == 0 && k <= n; k++) {
            r = text_str(&t, PyTuple_GET_ITEM(pieces, k));
            if (r || k == n) continue;
            PyObject *v = PySequence_Fast_GET_ITEM(cols[k], i);
            if (tables[k] != NULL) {
                if (v == last_key[k]) { /* a column of few values repeats them: no lookup */
                    v = last_text[k];
                } else {
                    PyObject *found = PyDict_GetItemWithError(tables[k], v); /* borrowed */
                    if (found == NULL) {
                        if (!PyErr_Occurred())
                            PyErr_Format(PyExc_KeyError, "weave_columns: column %zd has no text for a value", k);
                        r = -1;
                        break;
                    }
                    last_key[k] = v;
                    v = last_text[k] = found;
                }
            }
            r = text_value(&t, v, subs[k]);
        }
    }
    return text_finish(&t, r);
}

/* bpf(cmd, attr, pointers) -> int: syscall(__NR_bpf, cmd, attr, len(attr)). `attr` is a writable
 * buffer (a bytearray, union bpf_attr); `pointers` a tuple of (offset, buffer) pairs: each
 * buffer's address is written into attr at offset (a u64, as the kernel's __aligned_u64 fields)
 * and the buffers are held while the call runs. The kernel writes only into buffers it is given
 * to write (the verifier's log: pass a bytearray). Errors: OSError with the call's errno. */
#define BPF_POINTERS_MAX 8

static PyObject *sys_bpf(PyObject *self, PyObject *args) {
    int cmd;
    Py_buffer attr;
    PyObject *pointers;
    (void)self;
    if (!PyArg_ParseTuple(args, "iw*O!:bpf", &cmd, &attr, &PyTuple_Type, &pointers)) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(pointers), held = 0;
    Py_buffer views[BPF_POINTERS_MAX];
    PyObject *result = NULL;
    if (n > BPF_POINTERS_MAX) {
        PyErr_SetString(PyExc_ValueError, "bpf: at most 8 pointers");
        goto done;
    }
    for (; held < n; held++) {
        Py_ssize_t offset;
        PyObject *pair = PyTuple_GET_ITEM(pointers, held);
        if (!PyTuple_Check(pair) || !PyArg_ParseTuple(pair, "ny*:bpf pointer", &offset, &views[held])) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "bpf: pointers are (offset, buffer) pairs");
            goto done;
        }
        if (offset < 0 || offset % 8 || (size_t)offset + 8 > (size_t)attr.len) {
            PyBuffer_Release(&views[held]);
            PyErr_SetString(PyExc_ValueError, "bpf: a pointer's offset is outside attr, or not 8-aligned");
            goto done;
        }
        uint64_t address = (uint64_t)(uintptr_t)views[held].buf;
        memcpy((char *)attr.buf + offset, &address, sizeof address);
    }
    long ret;
    int saved;
    Py_BEGIN_ALLOW_THREADS
    ret = syscall(__NR_bpf, cmd, attr.buf, (unsigned int)attr.len);
    saved = errno;
    Py_END_ALLOW_THREADS
    if (ret < 0) {
        errno = saved;
        PyErr_SetFromErrno(PyExc_OSError);
    } else {
        result = PyLong_FromLong(ret);
    }
done:
    for (Py_ssize_t i = 0; i < held; i++) PyBuffer_Release(&views[i]);
    PyBuffer_Release(&attr);
    return result;
}

static PyMethodDef methods[] = {
    {"fds_by_inode", fds_by_inode, METH_VARARGS,
     "fds_by_inode(dirfd, dev) -> {inode: fds}: the entries of an open /proc/PID/fd directory\n"
     "whose target is on device `dev`, by the target's inode; fds ascending, inodes in the\n"
     "order of their first fd."},
    {"weave_columns", weave_columns, METH_VARARGS,
     "weave_columns(pieces, columns, sep, nested, lookups) -> str: pieces[0] row[0] pieces[1] ...\n"
     "pieces[n] for each row of these columns (tuples or lists of one length), rows separated by\n"
     "sep; str as is, int in decimal, None as null, a tuple of ints joined by ',', a column k of\n"
     "nested woven as rows with nested[k] and ',', a column k with a table in lookups written as\n"
     "lookups[k][value]; ASCII only."},
    {"bufinfo_plain", bufinfo_plain, METH_VARARGS,
     "bufinfo_plain(body) -> (sizes, flags, modes, counts, exp_names, inodes, names) or None: the\n"
     "objects of a bufinfo body (between its header and its Total line) when every one is an object\n"
     "line of 7 tab-separated fields with no fence and no device; numbers as ints (flags, mode hex),\n"
     "the rest as bytes."},
    {"fd_records", fd_records, METH_VARARGS,
     "fd_records(data) -> {pid: {inode: fds}} or None: 16-byte records (pid u32, fd u32, inode u64)\n"
     "grouped by pid, fds ascending, inodes in the order of their first fd; None where a pid's\n"
     "records are not together or their fds not ascending."},
    {"buffer_records", buffer_records, METH_VARARGS,
     "buffer_records(data, exp_bytes, name_bytes) -> (inodes, sizes, counts, flags, modes, fences,\n"
     "exp_names, names) or None: the columns of BUFFER records, numbers as ints and the two names\n"
     "as bytes up to their NUL; None where a buffer has attachments (DEVICES records follow)."},
    {"hold", hold, METH_VARARGS,
     "hold(held, refs, pid, fds, holder, maps) -> None: for each inode of fds ({inode: fds}) and of\n"
     "maps ({inode: [mapping, ...]}, or None): held[inode] += (holder(pid, its fds or (), its number\n"
     "of mappings, the sum of their end - start),) and refs[inode] += its fds and mappings, in place;\n"
     "holder is a tuple type, a mapping a tuple (start, end, ...)."},
    {"rows", rows, METH_VARARGS,
     "rows(cls, n, columns) -> list: n rows of the tuple type cls, as tuple.__new__(cls, fields) makes\n"
     "them; field k of row i is item i of columns[k] where it is a list or tuple (of n items), else the\n"
     "next item of its iterator (ValueError where one ends early)."},
    {"held_sums", held_sums, METH_VARARGS,
     "held_sums(buffers, helds) -> [(rss, pss), ...] or None: for each collection of inodes in helds,\n"
     "the sum of those buffers' sizes and of their sizes // their number of holders; buffers is a list\n"
     "of Buffer rows sorted by inode (inode, size, ..., holders at 7). None where they are not\n"
     "sorted, an inode is not among the held buffers, or a number is past int64."},
    {"bpf", sys_bpf, METH_VARARGS,
     "bpf(cmd, attr, pointers) -> int: bpf(2) on the bytearray attr, with the address of each\n"
     "buffer of pointers ((offset, buffer), ...) written into attr at its offset first;\n"
     "OSError with the errno."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fdwalk", "The fd-table walk of a live scan, records split into columns, holders grouped, the JSON writer's weave_columns() and bpf(2), in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fdwalk(void) { return PyModule_Create(&module); }
