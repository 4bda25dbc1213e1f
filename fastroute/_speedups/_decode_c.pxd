# Types for the compiled build of _decode_py.py (Cython pure-Python mode): the
# decoders become extension types with C-level attributes; the source stays one.

cdef class SSEStreamDecoder:
    cdef public object provider
    cdef object _sse
    cdef bint _failed
    cdef bint _ended
    cdef bint _complete
    cpdef list feed(self, bytes chunk)
    cpdef list flush(self)
    cdef void _events(self, list events, list out) except *
    cdef void _fail(self, list out, object error) except *
    cdef void _event(self, bytes data, list out) except *


cdef class OpenAIStreamDecoder(SSEStreamDecoder):
    cdef bint _started
    cdef set _tools
    cdef list _argless
    cdef public bint done


cdef class AnthropicStreamDecoder(SSEStreamDecoder):
    cdef object _usage
    cdef dict _blocks
    cdef dict _argless
    cdef int _tools


cdef class OllamaStreamDecoder:
    cdef public object provider
    cdef bytes _buf
    cdef bint _started
    cdef int _tools
    cdef bint _failed
    cdef bint _ended
    cpdef list feed(self, bytes chunk)
    cpdef list flush(self)
    cdef void _read(self, bytes line, list out) except *
    cdef void _fail(self, list out, object error) except *
    cdef void _line(self, bytes line, list out) except *
