"""How many tokens a prompt is, before it is sent: what the limiter reserves for a call.

The tokens/min budget is spent before the answer says what a call used, so each call reserves
an estimate (its prompt's tokens plus ``max_tokens``) and the limiter refunds the difference
once the usage is known. For OpenAI models the prompt is counted by tiktoken's encoder for the
model, when tiktoken is installed and has the encoding (it may need to download it once).
Anything else (Anthropic, local models, tiktoken missing or offline) counts about four bytes
of UTF-8 a token.

Example::

    estimate_tokens("a" * 400, model="claude-sonnet-4-5")   # 100: about 4 bytes a token
    estimate_tokens(prompt, model="gpt-4o-mini")             # tiktoken's count, when it has one
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["estimate_tokens"]


def estimate_tokens(text: str, model: str | None = None) -> int:
    """Prompt tokens of ``text``: tiktoken for OpenAI models it knows, else ~4 characters a token."""
    encoder = _encoder(model) if model and _tiktoken_model(model) else None
    if encoder is not None:
        return len(encoder.encode(text))
    return max(1, (len(text.encode("utf-8")) + 3) // 4) if text else 0


@functools.lru_cache(maxsize=64)
def _encoder(model: str) -> Any:
    """tiktoken's encoder for ``model``, or None (not installed, unknown model, or its data
    cannot be downloaded offline): looked up once per model, not per call."""
    try:
        import tiktoken

        return tiktoken.encoding_for_model(model)
    except Exception:
        return None


def _tiktoken_model(model: str) -> bool:
    return model.startswith(("gpt-", "o1", "o3", "o4", "text-embedding", "chatgpt"))
