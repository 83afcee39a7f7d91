"""The waste scorer: recorded LLM calls in, a ledger of wasted output tokens out.

Importing this package is light (no numpy, torch or sentence-transformers): the engine and
its detectors are plain Python, and only :mod:`wasteaudit.scoring.embeddings` loads the
embedding model, lazily, when a batch first needs it. ``track_json`` is the app-side helper
that records which fields of a parsed JSON reply were read.

    from wasteaudit.scoring import Scorer
    result = Scorer().score(calls, runs_by_id, scores)
    for finding in result.findings: ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wasteaudit.scoring.findings import CallCoverage, Finding
from wasteaudit.scoring.jsonuse import track_json

#: Bump when a rule or threshold changes what a call scores: findings are keyed by it.
SCORER_VERSION = 1

__all__ = ("SCORER_VERSION", "Finding", "CallCoverage", "Scorer", "ScoreResult", "ScorerConfig", "score_batch", "track_json")

if TYPE_CHECKING:
    from wasteaudit.scoring.engine import Scorer, ScoreResult, score_batch
    from wasteaudit.scoring.settings import ScorerConfig


def __getattr__(name: str) -> Any:
    if name in ("Scorer", "ScoreResult", "score_batch"):
        from wasteaudit.scoring import engine

        return getattr(engine, name)
    if name == "ScorerConfig":
        from wasteaudit.scoring.settings import ScorerConfig

        return ScorerConfig
    raise AttributeError(name)
