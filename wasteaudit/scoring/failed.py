"""Failed output: generations the app paid for and could not use as they were.

Rules, in the ledger's order: ``error`` (the call raised after output was billed),
``refusal`` (refusal field or stop reason, content filter, or a short/leading refusal in the
text), ``truncated`` (the token cap was hit and the text did not make it into the result),
``invalid_output`` (requested JSON / schema / tool arguments that do not parse or validate,
or a user validator that rejected the run), ``discarded_retry`` (the same function asked the
same thing again in the same run and the earlier output was not used). Each labels the whole
output of its choice; when several apply, the first in that order wins and the others are
listed in the evidence.
"""

from __future__ import annotations

import json
import re
from typing import Any

from wasteaudit.scoring import jsontext, schema
from wasteaudit.scoring.context import RunContext
from wasteaudit.scoring.ledger import Candidate, Claim, Deferred
from wasteaudit.scoring.lexical import content_words, jaccard, words
from wasteaudit.scoring.settings import ScorerConfig
from wasteaudit.scoring.texts import ask_hash, last_user_text, message_list, requested_schema, tool_schemas
from wasteaudit.scoring.views import CallView, ChoiceView

__all__ = ("detect_failed", "TRUNCATION_REASONS", "FILTER_REASONS", "text_refusal", "use_share", "REFUSAL_EXEMPLARS")

TRUNCATION_REASONS = frozenset(
    {"length", "max_tokens", "max_output_tokens", "model_context_window_exceeded", "incomplete:max_output_tokens", "MAX_TOKENS"}
)
FILTER_REASONS = frozenset({"content_filter", "incomplete:content_filter", "refusal", "SAFETY", "safety", "RECITATION"})

_REFUSAL = re.compile(
    r"^\W*(?:"
    r"(?:i'?m|i am) (?:so |very |really )?sorry,? (?:but )?(?:i |that )?(?:can(?:'|no)?t|cannot|am unable|won'?t|am not able|must decline)"
    r"|(?:sorry|unfortunately),? (?:but )?i (?:can(?:'|no)?t|cannot|am unable|won'?t|am not able)"
    r"|i apologi[sz]e,? but"
    r"|i (?:can(?:'|no)?t|cannot|won'?t|will not|am unable to|am not able to|'m unable to|'m not able to) "
    r"(?:help|assist|comply|provide|do that|fulfil|answer|create|write|share|engage|generate|give|support|offer|discuss|participate)"
    r"|i must (?:decline|refuse)"
    r"|i'?m afraid (?:i|that) (?:can(?:'|no)?t|cannot)"
    r"|as an ai(?: language model| assistant)?,? i (?:can(?:'|no)?t|cannot|don'?t|do not|am not able|am unable)"
    r"|(?:i'?m|i am) not (?:able|allowed|permitted) to (?:help|assist|provide|do|answer|share|discuss)"
    r"|that'?s not something i can (?:help|assist|do)"
    r")",
    re.IGNORECASE,
)
_REFUSAL_CUE = re.compile(r"\b(?:sorry|can(?:'|no)?t|cannot|unable|won'?t|decline|not able|apologi[sz]e)\b", re.IGNORECASE)

#: Exemplars for the embedding-only refusal check (`possible` tier).
REFUSAL_EXEMPLARS = (
    "I'm sorry, but I can't help with that request.",
    "I cannot provide assistance with this.",
    "Unfortunately I am unable to do what you are asking.",
    "I won't be able to help with that, as it goes against my guidelines.",
)


def text_refusal(text: str, first_segment: str, max_words: int) -> tuple[str | None, str]:
    """('confirmed' | 'possible' | None, reason) for a refusal written in the reply's text."""
    head = first_segment or text[:300]
    if _REFUSAL.search(head.strip()):
        if len(words(text)) <= max_words:
            return "confirmed", "short reply opening with a refusal phrase"
        return "possible", "long reply opening with a refusal phrase (may be a caveat)"
    return None, ""


