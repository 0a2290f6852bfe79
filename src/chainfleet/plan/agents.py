"""How many model turns ``chainfleet plan`` counts for an agent stage (``tools:``) an item.

An agent's turns are not known before it runs: the model decides when to stop calling tools.
The plan says what it assumes, per stage, in this order:

- ``--agent-turns N`` when given (the user's own measure, e.g. ``compare``'s turns per item);
- on the simulated model, what the sim will do: ``sim: {tool_turns: N}`` or a
  ``[[sim:tool_turns=N]]`` in the stage's prompt is N tool turns and the answer, N + 1 turns;
  without either the sim takes 1 to 3 tool turns by the prompt, 3 turns on average;
- on a real model, 3 turns (two tool turns and the answer, the sim's average);

each capped at the stage's ``max_turns``. A turn is planned as a plain call (its latency and
tokens); the time tools take between turns is not counted (tools are assumed quick beside a
model turn, and free). In batch mode every turn is one round through the
provider's batch queue (a turn needs the tool results of the one before), so an agent stage of
3 turns takes 3 batch round trips where a plain stage takes one.
"""

from __future__ import annotations

import re

from chainfleet.pipeline import Pipeline, Stage

__all__ = ["DEFAULT_TURNS", "expected_turns"]

#: turns assumed for an agent on a real model, or on the sim told nothing: 2 tool turns + the answer
DEFAULT_TURNS = 3
_TRIGGER = re.compile(r"\[\[sim:tool_turns=(\d+)\]\]")


def expected_turns(pipeline: Pipeline, stage: Stage, told: int | None = None) -> tuple[int, str]:
    """The model turns an item of agent ``stage`` is planned with, and why (for the plan's
    assumptions line)."""
    if told is not None:
        turns, why = told, "--agent-turns"
    elif pipeline.model_for(stage) == "sim":
        found = _TRIGGER.search(stage.prompt or "")
        tool_turns = pipeline.sim.tool_turns
        if tool_turns is None and found:
            tool_turns = int(found.group(1))
        if tool_turns is None:
            turns, why = DEFAULT_TURNS, "the sim's 1-3 tool turns by prompt: 2 on average, then the answer"
        else:
            turns, why = tool_turns + 1, f"the sim's {tool_turns} tool turns, then the answer"
    else:
        turns, why = DEFAULT_TURNS, "assumed: 2 tool turns and the answer (--agent-turns to change)"
    if turns > stage.max_turns:
        return stage.max_turns, f"{why}, capped at max_turns {stage.max_turns}"
    return turns, why
