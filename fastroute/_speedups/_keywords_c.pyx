# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Keyword classification with an Aho-Corasick automaton in C: the compiled twin of ``_keywords_py.py``.

Same rules, same results (tests/test_keywords.py runs both): keywords and text
lowercased with ``str.lower``, plain substrings, empty keywords ignored, tags
returned in the order given, a stop as soon as every tag has a hit.

The automaton runs over the UTF-8 bytes of the lowercased keywords (lone
surrogates as ``surrogatepass`` writes them; UTF-8 is self-synchronising, so a
byte match is a character match).  Bytes are first mapped to classes (the bytes
used by some keyword, and one class for all others), and the goto function is
completed into a DFA: ``delta[state * nclasses + class]``, stored pre-multiplied
and bitwise-inverted (negative) when the next state ends a keyword.  Each state
keeps its own tags and a link to the nearest suffix state that ends a keyword;
``match`` clears a state after reporting it, so each is reported once per text.

The text is never copied when it is ASCII (the lowercasing is folded into the
byte classes); otherwise ``str.lower()`` and the code points are encoded to
UTF-8 on the fly.  The scan holds no Python object and drops the GIL on large texts.
"""

from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, INT32_MAX
from libc.string cimport memcpy, memset

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    int PyUnicode_1BYTE_KIND
    int PyUnicode_2BYTE_KIND

ctypedef fused ucs_t:  # the three PEP 393 kinds: Py_UCS1, Py_UCS2, Py_UCS4
    uint8_t
    uint16_t
    uint32_t

# texts at least this long (in code points) are scanned without the GIL
cdef enum:
    NOGIL_MIN = 65536


cdef struct Scan:
    const int32_t* delta       # [nstates * ncls]: next state's offset (state * ncls), ~offset if it has output
    const uint8_t* cls         # byte -> class
    const uint8_t* cls_fold    # byte -> class of its ASCII lowercase
    const int32_t* own_start   # [nstates + 1]: own_tags[own_start[s]:own_start[s + 1]] end at state s
    const int32_t* own_tags
    const int32_t* out_link    # nearest proper suffix state with own tags, or -1
    int32_t ncls
    uint8_t* pending           # per call: 1 while a state's outputs are not reported yet
    uint8_t* found             # per call: 1 per tag with a hit
    Py_ssize_t remaining       # tags still without a hit


cdef inline bint _report(Scan* sc, int32_t state) noexcept nogil:
    """Mark the tags of ``state`` and its output links; True when every tag has a hit."""
    cdef int32_t j, tag
    while state >= 0 and sc.pending[state]:
        sc.pending[state] = 0
        for j in range(sc.own_start[state], sc.own_start[state + 1]):
            tag = sc.own_tags[j]
            if not sc.found[tag]:
                sc.found[tag] = 1
                sc.remaining -= 1
        state = sc.out_link[state]
    return sc.remaining == 0


cdef inline int32_t _step(Scan* sc, int32_t off, uint8_t cls) noexcept nogil:
    """One byte class from offset ``off``: the next offset, or -1 when every tag has a hit."""
    cdef int32_t nxt = sc.delta[off + cls]
    if nxt >= 0:
        return nxt
    nxt = ~nxt
    if _report(sc, nxt // sc.ncls):
        return -1
    return nxt


cdef void _scan_ascii(Scan* sc, const uint8_t* data, Py_ssize_t n, const uint8_t* cls) noexcept nogil:
    cdef Py_ssize_t i
    cdef int32_t off = 0
    for i in range(n):
        off = _step(sc, off, cls[data[i]])
        if off < 0:
            return


cdef void _scan_ucs(Scan* sc, const ucs_t* data, Py_ssize_t n) noexcept nogil:
    """Code points of a lowercased text, fed to the automaton as UTF-8 (surrogates as surrogatepass)."""
    cdef Py_ssize_t i
    cdef uint32_t cp
    cdef int32_t off = 0
    cdef const uint8_t* cls = sc.cls
    for i in range(n):
        cp = data[i]
        if cp < 0x80:
            off = _step(sc, off, cls[cp])
        elif cp < 0x800:
            off = _step(sc, off, cls[0xC0 | (cp >> 6)])
            if off >= 0:
                off = _step(sc, off, cls[0x80 | (cp & 0x3F)])
        elif cp < 0x10000:
            off = _step(sc, off, cls[0xE0 | (cp >> 12)])
            if off >= 0:
                off = _step(sc, off, cls[0x80 | ((cp >> 6) & 0x3F)])
            if off >= 0:
                off = _step(sc, off, cls[0x80 | (cp & 0x3F)])
        else:
            off = _step(sc, off, cls[0xF0 | (cp >> 18)])
            if off >= 0:
                off = _step(sc, off, cls[0x80 | ((cp >> 12) & 0x3F)])
            if off >= 0:
                off = _step(sc, off, cls[0x80 | ((cp >> 6) & 0x3F)])
            if off >= 0:
                off = _step(sc, off, cls[0x80 | (cp & 0x3F)])
        if off < 0:
            return


cdef class KeywordMatcher:
    """``KeywordMatcher({tag: [keywords]}).match(text) -> [tags with a hit]``."""

    cdef list _names          # the tags that can match, in order; tag ids index this list
    cdef int32_t _nstates
    cdef int32_t _ncls
    cdef int32_t* _delta
    cdef int32_t* _own_start
    cdef int32_t* _own_tags
    cdef int32_t* _out_link
    cdef uint8_t* _has_out
    cdef uint8_t _cls[256]
    cdef uint8_t _cls_fold[256]

    def __cinit__(self, tags):
        self._names = []
        self._nstates = 0
        self._delta = self._own_start = self._own_tags = self._out_link = NULL
        self._has_out = NULL
        cdef list keywords = []   # (utf-8 bytes, tag id)
        cdef bytes kb
        seen = set()
        for tag, words in tags.items():
            tid = len(self._names)
            added = False
            for k in words:
                if not k:
                    continue
                kb = k.lower().encode("utf-8", "surrogatepass")
                if (kb, tid) not in seen:
                    seen.add((kb, tid))
                    keywords.append((kb, tid))
                added = True
            if added:
                self._names.append(tag)
        self._build(keywords)

    cdef void _build(self, list keywords) except *:
        cdef Py_ssize_t total = 1, b, c
        cdef int32_t ncls = 1, nstates = 1, s, u, v, f, i, j, head
        cdef bytes kb
        cdef const unsigned char* p
        memset(self._cls, 0, 256)
        for kb, _ in keywords:
            total += len(kb)
            p = kb
            for b in range(len(kb)):
                if self._cls[p[b]] == 0:
                    self._cls[p[b]] = ncls
                    ncls += 1
        # ncls <= 244 fits a byte: UTF-8 never uses 0xC0, 0xC1 or 0xF5 to 0xFF
        for b in range(256):
            self._cls_fold[b] = self._cls[b + 32 if 65 <= b <= 90 else b]
        if total * ncls > INT32_MAX:
            raise ValueError("too many keywords for one matcher")
        self._ncls = ncls
        # the trie: goto[s * ncls + c], -1 where there is no edge; the tags ending at each state
        cdef int32_t* goto = <int32_t*>PyMem_Malloc(total * ncls * sizeof(int32_t))
        cdef int32_t* fail = <int32_t*>PyMem_Malloc(total * sizeof(int32_t))
        cdef int32_t* queue = <int32_t*>PyMem_Malloc(total * sizeof(int32_t))
        if goto is NULL or fail is NULL or queue is NULL:
            PyMem_Free(goto); PyMem_Free(fail); PyMem_Free(queue)
            raise MemoryError()
        try:
            for i in range(total * ncls):
                goto[i] = -1
            own = [[] for _ in range(total)]
            for kb, tid in keywords:
                p = kb
                s = 0
                for b in range(len(kb)):
                    c = self._cls[p[b]]
                    if goto[s * ncls + c] < 0:
                        goto[s * ncls + c] = nstates
                        nstates += 1
                    s = goto[s * ncls + c]
                if tid not in own[s]:
                    own[s].append(tid)
            self._nstates = nstates
            self._delta = <int32_t*>PyMem_Malloc(nstates * ncls * sizeof(int32_t))
            self._own_start = <int32_t*>PyMem_Malloc((nstates + 1) * sizeof(int32_t))
            self._out_link = <int32_t*>PyMem_Malloc(nstates * sizeof(int32_t))
            self._has_out = <uint8_t*>PyMem_Malloc(nstates * sizeof(uint8_t))
            n_own = sum(len(own[s]) for s in range(nstates))
            self._own_tags = <int32_t*>PyMem_Malloc(max(n_own, 1) * sizeof(int32_t))
            if (self._delta is NULL or self._own_start is NULL or self._out_link is NULL
                    or self._has_out is NULL or self._own_tags is NULL):
                raise MemoryError()
            j = 0
            for s in range(nstates):
                self._own_start[s] = j
                for tid in own[s]:
                    self._own_tags[j] = tid
                    j += 1
            self._own_start[nstates] = j
            # breadth first: failure links, the DFA's missing edges, output links
            fail[0] = 0
            self._out_link[0] = -1
            head = 0
            i = 0  # queue tail
            for c in range(ncls):
                v = goto[c]
                if v > 0:
                    fail[v] = 0
                    self._out_link[v] = -1
                    self._delta[c] = v
                    queue[i] = v
                    i += 1
                else:
                    self._delta[c] = 0
            while head < i:
                u = queue[head]
                head += 1
                for c in range(ncls):
                    v = goto[u * ncls + c]
                    if v > 0:
                        f = self._delta[fail[u] * ncls + c]
                        fail[v] = f
                        self._out_link[v] = f if self._own_start[f + 1] > self._own_start[f] else self._out_link[f]
                        self._delta[u * ncls + c] = v
                        queue[i] = v
                        i += 1
                    else:
                        self._delta[u * ncls + c] = self._delta[fail[u] * ncls + c]
            for s in range(nstates):
                self._has_out[s] = self._own_start[s + 1] > self._own_start[s] or self._out_link[s] >= 0
            # pre-multiplied offsets, inverted when the target state has output
            for i in range(nstates * ncls):
                v = self._delta[i]
                self._delta[i] = ~(v * ncls) if self._has_out[v] else v * ncls
        finally:
            PyMem_Free(goto)
            PyMem_Free(fail)
            PyMem_Free(queue)

    def __dealloc__(self):
        PyMem_Free(self._delta)
        PyMem_Free(self._own_start)
        PyMem_Free(self._own_tags)
        PyMem_Free(self._out_link)
        PyMem_Free(self._has_out)

    def match(self, str text not None):
        cdef Py_ssize_t ntags = len(self._names)
        if ntags == 0:
            return []
        cdef Scan sc
        cdef uint8_t* work = <uint8_t*>PyMem_Malloc(self._nstates + ntags)
        if work is NULL:
            raise MemoryError()
        memcpy(work, self._has_out, self._nstates)
        memset(work + self._nstates, 0, ntags)
        sc.delta = self._delta
        sc.cls = self._cls
        sc.cls_fold = self._cls_fold
        sc.own_start = self._own_start
        sc.own_tags = self._own_tags
        sc.out_link = self._out_link
        sc.ncls = self._ncls
        sc.pending = work
        sc.found = work + self._nstates
        sc.remaining = ntags
        cdef str lowered = text
        cdef const uint8_t* cls = self._cls_fold  # ASCII: lowercase while scanning, no copy
        if not PyUnicode_IS_ASCII(text):
            lowered = text.lower()
            cls = self._cls
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(lowered)
        cdef void* data = PyUnicode_DATA(lowered)
        cdef int kind = PyUnicode_KIND(lowered)
        cdef bint ascii = PyUnicode_IS_ASCII(lowered)
        try:
            if n >= NOGIL_MIN:
                with nogil:
                    _dispatch(&sc, data, n, kind, ascii, cls)
            else:
                _dispatch(&sc, data, n, kind, ascii, cls)
            if sc.remaining == 0:
                return list(self._names)
            return [self._names[i] for i in range(ntags) if sc.found[i]]
        finally:
            PyMem_Free(work)


cdef inline void _dispatch(Scan* sc, void* data, Py_ssize_t n, int kind, bint ascii,
                           const uint8_t* cls) noexcept nogil:
    if ascii:
        _scan_ascii(sc, <const uint8_t*>data, n, cls)
    elif kind == PyUnicode_1BYTE_KIND:
        _scan_ucs(sc, <const uint8_t*>data, n)
    elif kind == PyUnicode_2BYTE_KIND:
        _scan_ucs(sc, <const uint16_t*>data, n)
    else:
        _scan_ucs(sc, <const uint32_t*>data, n)
