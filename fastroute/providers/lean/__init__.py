"""The lean upstream client: keep-alive HTTP/1.1 on the event loop's own transports.

Built for the request path, where aiohttp's client costs ~100 µs of CPU a request
(``benchmarks/test_bench_lean_client.py`` measures the three clients and the floor):

- ``connection.py``: one ``asyncio.Protocol`` per connection, responses parsed by
  ``httptools`` (llhttp); content-length, chunked and read-to-close bodies; a streamed body
  read no faster than it is taken (a bounded buffer, then ``pause_reading``); the read
  timeout as the time waited for the next byte.
- ``pool.py``: the keep-alive connections of one origin (scheme, host, port).
- ``client.py``: :class:`LeanClient`, the :class:`~fastroute.providers.transport.UpstreamClient`
  of ``upstream_client = "lean"``.

Like the other two clients it keeps no cookies, follows no redirect (a ``3xx`` comes back
as it is), takes no proxy from the environment, and maps failures to
:mod:`fastroute.errors`: ``UpstreamUnreachable`` (cannot connect), ``UpstreamTimeout``
(``phase="connect"`` or ``"read"``), ``UpstreamProtocolError`` (closed, cut or broken).
``https`` goes through the loop's TLS (``loop.create_connection(ssl=...)``), verified
against the system's trust store unless a context is given.
"""

from fastroute.providers.lean.client import LeanClient, LeanStream

__all__ = ["LeanClient", "LeanStream"]
