"""chainfleet: run LLM agent chains over many inputs at once.

Example::

    from chainfleet import Pipeline, run

    report = run(Pipeline.from_yaml("examples/content.yaml"), "examples/topics.txt", concurrency=5)
    print(report.items_succeeded, f"{report.time_saved_pct:.0f}% saved")
"""

import sys as _sys

if _sys.argv and _sys.argv[0].endswith("chainfleet"):  # the command: Ctrl-C while importing is quiet
    from chainfleet.signals import quiet_while_starting as _quiet

    _quiet()

from importlib.metadata import PackageNotFoundError, version  # noqa: E402

from chainfleet.clock import Clock, SystemClock, VirtualClock
from chainfleet.code import Fleet, ReviewDecision, http_client
from chainfleet.config import RunSettings
from chainfleet.errors import (
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
from chainfleet.inputs import InputSource, Item, items_from, open_input
from chainfleet.limits.retry import RetryPolicy
from chainfleet.pipeline import Pipeline, Stage
from chainfleet.providers import Completion, CompletionRequest, Provider
from chainfleet.report.model import RunReport
from chainfleet.report.quality import Quality, assess
from chainfleet.runner.api import arun, run
from chainfleet.runner.compare import CompareReport, run_compare
from chainfleet.runner.core import Runner

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
    "Fleet",
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
    "ReviewDecision",
    "RunReport",
    "RunSettings",
    "Runner",
    "ServerError",
    "Stage",
    "SystemClock",
    "Timeout",
    "VirtualClock",
    "__version__",
    "arun",
    "assess",
    "http_client",
    "items_from",
    "open_input",
    "run",
    "run_compare",
]
