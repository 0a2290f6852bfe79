"""Where chains run: the one seam between the runner and execution.

The runner keeps everything about *which* chain runs and *when* (lazy admission, the cap on
chains in flight, passes, stopping, the budget); a backend runs one admitted chain's remaining
stages, given the run's :class:`~chainfleet.chain.context.RunContext` (never the runner), and
returns when the chain has finished or failed. Two backends:

- ``local`` (:class:`~chainfleet.backends.local.LocalBackend`): the chain's stages run in this
  process, on this event loop. The default.
- ``ray`` (:class:`~chainfleet.backends.ray_driver.RayBackend`): the stages run in async Ray
  actors spread over a cluster; results stream back to this process, which stays the only writer
  of the run store. Ray is an optional extra (``pip install 'chainfleet[ray]'``), imported only
  when this backend is chosen.

Example::

    report = await arun(pipeline, "topics.txt", backend="ray", out="runs/today")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from chainfleet.backends.local import LocalBackend
from chainfleet.errors import ConfigError

if TYPE_CHECKING:
    from chainfleet.chain.context import RunContext
    from chainfleet.chain.progress import Chain

__all__ = ["BACKENDS", "Backend", "LocalBackend", "backend_for"]

BACKENDS = ("local", "ray")


class Backend(Protocol):
    """How admitted chains are executed. One backend object serves one run."""

    #: "local" or "ray", saved with the run's settings
    name: str

    async def start(self, ctx: RunContext, concurrency: int) -> None:
        """Get ready before the first admission (start or join a cluster, spawn workers);
        ``concurrency`` is the most chains the run will have in flight."""

    async def advance(self, ctx: RunContext, chain: Chain) -> None:
        """Run ``chain``'s remaining stages; record a failure on the chain, never raise one."""

    async def settle(self, ctx: RunContext) -> None:
        """Before the session's numbers are saved: bring into ``ctx`` what the report reads
        and the backend holds elsewhere (the limits the cluster's limiter actors learned)."""

    async def aclose(self) -> None:
        """Release what :meth:`start` took. Safe to call when ``start`` never ran or failed."""


def backend_for(name: str, **options: Any) -> Backend:
    """The backend called ``name``; ``options`` go to the Ray backend (``address``, ``workers``).

    Raises ``ConfigError`` for an unknown name, for options the local backend does not take, and
    (for ``ray``) when Ray is not installed.
    """
    if name == "local":
        given = {key: value for key, value in options.items() if value is not None}
        if given:
            flags = ", ".join(f"--{key.replace('_', '-')}" for key in sorted(given))
            raise ConfigError(f"{flags} only apply with --backend ray", where="--backend")
        return LocalBackend()
    if name == "ray":
        from chainfleet.backends.ray_driver import RayBackend

        return RayBackend(**options)
    raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}", where="--backend")
