# Types for the compiled build of _shape_py.py (Cython pure-Python mode): every spec is an
# extension type whose check() is a C-level call through the vtable; the source stays one.
import cython

cdef class Spec:
    cdef public frozenset types
    cdef public str expects
    cpdef check(self, object value)

cdef class Types(Spec):
    cpdef check(self, object value)

cdef class Obj(Spec):
    cdef public dict fields
    cdef public tuple required
    @cython.locals(spec=Spec, obj=dict)
    cpdef check(self, object value)

cdef class Arr(Spec):
    cdef public Spec item
    cdef public Py_ssize_t min_items
    @cython.locals(i=Py_ssize_t, values=list)
    cpdef check(self, object value)

cdef class Either(Spec):
    cdef public tuple specs
    cdef public dict by_type
    @cython.locals(spec=Spec)
    cpdef check(self, object value)

cdef class Text(Spec):
    cdef public bint non_empty
    cpdef check(self, object value)

cdef class OneOf(Spec):
    cdef public frozenset choices
    cdef public tuple order
    cpdef check(self, object value)

cdef class Tagged(Spec):
    cdef public str tag
    cdef public dict cases
    cdef public object default
    @cython.locals(spec=Spec)
    cpdef check(self, object value)

cdef bint COMPILED

@cython.locals(obj=dict, items=list)
cdef bint _walk(object node, int budget) except -1
