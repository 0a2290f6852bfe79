"""Reading what providers say about waiting: Retry-After and the rate-limit headers.

The formats met in the wild, all handled here:

- ``retry-after-ms: 1234`` (OpenAI, Azure);
- ``retry-after: 7`` (seconds) or ``retry-after: Wed, 21 Oct 2026 07:28:00 GMT`` (an HTTP date);
- OpenAI's ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, where reset is a Go
  duration: ``"1s"``, ``"6m0s"``, ``"120ms"``, ``"1h2m3.5s"``;
- Anthropic's ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``, where reset is
  an RFC 3339 timestamp (``2026-11-29T11:00:03Z``);
- the text of an error message: ``"Please try again in 3.89s."`` or ``"... in 120ms"``.

Gateways spell the same things their own way, and are read too:

- LiteLLM's proxy forwards the provider's headers with an ``llm_provider-`` prefix
  (``llm_provider-retry-after``, ``llm_provider-retry-after-ms``,
  ``llm_provider-x-ratelimit-remaining-requests`` ...): its 429 may carry nothing else;
- Azure OpenAI (and Portkey, which passes it on) sends ``x-ms-retry-after-ms``, and ``-1`` in
  a limit header it does not know (read as "not said");
- OpenRouter's 429 carries ``X-RateLimit-Reset``, the instant (epoch milliseconds) its window
  reopens, besides ``Retry-After``.

Every function takes ``now`` (epoch seconds) where a date must become a wait, so tests need no
real clock. Hand-written because no maintained library parses this set of provider headers.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

__all__ = [
    "KEEP_PREFIXES",
    "RateLimitInfo",
    "keep_headers",
    "parse_duration",
    "parse_rate_limits",
    "parse_retry_after",
    "parse_try_again",
    "retry_after_from",
]

_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_TRY_AGAIN = re.compile(
    r"try again in\s+((?:\d+(?:\.\d+)?(?:h|ms|m|s))+|\d+(?:\.\d+)?\s*(?:seconds?|secs?|s|ms)?)\b",
    re.IGNORECASE,
)


def parse_duration(text: str) -> float | None:
    """Seconds from a Go duration (``"6m0s"``, ``"120ms"``) or a plain number of seconds."""
    text = text.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _GO_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(number) * _UNIT[unit] for number, unit in parts)


def _parse_instant(text: str, now: float) -> float | None:
    """Seconds from ``now`` until an HTTP date or RFC 3339 timestamp (0 if it has passed)."""
    text = text.strip()
    when: datetime | None = None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


#: milliseconds headers, most specific first (OpenAI/Azure, Azure/Portkey, LiteLLM)
_RETRY_MS = ("retry-after-ms", "x-ms-retry-after-ms", "llm_provider-retry-after-ms")
#: seconds or an HTTP date (the standard, LiteLLM's forwarded copy)
_RETRY_S = ("retry-after", "llm_provider-retry-after")


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """The server's requested wait in seconds: a milliseconds header (``retry-after-ms``,
    ``x-ms-retry-after-ms``, ``llm_provider-retry-after-ms``), else ``retry-after`` (or
    LiteLLM's ``llm_provider-retry-after``) in seconds or as an HTTP date, else OpenRouter's
    ``x-ratelimit-reset`` instant."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in _RETRY_MS:
        ms = lowered.get(name)
        if ms is not None:
            try:
                return max(0.0, float(ms) / 1000)
            except ValueError:
                pass
    for name in _RETRY_S:
        value = lowered.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            wait = _parse_instant(value, now)
            if wait is not None:
                return wait
    return _reset_instant(lowered.get("x-ratelimit-reset"), now)


def _reset_instant(value: str | None, now: float) -> float | None:
    """OpenRouter's ``X-RateLimit-Reset``: an epoch instant in milliseconds (or seconds); a
    small number is taken as seconds to wait, as some gateways send it."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return _parse_instant(value, now)
    if number > 1e11:  # epoch milliseconds
        return max(0.0, number / 1000 - now)
    if number > 1e9:  # epoch seconds
        return max(0.0, number - now)
    return max(0.0, number)


def parse_try_again(message: str) -> float | None:
    """The wait in an error message such as ``"Please try again in 3.89s."``."""
    match = _TRY_AGAIN.search(message)
    if not match:
        return None
    text = match.group(1).replace(" ", "").lower()
    for word, unit in (("seconds", "s"), ("second", "s"), ("secs", "s"), ("sec", "s")):
        text = text.replace(word, unit)
    return parse_duration(text if text[-1].isalpha() else text + "s")


@dataclass(frozen=True, kw_only=True)
class RateLimitInfo:
    """What a response said about the limits: each field None when not given."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None

    @property
    def empty(self) -> bool:
        return all(v is None for v in vars(self).values())


def _int(value: str | None) -> int | None:
    """A count from a header; None when absent, unreadable or negative (Azure's ``-1``)."""
    if value is None:
        return None
    try:
        number = int(float(value))
    except ValueError:
        return None
    return number if number >= 0 else None


def parse_rate_limits(headers: Mapping[str, str], now: float) -> RateLimitInfo:
    """The rate-limit headers of an OpenAI-style or Anthropic-style response (or LiteLLM's
    ``llm_provider-`` copies of them, when the proxy sent no unprefixed ones)."""
    h = {k.lower(): v for k, v in headers.items()}
    for key, value in list(h.items()):
        if key.startswith("llm_provider-"):
            h.setdefault(key.removeprefix("llm_provider-"), value)
    if any(k.startswith("anthropic-ratelimit-") for k in h):

        def reset(kind: str) -> float | None:
            value = h.get(f"anthropic-ratelimit-{kind}-reset")
            return _parse_instant(value, now) if value else None

        return RateLimitInfo(
            limit_requests=_int(h.get("anthropic-ratelimit-requests-limit")),
            remaining_requests=_int(h.get("anthropic-ratelimit-requests-remaining")),
            reset_requests=reset("requests"),
            limit_tokens=_int(h.get("anthropic-ratelimit-tokens-limit")),
            remaining_tokens=_int(h.get("anthropic-ratelimit-tokens-remaining")),
            reset_tokens=reset("tokens"),
        )

    def duration(name: str) -> float | None:
        value = h.get(name)
        return parse_duration(value) if value else None

    return RateLimitInfo(
        limit_requests=_int(h.get("x-ratelimit-limit-requests")),
        remaining_requests=_int(h.get("x-ratelimit-remaining-requests")),
        reset_requests=duration("x-ratelimit-reset-requests"),
        limit_tokens=_int(h.get("x-ratelimit-limit-tokens")),
        remaining_tokens=_int(h.get("x-ratelimit-remaining-tokens")),
        reset_tokens=duration("x-ratelimit-reset-tokens"),
    )


def retry_after_from(headers: Mapping[str, str], message: str, now: float) -> float | None:
    """The wait a 429 asked for: headers first, then the message text; None if it said nothing."""
    wait = parse_retry_after(headers, now)
    if wait is None:
        wait = parse_try_again(message)
    return wait


#: the response headers worth keeping on a ``Completion`` (the rest are dropped)
KEEP_PREFIXES = (
    "x-ratelimit-",
    "anthropic-ratelimit-",
    "retry-after",
    "x-ms-retry-after-ms",
    "llm_provider-retry-after",
    "llm_provider-x-ratelimit-",
    "llm_provider-anthropic-ratelimit-",
    "request-id",
    "x-request-id",
)


def keep_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers of :data:`KEEP_PREFIXES`, their names lower-cased."""
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith(KEEP_PREFIXES)}
