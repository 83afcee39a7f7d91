"""A run's quality ``q`` in [0, 1], from the signals attached to it (DESIGN §4).

Signals: explicit scores (``wasteaudit.score``), feedback arriving later by run id, validators
(``@audit(validate=...)``, stored as a score named ``validation``), the run's own success or
failure, and the optional LLM judge (``wasteaudit.judge``; its scores are ordinary scores whose
``source`` says ``judge:<model>``).

Rule, in order:

1. a run that raised (status ``failed``) or whose output a validator rejected has ``q = 0``;
2. else its score named ``quality`` (the mean, if several were sent);
3. else the mean of all its scores;
4. else ``q`` is unknown (``None``): the run counts in the quality *coverage* denominator only.
"""

from __future__ import annotations

import math

__all__ = ("QUALITY_SCORE", "VALIDATION_SCORE", "run_quality", "run_failed")

QUALITY_SCORE = "quality"
VALIDATION_SCORE = "validation"


def run_failed(status: str | None, validation: bool | None, validation_score: float | None) -> bool:
    """True when the run raised or a validator rejected its output."""
    if status == "failed" or validation is False:
        return True
    return validation_score is not None and validation_score < 0.5


def run_quality(
    status: str | None,
    validation: bool | None,
    quality_score: float | None,
    mean_score: float | None,
    validation_score: float | None = None,
) -> float | None:
    """The run's ``q`` by the rule in the module docstring (values clamped to [0, 1])."""
    if run_failed(status, validation, validation_score):
        return 0.0
    for value in (quality_score, mean_score):
        if value is not None:
            number = float(value)
            if math.isnan(number):
                continue
            return min(1.0, max(0.0, number))
    return None
