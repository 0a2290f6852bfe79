"""Error messages that never leak a key and never flood the terminal.

- :func:`clip` shortens any value shown in a message to about 200 characters, so a 10 kB
  string (or a 312 MB expanded YAML alias bomb) is one readable line.
- :func:`listed` shows a list of names (a CSV header's columns, an item's fields) the same way:
  each name clipped, the list cut after about 200 characters with a count of the rest.
- :func:`looks_like_key` spots an API key written where a variable name or a URL belongs
  (``api_key_env: "sk-..."``), so the message can say so without echoing it.
- :func:`scrub` takes the keys out of a whole message, whatever field they were written in (a
  stage name, ``input:``, ``model:`` or ``--model``, a schema file, a tool, a price): every
  ``ConfigError`` is scrubbed as it is made, so no such message can echo a key. It hides
  tokens with a known key prefix (``sk-...``, ``xai-...``, ``AIza...``) and any value of an
  environment variable whose name says it holds a secret (``OPENAI_API_KEY``, ``*_TOKEN``), so
  a key pasted where a name belongs is hidden even without a prefix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

__all__ = ["ENV_NAME", "HIDDEN", "clip", "listed", "looks_like_key", "scrub", "shown"]

#: an environment variable's name
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_PREFIX = re.compile(r"(sk|pk|rk|ak|xai|gsk|hf|key|api|tok|ghp|gho|glpat|AIza)[-_]?", re.IGNORECASE)
_TOKENISH = re.compile(r"[A-Za-z0-9_\-+/=.]{20,}")


#: what a message shows in place of a key
HIDDEN = "<key hidden>"
#: a key in running text: a known prefix, then 16 or more key characters (one digit at least)
_PREFIXED_KEY = re.compile(
    r"(?<![A-Za-z0-9])(?:(?:sk|pk|rk|xai|gsk|hf|ghp|gho|ghs|glpat)[-_]|AIza)[A-Za-z0-9_\-]{16,}"
)
#: environment variables whose values are secrets, by their names
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL|AUTH", re.IGNORECASE)
#: a secret shorter than this is too likely to occur in ordinary text to be replaced
_SECRET_MIN = 8


def scrub(text: str) -> str:
    """``text`` with every key in it replaced by ``<key hidden>``: tokens with a key prefix
    (and a digit), and the values of the environment's secret variables.

    >>> scrub("stage 'sk-proj-abc123DEF456ghi789' (stages[0])")
    "stage '<key hidden>' (stages[0])"
    """
    for name, value in os.environ.items():
        if len(value) >= _SECRET_MIN and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, HIDDEN)
    return _PREFIXED_KEY.sub(lambda m: HIDDEN if any(c.isdigit() for c in m[0]) else m[0], text)


def clip(text: object, limit: int = 200) -> str:
    """``str(text)``, cut to ``limit`` characters with a note of how much was left out."""
    value = str(text)
    if len(value) <= limit:
        return value
    return f"{value[:limit]}... ({len(value) - limit:,} more characters)"


def listed(names: Iterable[object], limit: int = 200, *, quote: bool = False) -> str:
    """``names`` joined with commas for a message: each clipped to 40 characters, and the list
    cut once it passes ``limit`` characters, saying how many more there are."""
    shown: list[str] = []
    length = 0
    values = list(names)
    for value in values:
        name = clip(repr(value) if quote else value, 40)
        if shown and length + len(name) > limit:
            return ", ".join(shown) + f", ... ({len(values) - len(shown):,} more)"
        shown.append(name)
        length += len(name) + 2
    return ", ".join(shown)


def looks_like_key(value: str) -> bool:
    """Whether ``value`` looks like a secret rather than a name: one unbroken run of 20 or more
    key characters that is not an upper-case variable name, with a known key prefix (``sk-``,
    ``xai-``, ``AIza`` ...) or mixing letters and digits.

    >>> looks_like_key("sk-proj-abc123DEF456ghi789"), looks_like_key("OPENAI_API_KEY")
    (True, False)
    """
    text = value.strip()
    if not _TOKENISH.fullmatch(text) or (ENV_NAME.fullmatch(text) and text == text.upper()):
        return False
    mixed = any(c.isdigit() for c in text) and any(c.isalpha() for c in text)
    return bool(_KEY_PREFIX.match(text)) or mixed


def shown(value: str, limit: int = 200) -> str:
    """``value`` as a message may show it: repr'd and clipped, or a note when it looks like a key."""
    if looks_like_key(value):
        return "(a value that looks like a key, not shown)"
    return clip(repr(value), limit)
