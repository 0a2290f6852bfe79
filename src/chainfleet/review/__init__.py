"""Human review: items wait in a queue in run.db; a person approves, edits or sends them back.

- :mod:`.rules`: the ``review:`` field of a stage (always, on_gate_fail, {sample: F});
- :mod:`.queue`: the queue and the decisions, atomic in run.db;
- :mod:`.hook`: what the runner calls to park an item and to take decisions on at resume;
- :mod:`.where`: the safe ``--where`` filter; :mod:`.web`: the local web page.
"""

from chainfleet.pipeline.review_rules import ReviewRule
from chainfleet.store.review_queue import AlreadyDecided, Decision, Entry, ReviewError, ReviewQueue

__all__ = ["AlreadyDecided", "Decision", "Entry", "ReviewError", "ReviewQueue", "ReviewRule"]
