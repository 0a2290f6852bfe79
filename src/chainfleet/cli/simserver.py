"""``chainfleet sim-server``: the simulated model over HTTP, in the OpenAI and Anthropic formats."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from chainfleet.cli.group import cli, config_errors
from chainfleet.errors import ConfigError

_RATE = click.FloatRange(0, 1)


@cli.command("sim-server", short_help="Serve the simulated model over the OpenAI and Anthropic APIs.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to listen on; 0 picks a free one.",
)
@click.option(
    "--rpm", type=click.IntRange(min=1), metavar="N", help="Requests per minute [default: unlimited]."
)
@click.option(
    "--tpm", type=click.IntRange(min=1), metavar="N", help="Tokens per minute [default: unlimited]."
)
@click.option(
    "--window",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Strict limits: at most rpm/60 x S requests in any S seconds and rpm in any minute "
    "(sliding windows, no burst carried over) [default: a token bucket].",
)
@click.option(
    "--bucket-seconds",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Each limit a token bucket holding S seconds' worth (refilled continuously), whose "
    "remaining headers give its level, as providers' own limiters do [default: a minute's worth].",
)
@click.option(
    "--latency",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="S",
    show_default=True,
    help="Seconds per call.",
)
@click.option(
    "--jitter",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="S",
    show_default=True,
    help="Up to S more.",
)
@click.option("--error-rate", type=_RATE, default=0.0, metavar="F", help="Share of calls answered 500.")
@click.option(
    "--invalid-output-rate",
    type=_RATE,
    default=0.0,
    metavar="F",
    help="Share of structured replies (response_format, tools) that break their schema.",
)
@click.option(
    "--overload-rate",
    type=_RATE,
    default=0.0,
    metavar="F",
    help="Share answered 503 (OpenAI) / 529 (Anthropic).",
)
@click.option(
    "--slow-rate", type=_RATE, default=0.0, metavar="F", help="Share that wait --slow-seconds first."
)
@click.option(
    "--slow-seconds",
    type=click.FloatRange(min=0),
    default=30.0,
    metavar="S",
    show_default=True,
    help="How long a slow call waits.",
)
@click.option(
    "--drop-rate", type=_RATE, default=0.0, metavar="F", help="Share whose connection is closed unanswered."
)
@click.option(
    "--malformed-rate", type=_RATE, default=0.0, metavar="F", help="Share answered 200 with broken JSON."
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    metavar="N",
    help="Above N concurrent calls, answer 503 busy.",
)
@click.option(
    "--slots",
    type=click.IntRange(min=1),
    metavar="N",
    help="Queueing mode: serve N at once, the rest wait in line (as llama.cpp, Ollama).",
)
@click.option(
    "--quota-tokens",
    type=click.IntRange(min=0),
    metavar="N",
    help="Answer 'insufficient quota' once N tokens are served.",
)
@click.option(
    "--api-key", "api_keys", multiple=True, metavar="KEY", help="Accept only this key (repeatable)."
)
@click.option("--model", "models", multiple=True, metavar="NAME", help="Accept only this model (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the text and the fault draws.")
@click.option(
    "--batch-delay",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    metavar="S",
    help="Seconds a batch job takes (OpenAI /v1/batches, Anthropic /v1/messages/batches).",
)
@click.option(
    "--batch-error-rate", type=_RATE, default=0.0, metavar="F", help="Share of batched requests errored."
)
@click.option(
    "--batch-expire-rate", type=_RATE, default=0.0, metavar="F", help="Share of batched requests expired."
)
@click.option(
    "--batch-fail-rate", type=_RATE, default=0.0, metavar="F", help="Share of whole batch jobs failed."
)
@click.option("--no-batch-api", is_flag=True, help="No batch routes (404), like a server without them.")
@config_errors
def sim_server_command(host: str, port: int, **options: Any) -> None:
    """Serve chainfleet's simulated model on POST /v1/chat/completions (OpenAI) and
    POST /v1/messages (Anthropic), with your tier's rate limits and the faults you choose, so a
    batch can be rehearsed offline: no key, no bill, same retries and 429s. Runs until Ctrl-C.

    Stats: GET /sim/stats. Change settings live: POST /sim/config with a JSON object.

    \b
    Examples:
      chainfleet sim-server
      # rehearse a batch against a 500 rpm / 200k tpm tier with 2% server errors:
      chainfleet sim-server --rpm 500 --tpm 200000 --latency 1.5 --jitter 1 --error-rate 0.02
      OPENAI_BASE_URL=http://127.0.0.1:8765/v1 OPENAI_API_KEY=sim \\
        chainfleet run pipeline.yaml -i topics.txt --model openai:gpt-4o-mini
      chainfleet sim-server --port 0 --drop-rate 0.05 --slow-rate 0.05 --slow-seconds 120
      # a local model server with 4 slots and a queue (latency grows, throughput does not):
      chainfleet sim-server --slots 4 --latency 0.5
      # a strict provider: 1,200 requests/min, at most 20 in any second
      chainfleet sim-server --rpm 1200 --window 1
      # a provider's own limiter: a bucket of about a second (remaining says little of others)
      chainfleet sim-server --rpm 1200 --bucket-seconds 1
    """
    from pydantic import ValidationError

    from chainfleet.sim.batch import BatchSimSettings
    from chainfleet.sim.server import run_server
    from chainfleet.sim.settings import SimServerSettings

    batch = BatchSimSettings(
        enabled=not options.pop("no_batch_api"),
        delay=options.pop("batch_delay"),
        error_rate=options.pop("batch_error_rate"),
        expire_rate=options.pop("batch_expire_rate"),
        fail_rate=options.pop("batch_fail_rate"),
    )
    try:
        settings = SimServerSettings(**options)
    except ValidationError as exc:
        raise ConfigError("; ".join(str(e["msg"]) for e in exc.errors())) from None

    def ready(url: str) -> None:
        key = "YOUR_KEY" if settings.api_keys else "sim"
        click.echo(
            f"chainfleet sim-server listening on {url} "
            "(OpenAI: /v1/chat/completions, Anthropic: /v1/messages)"
        )
        click.echo(
            f"point chainfleet at it: OPENAI_BASE_URL={url}/v1 OPENAI_API_KEY={key} chainfleet run ...  "
            f"or  ANTHROPIC_BASE_URL={url} ANTHROPIC_API_KEY={key} chainfleet run ..."
        )
        sys.stdout.flush()

    try:
        stats = run_server(settings, host, port, ready=ready, batch=batch)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from None
    click.echo(
        f"sim-server stopped. calls: {stats['calls']}, answered: {stats['ok']}, "
        f"rate-limited (429): {stats['rate_limited']}"
    )