def use_share(ch: ChoiceView, later: Any = None) -> float:
    """Token-weighted share of a choice's segments found in the result (lexical coverage).

    With ``later`` (outputs of later calls of the same function), a segment that a later call
    also produced is credited to the later call: a retry that regenerates the same opening
    does not make the truncated first attempt "used".
    """
    if not ch.coverage or not ch.segments:
        return 0.0
    total = used = 0
    for seg, cov in zip(ch.segments, ch.coverage):
        tokens = ch.seg_tokens(seg.index)
        total += tokens
        if cov >= 0.5 and not (later and later.coverage(seg) >= 0.5):
            used += tokens
    return used / total if total else 0.0


def detect_failed(view: CallView, ctx: RunContext, cfg: ScorerConfig, embeddings: bool) -> tuple[list[Candidate], list[Deferred]]:
    """Candidates for the failed kind on one call (see module docstring)."""
    rec = view.rec
    out: list[Candidate] = []
    deferred: list[Deferred] = []
    # An abandoned stream also has category "error" (no final finish reason); that is unused, not failed.
    raised = rec.error_type is not None or rec.stream_state == "error" or (rec.finish_category == "error" and rec.stream_state != "abandoned")
    if raised:
        if view.billed > 0:
            out.append(
                Candidate(
                    rec.id, "error", "confirmed", 1.0 if view.tokens_source == "provider" else 0.7,
                    evidence={"reason": "the call raised after output was produced", "error_type": rec.error_type, "stream_state": rec.stream_state},
                )
            )
    for ch in view.choices:
        reasons: list[str] = []
        finish = ch.finish_reason or (rec.finish_category if len(view.choices) == 1 else None)
        # -- refusal
        if ch.choice.refusal:
            out.append(Candidate(rec.id, "refusal", "confirmed", 1.0, ch.index, evidence={"reason": "refusal field set", "finish_reason": ch.finish_reason}))
            reasons.append("refusal")
        elif finish in FILTER_REASONS or rec.finish_category in ("filter", "refusal") and len(view.choices) == 1:
            out.append(Candidate(rec.id, "refusal", "confirmed", 1.0, ch.index, evidence={"reason": "content filter / refusal stop reason", "finish_reason": finish}))
            reasons.append("refusal")
        elif ch.text and view.mode == "full" and not view.json_expected:
            first = ch.segments[0].text if ch.segments else ""
            tier, why = text_refusal(ch.text, first, cfg.refusal_max_words)
            if tier is not None:
                out.append(Candidate(rec.id, "refusal", tier, 0.9 if tier == "confirmed" else 0.5, ch.index, evidence={"reason": why, "text": first[:160]}))
                reasons.append("refusal")
            elif embeddings and len(words(ch.text)) <= cfg.refusal_max_words and _REFUSAL_CUE.search(first or ""):
                deferred.append(_refusal_check(rec.id, ch.index, first, cfg))
        # -- truncated
        if finish in TRUNCATION_REASONS or (finish is None and rec.finish_category == "length"):
            share = use_share(ch, ctx.later_outputs(rec.id) if len(ctx.calls) > 1 else None)
            if share >= cfg.truncated_used_share:
                reasons.append("truncated-but-used")
            else:
                out.append(
                    Candidate(
                        rec.id, "truncated", "confirmed", 0.95 if view.tokens_source == "provider" else 0.75, ch.index,
                        evidence={"reason": "output hit the token cap and was not used", "finish_reason": finish,
                                  "max_tokens": _cap(rec.request_params), "used_share": round(share, 3)},
                    )
                )
                reasons.append("truncated")
        # -- invalid output
        invalid = _invalid(view, ch)
        if invalid is not None:
            out.append(Candidate(rec.id, "invalid_output", "confirmed", 0.95, ch.index, evidence=invalid))
            reasons.append("invalid_output")
        if len(reasons) > 1:
            for cand in out:
                if cand.choice == ch.index:
                    cand.evidence.setdefault("also", [r for r in reasons if r != cand.subkind])
    if ctx.validation_failed and rec.run_id is not None:
        out.append(
            Candidate(rec.id, "invalid_output", "confirmed", 0.9, None, evidence={"reason": "the run's validator rejected its output", "validator": True})
        )
    retry, more = _discarded_retry(view, ctx, cfg, embeddings)
    out.extend(retry)
    deferred.extend(more)
    return out, deferred


def _cap(params: dict[str, Any] | None) -> Any:
    params = params or {}
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        if key in params:
            return params[key]
    return None


