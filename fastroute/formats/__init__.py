"""One module per dialect: parse and render requests, responses and streams.

Each module has ``NAME``, ``check_request``, ``parse_request``, ``passthrough``,
``render_request``, ``parse_response``, ``render_response``, ``StreamDecoder``
(upstream bytes -> canonical events), ``StreamRenderer`` (events -> client
bytes), ``StreamTap`` (reads a passed-through stream on the side),
``error_body`` and ``render_stream_error``.
"""
