"""chainfleet: run LLM agent chains over many inputs at once.

Example::

    from chainfleet import Pipeline, run

    report = run(Pipeline.from_yaml("examples/content.yaml"), "examples/topics.txt", concurrency=5)
    print(report.items_succeeded, f"{report.time_saved_pct:.0f}% saved")

Every public name is imported when first used (:func:`__getattr__`, PEP 562), not when the
package is: ``import chainfleet.cli`` for ``chainfleet --help`` must not load the runner,
pydantic and Jinja2 it will not use (issue 25). ``from chainfleet import run`` works as before.
"""

import sys as _sys

if _sys.argv and _sys.argv[0].endswith("chainfleet"):  # the command: Ctrl-C while importing is quiet
    from chainfleet.signals import quiet_while_starting as _quiet

    _quiet()

import importlib  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

if TYPE_CHECKING:  # what the names are, for type checkers and readers; at run time, _WHERE
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

    __version__: str

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

# where each public name lives, imported on first use
_WHERE = {
    "AuthFailed": "chainfleet.errors",
    "CallError": "chainfleet.errors",
    "ChainfleetError": "chainfleet.errors",
    "Clock": "chainfleet.clock",
    "CompareReport": "chainfleet.runner.compare",
    "Completion": "chainfleet.providers",
    "CompletionRequest": "chainfleet.providers",
    "ConfigError": "chainfleet.errors",
    "ConnectionFailed": "chainfleet.errors",
    "ContentFiltered": "chainfleet.errors",
    "FatalError": "chainfleet.errors",
    "Fleet": "chainfleet.code",
    "InputError": "chainfleet.errors",
    "InputSource": "chainfleet.inputs",
    "InvalidOutput": "chainfleet.errors",
    "InvalidRequest": "chainfleet.errors",
    "Item": "chainfleet.inputs",
    "ModelNotFound": "chainfleet.errors",
    "Overloaded": "chainfleet.errors",
    "PermanentError": "chainfleet.errors",
    "Pipeline": "chainfleet.pipeline",
    "PipelineError": "chainfleet.errors",
    "Provider": "chainfleet.providers",
    "Quality": "chainfleet.report.quality",
    "QuotaExhausted": "chainfleet.errors",
    "RateLimited": "chainfleet.errors",
    "RetryPolicy": "chainfleet.limits.retry",
    "RetryableError": "chainfleet.errors",
    "RunReport": "chainfleet.report.model",
    "RunSettings": "chainfleet.config",
    "ReviewDecision": "chainfleet.code",
    "Runner": "chainfleet.runner.core",
    "ServerError": "chainfleet.errors",
    "Stage": "chainfleet.pipeline",
    "SystemClock": "chainfleet.clock",
    "Timeout": "chainfleet.errors",
    "VirtualClock": "chainfleet.clock",
    "arun": "chainfleet.runner.api",
    "assess": "chainfleet.report.quality",
    "http_client": "chainfleet.code",
    "items_from": "chainfleet.inputs",
    "open_input": "chainfleet.inputs",
    "run": "chainfleet.runner.api",
    "run_compare": "chainfleet.runner.compare",
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use and keep it, so the next use is a plain attribute."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value: Any = version("chainfleet")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            value = "0.0.0"
    elif name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
    else:
        raise AttributeError(f"module 'chainfleet' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
