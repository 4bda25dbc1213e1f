# cython: language_level=3, boundscheck=False, wraparound=False
"""The routing table's scan in C: the compiled twin of ``_rules_py.py`` (same rules, same results).

Prefix keys are kept as UTF-8 bytes with their lengths, and the model is
encoded once per scan, so each prefix test is a length check and a memcmp.
"""

from libc.string cimport memcmp
from libc.stdlib cimport malloc, free

cdef int PREFIX = 0
cdef int TAG = 1


cdef class RuleScanner:
    cdef int* _kinds
    cdef Py_ssize_t* _lens
    cdef list _bytes
    cdef list _keys
    cdef Py_ssize_t _n
    cdef const char** _ptrs

    def __cinit__(self, kinds, keys):
        if len(kinds) != len(keys):
            raise ValueError("kinds and keys differ in length")
        self._n = len(kinds)
        self._kinds = <int*>malloc(max(self._n, 1) * sizeof(int))
        self._lens = <Py_ssize_t*>malloc(max(self._n, 1) * sizeof(Py_ssize_t))
        self._ptrs = <const char**>malloc(max(self._n, 1) * sizeof(char*))
        if not self._kinds or not self._lens or not self._ptrs:
            raise MemoryError()
        self._keys = list(keys)
        self._bytes = [k.encode("utf-8") for k in self._keys]
        cdef Py_ssize_t i
        cdef bytes b
        for i in range(self._n):
            self._kinds[i] = kinds[i]
            b = self._bytes[i]
            self._lens[i] = len(b)
            self._ptrs[i] = b

    def __dealloc__(self):
        free(self._kinds)
        free(self._lens)
        free(self._ptrs)

    def scan(self, str model, tags, Py_ssize_t start):
        cdef bytes mb = model.encode("utf-8")
        cdef const char* m = mb
        cdef Py_ssize_t mlen = len(mb)
        cdef Py_ssize_t i
        cdef int kind
        if start < 0:
            start = 0
        for i in range(start, self._n):
            kind = self._kinds[i]
            if kind == PREFIX:
                if self._lens[i] <= mlen and memcmp(m, self._ptrs[i], self._lens[i]) == 0:
                    return i
            elif kind == TAG:
                if self._keys[i] in tags:
                    return i
            else:
                return i
        return -1
