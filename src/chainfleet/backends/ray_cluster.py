"""Joining a Ray cluster, or starting a one-machine Ray node that listens on 127.0.0.1 only.

Left to itself, ``ray.init()`` replaces a loopback node address with the machine's routable
address (``services.resolve_ip_for_localhost``), and Ray's gRPC servers (GCS, raylet, object
manager, core workers), the dashboard agent and the runtime-env agent then listen on it. Two
settings keep a node local, and :func:`start_local_node` applies both:

- ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in the environment *before* ``ray`` is imported: Ray
  reads it at import (``ray_constants.ENABLE_RAY_CLUSTER``) and, when false, takes the loopback
  address as the node's address instead of looking up the routable one. The Ray processes this
  driver starts inherit the variable.
- ``_node_ip_address="127.0.0.1"`` and ``include_dashboard=False`` for ``ray.init``: every server
  then binds the node address, 127.0.0.1.

``tests/e2e/test_ray_backend.py`` checks every port the Ray processes listen on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from chainfleet.backends.ray_reaper import start_reaper
from chainfleet.errors import ConfigError

__all__ = ["LOOPBACK_ENV", "RayConnection", "connect", "import_ray"]

#: the environment that keeps a Ray node started here on loopback (see the module docstring)
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def import_ray(*, loopback: bool) -> Any:
    """Import ``ray`` (with ``loopback``: after setting :data:`LOOPBACK_ENV`), or explain how to
    install it."""
    if loopback:
        for key, value in LOOPBACK_ENV.items():
            os.environ.setdefault(key, value)
        if "ray" in sys.modules and not _loopback_constants():
            raise ConfigError(
                "ray was imported before chainfleet could keep its node on 127.0.0.1; set "
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in the environment, or give --address",
                where="--backend ray",
            )
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "the Ray backend needs Ray: pip install 'chainfleet[ray]'", where="--backend ray"
        ) from exc
    return ray


def _loopback_constants() -> bool:
    from ray._private import ray_constants  # already imported: this only reads a value

    return not ray_constants.ENABLE_RAY_CLUSTER


@dataclass
class RayConnection:
    """This process's connection to Ray; ``owned`` when chainfleet started (and so stops) it."""

    ray: Any
    owned: bool
    address: str | None
    #: with a node started here: the watcher that ends it if this process is killed
    reaper: Any = None

    def cpus(self) -> float:
        return float(self.ray.cluster_resources().get("CPU", 1.0))

    def close(self) -> None:
        if self.owned:
            self.ray.shutdown()
        if self.reaper is not None:  # end of its pipe: it reaps what is left, then exits
            self.reaper.stdin.close()
            self.reaper.wait(timeout=10)


def connect(address: str | None, *, num_cpus: int | None = None) -> RayConnection:
    """Join the cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:10001``), the one
    in ``RAY_ADDRESS`` (what ``ray job submit`` sets), or else start a local node on 127.0.0.1.

    A process already connected (``ray.init`` done by the caller) keeps its connection.
    """
    given = address or os.environ.get("RAY_ADDRESS")
    ray = import_ray(loopback=given is None or _is_loopback(given))
    if ray.is_initialized():
        return RayConnection(ray=ray, owned=False, address=given)
    options: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    try:
        with _quiet_start():
            if given is None:
                ray.init(
                    address="local",
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                    **options,
                )
            else:
                ray.init(address=given, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot reach the Ray cluster: {exc}", where=f"--address {given}") from exc
    # a node started here goes with this process, a kill -9 included (see ray_reaper)
    reaper = start_reaper() if given is None else None
    return RayConnection(ray=ray, owned=True, address=given, reaper=reaper)


@contextlib.contextmanager
def _quiet_start() -> Iterator[None]:
    """Ray's own warnings while it starts, kept off the user's terminal: "SIGTERM handler is
    not set because current thread is not the main thread" (chainfleet handles the signals
    itself) and the notice that token authentication is on (the node listens on 127.0.0.1
    only). Its errors still show, and so do its warnings once the run is under way."""
    logger = logging.getLogger("ray")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _is_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "::1", "[::1]")
