"""``chainfleet plan``: how long and how much a run will take before it starts, online
(:mod:`~chainfleet.plan.online`) and through the batch APIs (:mod:`~chainfleet.plan.batch`)."""
