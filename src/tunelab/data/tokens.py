"""Token counting for length checks and reports.

Until a model's tokenizer is resolved, lengths are whitespace tokens: an
approximation (subword tokenizers give more tokens), and labelled as one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class TokenCounter:
    count: Callable[[str], int]
    label: str


def whitespace_counter() -> TokenCounter:
    return TokenCounter(
        count=lambda text: len(text.split()) if isinstance(text, str) else 0,
        label="whitespace tokens (approximation; no tokenizer)",
    )
