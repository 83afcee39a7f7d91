"""The scorer's output: one :class:`Finding` per labelled stretch of billed output tokens.

A finding is the unit the ledger, the SQL table ``wasteaudit_findings`` and the report share.
It carries its own reason (``evidence``) so a reader can check the claim without re-running
the scorer: similarities, the matching call id, the rule that fired, and any limitation
(content mode, missing embeddings, estimated token counts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Kind = Literal["failed", "unused", "redundant"]
Tier = Literal["confirmed", "possible"]

#: subkind -> kind (DESIGN §3). The order inside each kind is the tie-break when two
#: whole-output labels of the same kind apply (an error beats a refusal beats a truncation ...).
SUBKINDS: dict[str, str] = {
    "error": "failed",
    "refusal": "failed",
    "truncated": "failed",
    "invalid_output": "failed",
    "discarded_retry": "failed",
    "extra_choice": "unused",
    "abandoned_stream": "unused",
    "not_in_result": "unused",
    "duplicate_call": "redundant",
    "repetition": "redundant",
    "prompt_echo": "redundant",
    "filler": "redundant",
}
KIND_PRIORITY: dict[str, int] = {"failed": 0, "unused": 1, "redundant": 2}
SUBKIND_ORDER: dict[str, int] = {name: i for i, name in enumerate(SUBKINDS)}
TIERS: tuple[str, ...] = ("confirmed", "possible")


@dataclass(slots=True)
class Finding:
    """Tokens of one call labelled with one waste subkind.

    ``segment_start``/``segment_end`` are character offsets into the choice's text (full and
    redacted content modes) or ``None`` when the finding covers the whole output or the text is
    not stored (hashed/none modes; line numbers then go into ``evidence``).
    """

    call_id: str
    run_id: str | None
    kind: str
    subkind: str
    tier: str
    tokens: int
    confidence: float
    choice_index: int | None = None
    segment_start: int | None = None
    segment_end: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class CallCoverage:
    """What could be measured for one call: reports show this instead of pretending zero waste."""

    call_id: str
    run_id: str | None
    billed_output_tokens: int | None
    tokens_source: str  # provider | estimated | missing
    content_mode: str
    use_observable: bool
    embeddings: bool
    gaps: list[str] = field(default_factory=list)
    #: Share of the billed output tokens whose use was judged (0 where use is unknown; ``None``
    #: when the call billed no output). Stored as ``wasteaudit_calls.use_coverage``.
    use_coverage: float | None = None
