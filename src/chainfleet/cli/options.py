"""Options that more than one command takes, written once so their flags and help agree.

Example::

    @cli.command("compare")
    @input_option
    def compare_command(input_file: str) -> None: ...
"""

from __future__ import annotations

from typing import Any

import click

__all__ = ["input_option", "otel_options", "otel_settings"]

#: ``--input FILE`` / ``-i FILE``, required, passed as ``input_file``
input_option = click.option(
    "--input",
    "-i",
    "input_file",
    required=True,
    metavar="FILE",
    help="Items: .txt (a line each), .jsonl (an object each) or .csv (a header row).",
)


def otel_options(fn: Any) -> Any:
    """``--otel``, ``--otel-endpoint``, ``--otel-sample`` and ``--otel-content``, passed as
    ``otel``, ``otel_endpoint``, ``otel_sample`` and ``otel_content``; :func:`otel_settings`
    checks them into the run's saved options."""
    for option in reversed(
        (
            click.option(
                "--otel",
                is_flag=True,
                help="Export OpenTelemetry traces (one per item) and GenAI metrics over OTLP/HTTP "
                "[default: on when OTEL_EXPORTER_OTLP_ENDPOINT is set].",
            ),
            click.option(
                "--otel-endpoint",
                metavar="URL",
                help="The OTLP/HTTP receiver [default: $OTEL_EXPORTER_OTLP_ENDPOINT, else "
                "http://localhost:4318]; Phoenix: http://127.0.0.1:6006.",
            ),
            click.option(
                "--otel-sample",
                type=float,
                metavar="SHARE",
                help="Export this share of the items' traces, e.g. 0.01 [default: 1]; failed items always.",
            ),
            click.option("--otel-content", is_flag=True, help="Put prompt and reply text into the spans."),
        )
    ):
        fn = option(fn)
    return fn


def otel_settings(
    otel: bool, otel_endpoint: str | None, otel_sample: float | None, otel_content: bool
) -> dict[str, Any]:
    """The tracing options as the run keeps them; a bad one is a ``ConfigError`` (one line, exit 2)."""
    from chainfleet.trace import check_endpoint, check_sample

    if otel_sample is not None:
        check_sample(otel_sample)
    if otel_endpoint is not None:
        check_endpoint(otel_endpoint)
    return {
        "otel": otel or otel_endpoint is not None,
        "otel_endpoint": otel_endpoint,
        "otel_sample": 1.0 if otel_sample is None else otel_sample,
        "otel_content": otel_content,
    }
