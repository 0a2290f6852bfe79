"""Routes: one name for several targets (keys, providers), and how calls are shared among them.

A user at scale rarely has one model on one key: two keys of one provider, a second provider as
a fallback. A ``routes:`` block names an ordered list of targets; wherever a model is named (a
stage's ``model:``, the pipeline's, ``--model``), a route's name may stand instead::

    routes:
      fast:
        policy: spill            # fallback (default) | spill | split
        targets:
          - model: openai:gpt-4o-mini
            api_key_env: OPENAI_KEY_A
          - model: openai:gpt-4o-mini
            api_key_env: OPENAI_KEY_B
            rpm: 500
          - anthropic:claude-haiku-4-5      # a bare model string is a target too
    model: fast

A target is a ``provider:model`` (or a named endpoint's ``name:model``) with, optionally, its
own key variable, base URL and told limits: two keys of one provider are two targets, each
with its own limiter. The policies (how :mod:`chainfleet.chain.routes` decides, call by call):

- ``fallback``: every call goes to the first target in service; the next takes over while one
  is out (a streak of connection failures or 5xx, a refused key, an unknown model, a quota);
- ``spill``: a call goes to the first target that can admit it within ``spill_after`` seconds,
  as its limiter (learned from headers, or told) sees it: work moves before a 429, not after;
- ``split``: calls are shared by ``weights`` (one per target).

``pin: item`` (the default) keeps an item's calls of one stage on one target (retries, repairs)
unless that target fails; ``pin: none`` decides every call afresh.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["RouteSettings", "RouteTarget"]


class RouteTarget(BaseModel):
    """One place a route's calls can go: a model, with its own key, URL and told limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    #: the variable holding this target's key (else the provider's usual one)
    api_key_env: str | None = None
    base_url: str | None = None
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)

    @property
    def own_endpoint(self) -> bool:
        """Whether the target needs a provider of its own (its own key or URL)."""
        return self.api_key_env is not None or self.base_url is not None


class RouteSettings(BaseModel):
    """A named, ordered list of targets and the policy that shares calls among them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: list[RouteTarget] = Field(min_length=1)
    policy: Literal["fallback", "spill", "split"] = "fallback"
    #: ``split``: one weight per target, the shares of calls
    weights: list[float] | None = None
    #: ``item``: an item's calls of one stage stay on one target unless it fails
    pin: Literal["item", "none"] = "item"
    #: ``spill``: a target that cannot admit a call within this many seconds is full
    spill_after: float = Field(1.0, ge=0)
    #: connection failures or 5xx in a row that take a target out of service
    out_after: int = Field(3, ge=1)
    #: seconds an out-of-service target rests before one call probes it again
    probe_after: float = Field(10.0, gt=0)

    @field_validator("targets", mode="before")
    @classmethod
    def _strings_are_targets(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"model": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _check_weights(self) -> RouteSettings:
        if self.weights is None:
            if self.policy == "split":
                raise ValueError("policy split needs weights: one number per target, e.g. [3, 1]")
            return self
        if self.policy != "split":
            raise ValueError(f"weights are for policy split (this route's policy is {self.policy})")
        if len(self.weights) != len(self.targets):
            raise ValueError(
                f"weights has {len(self.weights)} numbers for {len(self.targets)} targets: "
                "give one per target"
            )
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError("weights must be zero or more, and not all zero")
        return self

    def labels(self) -> list[str]:
        """A name per target for reports: its model, with its key variable (or its place in
        the list) when two targets share a model."""
        models = [t.model for t in self.targets]
        labels = []
        for index, target in enumerate(self.targets):
            label = target.model
            if models.count(target.model) > 1:
                label += f" ({target.api_key_env or target.base_url or f'target {index + 1}'})"
            labels.append(label)
        if len(set(labels)) < len(labels):  # same model and same key variable: number them
            labels = [f"{label} #{index + 1}" for index, label in enumerate(labels)]
        return labels
