"""One item through its stages, against a small run context (never the runner).

The modules, lowest first:

- :mod:`~chainfleet.chain.progress`: :class:`Chain`, one item's progress (outputs, next stage,
  error, gate tries, where it waits for a person);
- :mod:`~chainfleet.chain.review`: the run's side of human review (park, take decisions on);
- :mod:`~chainfleet.chain.context`: :class:`RunContext`, what one stage of one item needs;
- :mod:`~chainfleet.chain.calls`: one call made ready and attempted (limiter, retries, the calls
  table, prices);
- :mod:`~chainfleet.chain.batch`: a stage's calls through a provider's batch API instead;
- :mod:`~chainfleet.chain.stage`: :class:`StageExecutor`, one stage for one item (render, call,
  repair, gate, revise, keep) and a chain's remaining stages one after the other.
"""
