"""Map an HTTP error from any provider to the most specific chainfleet error.

One table for OpenAI, Anthropic and OpenAI-compatible servers (vLLM, Ollama, llama.cpp), by
status code first and the provider's error code or text second:

======================  ==========================================  =====================
status                  when                                        chainfleet error
======================  ==========================================  =====================
429 (400 at Anthropic)  ``insufficient_quota``, "credit balance"    QuotaExhausted (fatal)
429                     "Request too large" (one request > TPM)     InvalidRequest
429                     otherwise                                   RateLimited (+ wait)
401, 403                                                            AuthFailed (fatal)
402                     billing / spend limit                       QuotaExhausted (fatal)
404                                                                 ModelNotFound (fatal)
400, 422                "Invalid model name", "model not found",    ModelNotFound (fatal)
                        "model ... does not exist" (gateways)
400, 413, 422           content filter                              ContentFiltered
400, 413, 422           otherwise (context too long ...)            InvalidRequest
408                                                                 Timeout
409, other 5xx                                                      ServerError
503, 529                                                            Overloaded
======================  ==========================================  =====================

Messages never carry an API key: :func:`scrub` removes it if a server echoed it back.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from chainfleet.errors import (
    AuthFailed,
    CallError,
    ConnectionFailed,
    ContentFiltered,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    QuotaExhausted,
    RateLimited,
    ServerError,
    Timeout,
)
from chainfleet.limits.headers import retry_after_from

_FILTER_WORDS = ("content_filter", "content filter", "content management policy", "content filtering")
#: how gateways (LiteLLM, OpenRouter, vLLM, Ollama) say with a 400 that the model is unknown
_UNKNOWN_MODEL = re.compile(
    r"invalid model name|model[_ ]not[_ ]found|not a valid model id|unknown model"
    r"|model\b[^.;]{0,120}\b(?:does not exist|not found)",
    re.IGNORECASE,
)


def scrub(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` (and any long prefix of it) replaced by ``***``."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
        if len(secret) >= 12:
            text = text.replace(secret[:12], "***")
    return text


def error_fields(body: Any) -> tuple[str, str | None, str | None]:
    """(message, code, type) from an OpenAI- or Anthropic-shaped error body."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            message = inner.get("message") or ""
            return str(message), _str(inner.get("code")), _str(inner.get("type"))
        if isinstance(inner, str):
            return inner, None, None
    return ("" if body is None else str(body)), None, None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def classify(
    status: int,
    message: str,
    *,
    code: str | None = None,
    kind: str | None = None,
    headers: Mapping[str, str] | None = None,
    provider: str = "provider",
) -> CallError:
    """The chainfleet error for an HTTP ``status`` answered with ``message``."""
    text = f"{provider} {status}: {message}".strip() if message else f"{provider} {status}"
    lowered = f"{message} {code or ''} {kind or ''}".lower()
    if "credit balance is too low" in lowered or "insufficient_quota" in lowered:
        return QuotaExhausted(text, status=status)  # Anthropic says so with a 400
    if status == 429:
        if "exceeded your current quota" in lowered:
            return QuotaExhausted(text, status=status)
        if "request too large" in lowered:
            return InvalidRequest(text, status=status)
        wait = retry_after_from(headers or {}, message, time.time())
        return RateLimited(text, status=status, retry_after=wait)
    if status in (401, 403):
        return AuthFailed(text, status=status)
    if status == 402:
        return QuotaExhausted(text, status=status)
    if status == 404:
        return ModelNotFound(text, status=status)
    if status in (400, 422) and _UNKNOWN_MODEL.search(lowered):
        return ModelNotFound(text, status=status)  # every other item would fail the same way
    if status in (400, 413, 422):
        if any(word in lowered for word in _FILTER_WORDS):
            return ContentFiltered(text, status=status)
        return InvalidRequest(text, status=status)
    if status == 408:
        return Timeout(text, status=status)
    if status in (503, 529):
        wait = retry_after_from(headers or {}, "", time.time())
        return Overloaded(text, status=status, retry_after=wait)
    if status >= 500 or status == 409:
        return ServerError(text, status=status)
    return InvalidRequest(text, status=status)


async def call_sdk(
    sdk: Any, name: str, key: str, make: Callable[[], Awaitable[Any]]
) -> tuple[Any, dict[str, str]]:
    """Make one call through an official SDK's ``with_raw_response`` and parse it; map every
    failure to the error tree. ``sdk`` is the ``openai`` or ``anthropic`` module: both name
    their errors alike (``APITimeoutError`` is a kind of ``APIConnectionError``).

    Returns the parsed response and the raw response headers.
    """
    try:
        raw = await make()
        parsed = raw.parse()
        if inspect.isawaitable(parsed):  # AsyncAPIResponse in recent SDKs
            parsed = await parsed
    except sdk.APITimeoutError as exc:
        raise Timeout(f"{name}: the request timed out") from exc
    except sdk.APIConnectionError as exc:
        raise ConnectionFailed(f"{name}: connection failed: {scrub(str(exc), key)}") from exc
    except sdk.APIStatusError as exc:
        message, code, kind = error_fields(exc.body)
        raise classify(
            exc.status_code,
            scrub(message or exc.message, key),
            code=code,
            kind=kind,
            headers=exc.response.headers,
            provider=name,
        ) from exc
    except ValueError as exc:  # a 200 whose body is not JSON, or not what was asked for
        raise ServerError(f"{name}: malformed response: {type(exc).__name__}") from exc
    return parsed, dict(raw.headers)