def _invalid(view: CallView, ch: ChoiceView) -> dict[str, Any] | None:
    rec = view.rec
    if view.mode != "full":
        return None
    if view.json_expected and ch.text is not None and not ch.choice.refusal:
        ok, value, error = jsontext.parse_json(ch.text)
        if not ok:
            return {"reason": "JSON was requested and the output does not parse", "error": error}
        wanted = requested_schema(rec)
        if wanted is not None:
            errors = schema.validate(value, wanted)
            if errors:
                return {"reason": "the output does not match the requested schema", "errors": errors}
    if ch.tool_calls:
        schemas = tool_schemas(rec)
        for name, args in ch.tool_calls:
            value = args
            if isinstance(args, str):
                try:
                    value = json.loads(args) if args.strip() else {}
                except ValueError as exc:
                    return {"reason": "tool-call arguments do not parse as JSON", "tool": name, "error": str(exc)[:200]}
            if name in schemas and isinstance(value, (dict, list)):
                errors = schema.validate(value, schemas[name])
                if errors:
                    return {"reason": "tool-call arguments do not match the tool's schema", "tool": name, "errors": errors}
    return None


def _refusal_check(call_id: str, index: int, first: str, cfg: ScorerConfig) -> Deferred:
    def resolve(store: Any) -> list[Candidate]:
        best, at = store.max_cos(first, list(REFUSAL_EXEMPLARS))
        if best >= cfg.refusal_cosine:
            return [Candidate(call_id, "refusal", "possible", 0.5, index, evidence={"reason": "reply resembles a refusal", "cosine": round(best, 3), "exemplar": at})]
        return []

    return Deferred(call_id, [first, *REFUSAL_EXEMPLARS], resolve, claim=Claim("refusal", "possible", 0.5, index))


def _discarded_retry(view: CallView, ctx: RunContext, cfg: ScorerConfig, embeddings: bool) -> tuple[list[Candidate], list[Deferred]]:
    """The same function asked the same thing again later in this run, and this output was not used."""
    rec = view.rec
    if rec.run_id is None or view.billed <= 0 or rec.finish_category == "tool":
        return [], []
    later = [v for v in ctx.calls if v.rec.started_at >= rec.started_at and v.id != rec.id and v.rec.function == rec.function]
    if not later:
        return [], []
    later_out = ctx.later_outputs(rec.id)
    share = max((use_share(ch, later_out) for ch in view.choices), default=0.0)
    if share >= cfg.retry_unused_share:
        return [], []
    observable = ctx.use.observable
    tier = "confirmed" if observable else "possible"
    base = {"use_observable": observable, "used_share": round(share, 3)}
    mine = ask_hash(rec)
    for other in later:
        if ask_hash(other.rec) == mine:
            evidence = {"reason": "the same request was sent again in this run and this output was not used", "retried_by": other.id, "match": "exact", **base}
            return [Candidate(rec.id, "discarded_retry", tier, 0.9 if observable else 0.5, None, evidence=evidence)], []
    if view.mode != "full" or not embeddings:
        return [], []
    mine_text = last_user_text(rec)
    if not isinstance(mine_text, str) or len(words(mine_text)) < 4:
        return [], []
    mine_words = content_words(words(mine_text))
    pairs: list[tuple[str, str]] = []
    system = [t for r, t in message_list(rec.input_messages) if r == "system"]
    for other in later:
        text = last_user_text(other.rec)
        if not isinstance(text, str) or text == mine_text:
            continue
        if [t for r, t in message_list(other.rec.input_messages) if r == "system"] != system:
            continue
        if jaccard(mine_words, content_words(words(text))) >= 0.5:
            pairs.append((other.id, text))
    if not pairs:
        return [], []

    def resolve(store: Any) -> list[Candidate]:
        for other_id, text in pairs:
            cos = store.cos(mine_text, text)
            if cos >= cfg.dup_prompt_cosine:
                evidence = {"reason": "a near-identical request was sent again in this run and this output was not used", "retried_by": other_id,
                            "match": "semantic", "prompt_cosine": round(cos, 3), **base}
                return [Candidate(rec.id, "discarded_retry", "possible", 0.5, None, evidence=evidence)]
        return []

    return [], [Deferred(rec.id, [mine_text] + [t for _, t in pairs], resolve, claim=Claim("discarded_retry", "possible", 0.5))]
