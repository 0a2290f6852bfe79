"""The one error tree of chainfleet.

Every error a user can meet is one of these. The tree decides what happens next, so it is
drawn here once::

    ChainfleetError
    ├── ConfigError            bad usage, configuration or input; found before any call; exit 2
    │   ├── PipelineError      a pipeline file or Stage that does not validate
    │   └── InputError         an input file that cannot be read or has a malformed line
    └── CallError              one call for one (item, stage) went wrong
        ├── RetryableError     transient: retried with backoff, then the item fails
        │   ├── RateLimited        429 (carries the server's wait when it gave one)
        │   ├── Overloaded         529, 503
        │   ├── ServerError        other 5xx
        │   ├── Timeout            the call took longer than its timeout
        │   └── ConnectionFailed   reset, refused, dropped
        ├── PermanentError     the item fails now; retrying the same request cannot help
        │   ├── InvalidRequest     400, 422, context too long, one request above tokens/min
        │   ├── ContentFiltered    the provider refused the content
        │   └── InvalidOutput      the output broke the stage's contract (schema, quality gate)
        └── FatalError         the run stops admitting items; completed work is kept
            ├── AuthFailed         401, 403, a missing key
            ├── ModelNotFound      404
            ├── QuotaExhausted     insufficient_quota: no wait will help
            └── EndpointDown       a streak of connection failures: nothing listens there

A ``CallError`` knows the item and stage it happened on once the runner has seen it
(``item_id``, ``stage``). Messages never contain API keys: adapters build them from status codes
and the provider's error text, never from request headers.
"""

from __future__ import annotations

from chainfleet.redact import scrub

__all__ = [
    "AuthFailed",
    "CallError",
    "ChainfleetError",
    "ConfigError",
    "ConnectionFailed",
    "ContentFiltered",
    "EndpointDown",
    "FatalError",
    "InputError",
    "InvalidOutput",
    "InvalidRequest",
    "ModelNotFound",
    "Overloaded",
    "PermanentError",
    "PipelineError",
    "QuotaExhausted",
    "UnpricedModel",
    "RateLimited",
    "RetryableError",
    "ServerError",
    "Timeout",
]


class ChainfleetError(Exception):
    """Base of every error chainfleet raises on purpose."""


class ConfigError(ChainfleetError):
    """Bad usage, configuration or input, found before any model is called (exit code 2).

    ``where`` names the place: a file, a file and line, or a stage and field. Both are
    scrubbed of keys as the error is made (:func:`chainfleet.redact.scrub`).
    """

    def __init__(self, message: str, *, where: str | None = None) -> None:
        # a key written in any field (a stage name, model:, --model ...) is never echoed
        self.where = scrub(where) if where is not None else None
        self.reason = scrub(message)
        #: the other problems found in the same check, each one line, and how many more were
        #: found but not listed (validation reports everything it can in one go)
        self.more: list[ConfigError] = []
        self.left_off = 0
        super().__init__(self.line)

    @property
    def line(self) -> str:
        """This problem alone, on one line."""
        return f"{self.where}: {self.reason}" if self.where else self.reason

    def lines(self) -> list[str]:
        """Every problem, one line each, then "and N more" when some were left off."""
        found = [self.line, *(other.line for other in self.more)]
        return found + ([f"and {self.left_off} more"] if self.left_off else [])

    def __str__(self) -> str:
        return "\n".join(self.lines())

    @classmethod
    def gather(cls, problems: list[ConfigError], *, left_off: int = 0) -> ConfigError:
        """One error that lists ``problems`` (the first carries the others), or raise it.

        >>> error = ConfigError.gather([ConfigError("a", where="f:1"), ConfigError("b", where="f:2")])
        >>> error.lines()
        ['f:1: a', 'f:2: b']
        """
        first = problems[0]
        seen = {first.line, *(other.line for other in first.more)}
        for gathered in problems[1:]:
            for other in (gathered, *gathered.more):  # a gathered error brings its list
                if other.line not in seen:  # one cause found by several checks is said once
                    seen.add(other.line)
                    first.more.append(other)
            gathered.more = []
            first.left_off += gathered.left_off
        first.left_off += left_off
        return first


class PipelineError(ConfigError):
    """A pipeline (a YAML file, a dict, or ``Pipeline(...)``) that does not validate.

    (A ``Stage(...)`` built on its own raises pydantic's ``ValidationError``, a ``ValueError``.)

    ``loc`` is where in the pipeline, e.g. ``("stages", 1, "prompt")``, when known.
    """

    loc: tuple[object, ...] | None = None


class InputError(ConfigError):
    """An input file that cannot be opened, or a line or row in it that cannot be read."""


class CallError(ChainfleetError):
    """One call (an item at a stage) failed. Subclasses say whether a retry can help."""

    #: short machine-readable name written into reports, e.g. ``"rate_limited"``
    kind = "call_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        item_id: str | None = None,
        stage: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.item_id = item_id
        self.stage = stage

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r})"


class RetryableError(CallError):
    """Transient: the same request may succeed later."""

    kind = "retryable"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        item_id: str | None = None,
        stage: str | None = None,
    ) -> None:
        super().__init__(message, status=status, item_id=item_id, stage=stage)
        #: seconds the server asked us to wait, when it said
        self.retry_after = retry_after


class RateLimited(RetryableError):
    kind = "rate_limited"


class Overloaded(RetryableError):
    kind = "overloaded"


class ServerError(RetryableError):
    kind = "server_error"


class Timeout(RetryableError):
    kind = "timeout"


class ConnectionFailed(RetryableError):
    kind = "connection_failed"


class PermanentError(CallError):
    """The item fails now: the same request would fail the same way."""

    kind = "permanent"


class InvalidRequest(PermanentError):
    kind = "invalid_request"


class ContentFiltered(PermanentError):
    kind = "content_filtered"


class InvalidOutput(PermanentError):
    kind = "invalid_output"


class FatalError(CallError):
    """Nothing else will succeed either: the run stops admitting items."""

    kind = "fatal"


class AuthFailed(FatalError):
    kind = "auth_failed"


class ModelNotFound(FatalError):
    kind = "model_not_found"


class QuotaExhausted(FatalError):
    kind = "quota_exhausted"


class UnpricedModel(FatalError):
    """A cost budget (``--max-cost``) is set and the user's own chain called a model with no
    price: the budget cannot hold, so the call is not made and the run stops (exit 2)."""

    kind = "unpriced_model"


class EndpointDown(FatalError):
    """Connections to one endpoint failed again and again, and none succeeded lately (see
    :mod:`chainfleet.limits.health`)."""

    kind = "endpoint_down"
