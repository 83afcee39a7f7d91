"""The scorer's thresholds, in one place, each with where its value comes from.

Cosine values are for all-MiniLM-L6-v2 (normalized embeddings). Their source of record is
``reference/waste-methods.md`` §1.2 (MRPC / STS-B / QQP measurements); our own labelled set
``data/calibration.jsonl`` re-checks them in CI (``bench/calibrate.py``, ``docs/calibration.md``).
Another embedding model needs its own calibration before these numbers mean anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

__all__ = ("ScorerConfig", "config_fingerprint")


@dataclass(frozen=True, slots=True)
class ScorerConfig:
    # -- pipeline ------------------------------------------------------------------------------
    #: Decide the plainly lexical cases without embeddings: a summary/back-reference whose words
    #: (after the cue) repeat an earlier segment in order, and two answers to the same request that
    #: differ only in a few non-number, non-negation words. Off = embed them like the rest (the
    #: reference pass the benchmark compares against to show the findings do not change).
    lexical_shortcuts: bool = True
    # -- unused -------------------------------------------------------------------------------
    #: A segment is used when this share of its word 3-grams appears in the result (alignment).
    use_lexical: float = 0.5
    #: ... or when its best cosine against the result's segments reaches this (paraphrased use).
    #: Recall-oriented: STS-B best-F1 point 0.76; a false match only *hides* waste.
    use_cosine: float = 0.75
    #: Share of a segment's content words that one result segment must contain before the
    #: segment is embedded for paraphrase coverage (below it, no paraphrase is plausible).
    use_paraphrase_min_overlap: float = 0.3
    #: A truncated output whose text is this much in the result counts as used, not failed.
    truncated_used_share: float = 0.5
    #: An earlier output below this lexical use share counts as discarded when re-asked.
    retry_unused_share: float = 0.2
    # -- redundant: repetition --------------------------------------------------------------
    #: Exact / near-exact repeats count only for segments at least this long (§1.2 a, rule c).
    repeat_min_words: int = 8
    #: ... or for consecutive repeated segments totalling this many words (a repeated paragraph).
    repeat_block_words: int = 12
    #: Restatement: summary/back-reference/closing segment vs an earlier one (§1.2 a, rules a-b).
    restate_cosine: float = 0.85
    #: Lexical prefilter before embedding a restatement pair (content-word overlap coefficient).
    restate_prefilter: float = 0.3
    #: ... and for a closing paragraph without a cue word (most closings share topic words).
    restate_closing_prefilter: float = 0.6
    #: Embedding-only near-duplicates inside one output: `possible` tier only (~30 % precision in-domain).
    near_dup_cosine: float = 0.90
    #: Content-word Jaccard a pair needs before it is embedded (pairs at cos ≥ 0.90 share most words).
    near_dup_prefilter: float = 0.45
    #: Two list items this similar lexically are parallel items ("left"/"right"), not repeats.
    parallel_item_jaccard: float = 0.6
    #: Degenerate loops: a word period repeated at least this many times.
    loop_min_repeats: int = 3
    loop_min_words: int = 15
    # -- redundant: echo / filler ----------------------------------------------------------
    #: Share of a segment's word 5-grams found in the prompt for a verbatim echo.
    echo_ngram_share: float = 0.8
    #: Opening restatement: cosine of the first segment with the prompt (§1.2 c).
    echo_cosine: float = 0.85
    #: Above this share of echoed 5-grams overall the task transforms the input (edit, translate).
    echo_transform_share: float = 0.5
    filler_tier: str = "possible"
    #: A first/last segment recurring in this many outputs of one function is boilerplate.
    filler_min_calls: int = 5
    filler_min_share: float = 0.2
    # -- duplicates ----------------------------------------------------------------------------
    dup_window_s: float = 7 * 86400.0
    #: Prompt cosine for a semantic duplicate request (QQP: 0.965 for 90 % precision on prompts alone).
    dup_prompt_cosine: float = 0.95
    #: Responses must agree too: cosine of the two responses (or equal parsed JSON).
    dup_response_cosine: float = 0.90
    #: `possible` duplicate requests: prompt cosine in [this, dup_prompt_cosine) with agreeing responses.
    dup_possible_prompt_cosine: float = 0.85
    #: Inverted-index prefilter (content-word Jaccard) before embedding two prompts.
    dup_prefilter_jaccard: float = 0.4
    dup_max_candidates: int = 5
    # -- failed --------------------------------------------------------------------------------
    #: A text refusal counts only when the reply is this short, or the refusal leads it.
    refusal_max_words: int = 60
    #: Cosine to refusal exemplars for an embedding-only refusal (`possible`).
    refusal_cosine: float = 0.8


def config_fingerprint(config: ScorerConfig, version: int, model: str | None) -> str:
    """16 hex digits naming what decides a call's findings: scorer version, every threshold, the model.

    Stored per scored call (``wasteaudit_calls.scorer_config``): calls whose fingerprint differs
    from the current scorer's were scored under other settings and are worth a ``--rescore``.
    """
    from wasteaudit.scoring.lexical import digest

    payload = json.dumps({"version": version, "config": asdict(config), "model": model or "rules-only"}, sort_keys=True)
    return digest(payload, 8)
