# Types for the compiled build of _decode_py.py (Cython pure-Python mode): the
# decoders become extension types with C-level attributes; the source stays one.

cdef class SSEStreamDecoder:
    cdef public object provider
    cdef object _sse
    cpdef list feed(self, bytes chunk)
    cpdef list flush(self)
    cdef void _event(self, bytes data, list out) except *


cdef class OpenAIStreamDecoder(SSEStreamDecoder):
    cdef bint _started
    cdef set _tools
    cdef public bint done


cdef class AnthropicStreamDecoder(SSEStreamDecoder):
    cdef object _usage
    cdef dict _blocks
    cdef int _tools


cdef class OllamaStreamDecoder:
    cdef public object provider
    cdef bytes _buf
    cdef bint _started
    cdef int _tools
    cpdef list feed(self, bytes chunk)
    cpdef list flush(self)
    cdef void _line(self, bytes line, list out) except *
