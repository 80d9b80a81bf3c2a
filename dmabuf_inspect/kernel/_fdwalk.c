/* The hot loop of a live scan: one fstatat() per entry of a /proc/PID/fd directory.
 *
 * fds_by_inode(dirfd, dev) -> {inode: (fd, ...)}: the fds whose target's st_dev is `dev` (the
 * dma-buf filesystem's), by their target's inode. An entry that cannot be stat()ed (closed
 * meanwhile) is skipped. The walk runs without the GIL and builds no Python object per fd it
 * drops; in Python, os.stat() makes an os.stat_result for every fd.
 * Optional: dmabuf_inspect.fdwalk does the same with os.stat() when this is not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
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

static PyMethodDef methods[] = {
    {"fds_by_inode", fds_by_inode, METH_VARARGS,
     "fds_by_inode(dirfd, dev) -> {inode: fds}: the entries of an open /proc/PID/fd directory\n"
     "whose target is on device `dev`, by the target's inode; fds ascending, inodes in the\n"
     "order of their first fd."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fdwalk", "The fd-table walk of a live scan, in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fdwalk(void) { return PyModule_Create(&module); }
