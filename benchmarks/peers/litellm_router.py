"""LiteLLM's Router as a peer in ``benchmarks/routes.py``: one job over two deployments.

The Router is set up as its documentation shows for load balancing: two deployments of one
``model_name`` (``openai/gpt-sim`` at each sim-server's ``/v1`` with that server's key), the
default ``simple-shuffle`` strategy and the default retries (``num_retries`` 2). Variants:

- ``told nothing``: no ``rpm`` on the deployments (what chainfleet is told);
- ``rpm set``: ``rpm`` on each deployment, as the issue asks (``simple-shuffle`` then weighs the
  deployments by it; it does not hold a deployment to it);
- ``rpm set, usage-based-routing-v2``: the strategy whose docs say it routes to the deployment
  with the lowest usage within its rpm/tpm, and refuses locally when every one is full.

The job is the same as chainfleet's: ``chains`` 3-stage chains (research -> write -> edit, each
one ``acompletion`` with ``max_tokens`` 200), ``concurrency`` chains in flight (an
``asyncio.Semaphore``), an item failing when a call raises after the Router's retries.

Offline: ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (no fetch of the price map), and tiktoken's cache
at the ``cl100k_base`` file LiteLLM bundles (LiteLLM points ``TIKTOKEN_CACHE_DIR`` there itself
unless told otherwise). LiteLLM is imported only when this peer runs.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from typing import Any

#: the Router variants measured: (label, rpm on each deployment?, routing strategy)
VARIANTS: tuple[tuple[str, bool, str], ...] = (
    ("told nothing", False, "simple-shuffle"),
    ("rpm set", True, "simple-shuffle"),
    ("rpm set, usage-based-routing-v2", True, "usage-based-routing-v2"),
)

STAGES = (
    ("research", "Research {topic}."),
    ("write", "Write on {topic}: {research}"),
    ("edit", "Edit: {write}"),
)


def missing() -> str | None:
    """None when LiteLLM can be imported here, else how to install it."""
    if importlib.util.find_spec("litellm") is None:
        return "LiteLLM is not installed: pip install litellm (or benchmarks/peers/setup.sh)"
    return None


def version() -> str:
    from importlib.metadata import version as dist_version

    return dist_version("litellm")


def _offline() -> None:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ.setdefault("LITELLM_TELEMETRY", "False")


async def run_router(
    targets: list[tuple[str, str]],
    rpms: tuple[int, ...],
    chains: int,
    concurrency: int,
    *,
    rpm_set: bool,
    strategy: str,
) -> tuple[int, dict[str, Any]]:
    """``chains`` chains through a Router over ``targets`` (base URL with ``/v1``, key): items
    that finished, and the errors of the others (a count per type and one message each)."""
    _offline()
    import litellm
    from litellm import Router

    if hasattr(litellm, "telemetry"):
        litellm.telemetry = False
    litellm.suppress_debug_info = True
    model_list = []
    for (base_url, key), rpm in zip(targets, rpms, strict=True):
        params: dict[str, Any] = {"model": "openai/gpt-sim", "api_base": base_url, "api_key": key}
        if rpm_set:
            params["rpm"] = rpm
        model_list.append({"model_name": "gpt-sim", "litellm_params": params})
    router = Router(model_list=model_list, routing_strategy=strategy)  # type: ignore[arg-type]
    gate = asyncio.Semaphore(concurrency)
    errors: dict[str, int] = {}
    examples: dict[str, str] = {}

    async def chain(topic: str) -> bool:
        context = {"topic": topic}
        async with gate:
            try:
                for name, template in STAGES:
                    reply = await router.acompletion(
                        model="gpt-sim",
                        messages=[{"role": "user", "content": template.format(**context)}],
                        max_tokens=200,
                    )
                    context[name] = reply.choices[0].message.content or ""
            except Exception as error:  # the item fails, as chainfleet's would: count why
                kind = type(error).__name__
                errors[kind] = errors.get(kind, 0) + 1
                examples[kind] = str(error)[:160]
                return False
        return True

    done = await asyncio.gather(*(chain(f"topic {i}") for i in range(chains)))
    diagnosis: dict[str, Any] = {}
    if errors:
        diagnosis = {"errors": errors, "error_examples": examples}
    return sum(done), diagnosis
