"""Apportioning billed output tokens to choices and segments so every total reconciles exactly.

The provider's usage is the billing truth; the scorer never re-tokenizes to count billed
tokens. Text lengths only decide *shares*: a largest-remainder (Hamilton) split gives integer
parts that always add up to the billed total, which is what lets the ledger promise that waste
never exceeds what was paid for.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ("apportion", "estimate_tokens", "estimate_chars")


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights``; the parts sum to ``total``.

    Largest remainder: each part gets the floor of its quota, the leftover units go to the
    largest fractional remainders (ties to the earlier index, so the split is deterministic).
    All-zero weights split evenly.
    """
    n = len(weights)
    if n == 0:
        return []
    total = max(0, int(total))
    clean = [w if w > 0 else 0.0 for w in weights]
    mass = float(sum(clean))
    if mass <= 0:
        clean = [1.0] * n
        mass = float(n)
    quotas = [total * w / mass for w in clean]
    parts = [int(q) for q in quotas]
    left = total - sum(parts)
    if left:
        order = sorted(range(n), key=lambda i: (-(quotas[i] - parts[i]), i))
        for i in order[:left]:
            parts[i] += 1
    return parts


def estimate_tokens(text: str | None) -> int:
    """A rough token count (~4 characters per token) for when the provider reported none.

    Only used where usage is missing or for text we hold only part of; findings built on it
    say so in their evidence (``tokens_source: estimated``).
    """
    if not text:
        return 0
    return max(1, round(len(text) / 4))


def estimate_chars(chars: int) -> int:
    """:func:`estimate_tokens` for a text of ``chars`` characters."""
    return max(1, round(chars / 4)) if chars > 0 else 0
