"""A run: which item runs when, and the Python API around it.

- :mod:`~chainfleet.runner.core`: :class:`Runner` (lazy admission, the cap on chains in flight,
  retry passes, stopping, sessions, item records); :mod:`~chainfleet.runner.budget` stops
  admission before a run would overspend;
- :mod:`~chainfleet.runner.api`: :func:`run` and :func:`arun`, and every check made before the
  first call;
- :mod:`~chainfleet.runner.compare`: one at a time against N in flight, side by side;
  :mod:`~chainfleet.runner.demo`: the classic three-topic demo on the simulated model.
"""
