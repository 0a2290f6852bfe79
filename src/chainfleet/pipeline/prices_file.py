"""``--prices FILE``: a prices table shared by several pipelines (a team's, kept up to date).

The file is YAML (JSON is YAML too) in the shape of a pipeline's ``prices:`` block, at the top
or under a ``prices:`` key: US dollars per million tokens, by ``provider:model`` or bare model
name::

    prices:
      openai:gpt-5: {input: 1.25, output: 10.00}
      claude-sonnet-4-5: {input: 3.00, output: 15.00}

It overrides the built-in table; a pipeline's own ``prices:`` overrides it. Every problem is one
``PipelineError`` naming the file and the entry.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from chainfleet.errors import PipelineError
from chainfleet.pipeline.settings import PriceSettings
from chainfleet.pipeline.yamlsafe import load_limited
from chainfleet.redact import clip

__all__ = ["load_prices"]


def load_prices(path: str | os.PathLike[str]) -> dict[str, tuple[float, float]]:
    """``{model: (input, output)}`` from a prices file, checked; ``PipelineError`` naming it."""
    path = Path(path)
    try:
        data, _ = load_limited(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise PipelineError(f"cannot read the prices file: {reason}", where=str(path)) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise PipelineError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", where=where) from exc
    if isinstance(data, dict) and set(data) == {"prices"}:
        data = data["prices"]
    if not isinstance(data, dict) or not data:
        raise PipelineError(
            "a prices file is a mapping of models to {input: USD, output: USD} per million tokens",
            where=str(path),
        )
    prices: dict[str, tuple[float, float]] = {}
    for model, entry in data.items():
        try:
            price = PriceSettings.model_validate(entry)
        except ValidationError as exc:
            problems = (f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
            problem = "; ".join(problems)
            raise PipelineError(f"price of {clip(str(model), 80)!r}: {problem}", where=str(path)) from exc
        prices[str(model)] = (price.input, price.output)
    return prices
