"""Answers on the wire: a :class:`~fastroute.pipeline.StreamAnswer` as BlackSheep's ``StreamedContent``,
stopped when the client goes away, and closed however its response ends.

What the stack does with a stream (read in the installed BlackSheep and in Granian's
``src/asgi/io.rs``):

- BlackSheep's ``send_asgi_response`` sends ``http.response.start``, then calls the content's
  generator function and iterates it.  If it never gets that far (the handler's response is
  replaced, the task ends first), the generator is never created; a pipeline generator never
  started never runs its ``finally``.  So the pipeline's own end does not hang on iteration:
  the stream body here awaits :meth:`StreamAnswer.close` however it ends, and
  :class:`~fastroute.pipeline.Streamed` ends the exchange when an answer is dropped unread.
- Granian's ASGI ``send`` to a connection the client closed returns as if it had sent (it logs
  ``ASGI transport error`` at info level and drops the bytes), so no write ever fails.  The only
  sign of a vanished client is ``http.disconnect`` from ``receive``.  Granian's ``receive()``
  returns a future (``PyFutureAwaitable``: ``add_done_callback``, ``cancel``), so the disconnect
  is heard by a callback on it: no task per stream.  (An ASGI server whose ``receive`` is a
  coroutine gets it wrapped in a task, one per stream.)  When the disconnect comes while the
  stream waits for the upstream, the task serving the response is cancelled, which cancels the
  upstream read; when it comes while a chunk is being sent, the stream stops after that chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from blacksheep import Content, Response, StreamedContent

from fastroute.pipeline import Answer, StreamAnswer


def to_response(answer: Answer | StreamAnswer, receive: Any = None) -> Response:
    if isinstance(answer, StreamAnswer):
        return Response(answer.status, answer.headers,
                        StreamedContent(answer.content_type, StreamBody(answer, receive).chunks))
    return Response(answer.status, answer.headers, Content(answer.content_type, answer.body))


class StreamBody:
    """One streamed response body: the answer's chunks until they end or the client goes, then
    ``answer.close()``, whatever happened."""

    __slots__ = ("answer", "receive", "task", "listening", "gone")

    def __init__(self, answer: StreamAnswer, receive: Any) -> None:
        self.answer = answer
        self.receive = receive
        self.task: asyncio.Task[Any] | None = None
        #: the pending ``receive()``, while the client is listened to
        self.listening: Any = None
        self.gone = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """BlackSheep's data provider (an async generator function)."""
        try:
            if self.receive is not None:
                self.task = asyncio.current_task()
                self._listen()
            async for chunk in self.answer.chunks:
                yield chunk
                if self.gone:
                    return
        except asyncio.CancelledError:
            if not self.gone:
                raise
            self.task.uncancel()  # type: ignore[union-attr]  # ours: the client went away
        finally:
            listening, self.listening = self.listening, None
            if listening is not None:
                listening.cancel()
            await self.answer.close()

    def _listen(self) -> None:
        listening = self.listening = asyncio.ensure_future(self.receive())
        listening.add_done_callback(self._heard)

    def _heard(self, listening: Any) -> None:
        if listening is not self.listening or listening.cancelled():
            return  # the stream is over
        self.listening = None
        if listening.exception() is not None:
            return  # nothing more to hear
        if listening.result().get("type") != "http.disconnect":
            self._listen()  # the end of the request body: listen on
            return
        self.gone = True
        # Waiting for the upstream (the answer's generator is suspended in an await, not at a yield):
        # cancel the wait.  Otherwise a chunk is being sent, and the stream stops after it.
        if getattr(self.answer.chunks, "ag_await", True) is not None:
            self.task.cancel()  # type: ignore[union-attr]
