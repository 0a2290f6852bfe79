"""chainfleet: run LLM agent chains over many inputs at once.

Example::

    from chainfleet import Pipeline, run

    report = run(Pipeline.from_yaml("examples/content.yaml"), "examples/topics.txt", concurrency=5)
    print(report.items_succeeded, f"{report.time_saved_pct:.0f}% saved")
"""

import sys as _sys

if _sys.argv and _sys.argv[0].endswith("chainfleet"):  # the command: Ctrl-C while importing is quiet
    from .signals import quiet_while_starting as _quiet

    _quiet()

from importlib.metadata import PackageNotFoundError, version  # noqa: E402

from .clock import Clock, SystemClock, VirtualClock
from .compare import CompareReport, run_compare
from .errors import (
    AuthFailed,
    CallError,
    ChainfleetError,
    ConfigError,
    ConnectionFailed,
    ContentFiltered,
    FatalError,
    InputError,
    InvalidOutput,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    PermanentError,
    PipelineError,
    QuotaExhausted,
    RateLimited,
    RetryableError,
    ServerError,
    Timeout,
)
from .inputs import InputSource, Item, items_from, open_input
from .pipeline import Pipeline, Stage
from .providers import Completion, CompletionRequest, Provider
from .quality import Quality, assess
from .report import RunReport
from .retry import RetryPolicy
from .runner import Runner, arun, run

try:
    __version__ = version("chainfleet")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AuthFailed",
    "CallError",
    "ChainfleetError",
    "Clock",
    "CompareReport",
    "Completion",
    "CompletionRequest",
    "ConfigError",
    "ConnectionFailed",
    "ContentFiltered",
    "FatalError",
    "InputError",
    "InputSource",
    "InvalidOutput",
    "InvalidRequest",
    "Item",
    "ModelNotFound",
    "Overloaded",
    "PermanentError",
    "Pipeline",
    "PipelineError",
    "Provider",
    "Quality",
    "QuotaExhausted",
    "RateLimited",
    "RetryPolicy",
    "RetryableError",
    "RunReport",
    "Runner",
    "ServerError",
    "Stage",
    "SystemClock",
    "Timeout",
    "VirtualClock",
    "__version__",
    "arun",
    "assess",
    "items_from",
    "open_input",
    "run",
    "run_compare",
]
