"""Streams (``stream=True``) passed through as they arrive, and kept whole for the journal.

A streamed answer (server-sent events, in any of the three formats) goes to the caller chunk
by chunk while the gateway reads it: :func:`pass_through` hands the caller an
``httpx.Response`` at once, whose body (:class:`QueueStream`) yields each chunk as it comes
from the provider, and keeps every chunk so that, at the end, the whole stream is journaled
(a run that goes again replays it as the same stream) and its ``usage`` events settle the
tokens. Once a chunk has gone to the caller the call cannot be tried again: a stream cut in
the middle is :class:`StreamCut` (the caller's read fails; its item may run again).

The helpers for any answer the caller gets live here too: :func:`kept` (the headers a replayed
answer carries), :func:`complete` (an answer read whole) and :func:`handed` (the provider's
own answer, read whole, passed on).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import httpx2 as httpx

from chainfleet.errors import CallError, PermanentError
from chainfleet.limits.headers import keep_headers

__all__ = ["QueueStream", "StreamCut", "complete", "handed", "kept", "pass_through"]

#: response headers a replayed answer needs besides those :func:`keep_headers` keeps
_CARRIED = ("content-type",)


class StreamCut(PermanentError):
    """A stream that broke after some of it reached the caller: it cannot be tried again."""

    kind = "connection_failed"


class QueueStream(httpx.AsyncByteStream):
    """A response body fed chunk by chunk from a queue (None ends it; an exception is raised
    to the reader)."""

    def __init__(self, queue: asyncio.Queue[bytes | Exception | None]) -> None:
        self.queue = queue

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self.queue.get()
            if chunk is None:
                return
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk


async def pass_through(
    response: httpx.Response,
    head: asyncio.Future[httpx.Response],
    request: httpx.Request,
    cut: Callable[[CallError], None],
    name: str,
) -> bytes:
    """Give the caller ``response`` as it arrives (through ``head``) and return all of it.

    A failure while reading raises :class:`StreamCut`; ``cut`` is told first, so the caller's
    item knows the kind before its read fails."""
    queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue()
    head.set_result(
        httpx.Response(
            response.status_code, headers=kept(response.headers), stream=QueueStream(queue), request=request
        )
    )
    parts: list[bytes] = []
    try:
        async for chunk in response.aiter_bytes():
            parts.append(chunk)
            queue.put_nowait(chunk)
    except httpx.HTTPError as exc:
        error = StreamCut(f"{name}: the stream broke after {len(parts)} chunks ({type(exc).__name__})")
        cut(error)
        queue.put_nowait(httpx.ReadError(str(error), request=request))
        raise error from exc
    finally:
        await response.aclose()
    queue.put_nowait(None)
    return b"".join(parts)


def kept(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers an answer the caller gets carries: its type, request id and rate-limit
    headers (never a content-encoding or length: the body is decoded, and may be streamed)."""
    found = keep_headers(headers)
    for name in _CARRIED:
        if name in headers:
            found[name] = headers[name]
    return found


def complete(
    status: int, headers: Mapping[str, str], content: bytes, request: httpx.Request
) -> httpx.Response:
    """A whole answer the caller reads as if it came from the provider."""
    return httpx.Response(status, headers=dict(headers), content=content, request=request)


def handed(response: httpx.Response, headers: Mapping[str, str], request: httpx.Request) -> httpx.Response:
    """The provider's answer, already read whole (``aread``), handed to the caller as it is:
    what :func:`complete` would build from it (the :func:`kept` headers and the decoded body's
    length), without making a second response and decoding its body again."""
    response.headers = httpx.Headers({**headers, "content-length": str(len(response.content))})
    response.request = request
    return response
