"""What a chain is: a pipeline of stages, the settings it runs with, and every check made on it
before a model is called.

The public names are re-exported here; the modules behind them, lowest first:

- :mod:`~chainfleet.pipeline.settings`: the simulated model, named endpoints, limits, prices,
  batch mode; :func:`parse_model` splits ``PROVIDER:MODEL``;
- :mod:`~chainfleet.pipeline.templates`: the Jinja2 environments templates compile in;
- :mod:`~chainfleet.pipeline.imports`: a user's ``module:attr`` objects, found beside the file;
- :mod:`~chainfleet.pipeline.contracts`: output schemas (:class:`Contract`);
- :mod:`~chainfleet.pipeline.gates`: quality checks on a stage's output;
- :mod:`~chainfleet.pipeline.review_rules`: when a person reviews an output (:class:`ReviewRule`);
- :mod:`~chainfleet.pipeline.routes`: several targets (keys, providers) under one model name;
- :mod:`~chainfleet.pipeline.stage`: one step (:class:`Stage`);
- :mod:`~chainfleet.pipeline.explain`: a problem as one line naming file, line, stage and field;
- :mod:`~chainfleet.pipeline.yamlsafe`: loading YAML within limits;
- :mod:`~chainfleet.pipeline.spec`: the whole chain (:class:`Pipeline`), from YAML or Python.

Example::

    from chainfleet.pipeline import Pipeline, Stage

    pipeline = Pipeline(input="topic", stages=[Stage(name="research", prompt="Research {{ topic }}.")])
"""

from chainfleet.pipeline.contracts import Contract
from chainfleet.pipeline.review_rules import ReviewRule
from chainfleet.pipeline.routes import RouteSettings, RouteTarget
from chainfleet.pipeline.settings import (
    BatchSettings,
    ModelLimits,
    PriceSettings,
    ProviderSettings,
    SimSettings,
    parse_model,
)
from chainfleet.pipeline.spec import Pipeline
from chainfleet.pipeline.stage import Gate, Stage, ToolFn

__all__ = [
    "BatchSettings",
    "Contract",
    "Gate",
    "ModelLimits",
    "Pipeline",
    "PriceSettings",
    "ProviderSettings",
    "ReviewRule",
    "RouteSettings",
    "RouteTarget",
    "SimSettings",
    "Stage",
    "ToolFn",
    "parse_model",
]
