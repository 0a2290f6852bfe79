"""Plain templates (text and ``{{ name }}`` only) are joined without Jinja2's per-render
context (issue 25): what they render, and how they fail, must be Jinja2's."""

from __future__ import annotations

from typing import Any

import pytest

from chainfleet.errors import InvalidRequest
from chainfleet.pipeline.templates import _PLAIN, compile_template, render

CONTEXT: dict[str, Any] = {
    "topic": "the sea",
    "draft": {"title": "Tides", "points": [1, None, 2.5]},
    "count": 3,
    "nothing": None,
    "flag": True,
    "text": "  spaced\n",
    "unicode": "naïve 漢字",
}


@pytest.mark.parametrize(
    "source",
    [
        "Write about {{ topic }}.",
        "Edit this:\n{{ draft }}\n",
        "{{ count }}{{nothing}} {{ flag }}|{{- text -}}|",
        "{{ unicode }}",
        "no variables at all\n\n",
        "",
    ],
)
def test_a_plain_template_renders_as_jinja_renders_it(source: str) -> None:
    for trusted in (False, True):
        template = compile_template(source, trusted=trusted)
        assert template in _PLAIN  # the fast path is the one taken
        assert render(template, CONTEXT, field="prompt") == template.render(CONTEXT)


@pytest.mark.parametrize(
    "source",
    [
        "{{ draft.title }}",
        "{{ topic | upper }}",
        "{% if flag %}yes{% endif %}",
        "{{ range }}",
        "{{ count + 1 }}",
        "{% for p in draft.points %}{{ p }},{% endfor %}",
    ],
)
def test_other_templates_are_left_to_jinja(source: str) -> None:
    template = compile_template(source)
    assert template not in _PLAIN
    assert render(template, CONTEXT, field="prompt") == template.render(CONTEXT)


def test_a_missing_variable_in_a_plain_template_fails_as_jinja_says() -> None:
    template = compile_template("Write about {{ topik }}.")
    assert template in _PLAIN
    with pytest.raises(InvalidRequest, match=r"prompt template: 'topik' is undefined"):
        render(template, CONTEXT, field="prompt", stage="write")


def test_a_value_whose_str_fails_fails_only_that_item() -> None:
    class Broken:
        def __str__(self) -> str:
            raise ValueError("no text")

    template = compile_template("{{ topic }}")
    with pytest.raises(InvalidRequest, match="ValueError: no text"):
        render(template, {"topic": Broken()}, field="prompt")
