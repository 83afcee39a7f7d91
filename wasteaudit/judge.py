"""An optional LLM judge: score a run's output with a model, through the client you pass.

    from wasteaudit.judge import judge

    @wasteaudit.audit
    def answer(question):
        text = ...
        judge(text, client=openai.OpenAI(), model="gpt-4o-mini", rubric="Is it correct and complete?", question=question)
        return text

The judge's own LLM call runs inside ``@audit(name="wasteaudit.judge", tags={"wasteaudit.judge": "1"})``,
so it is recorded like any call (with that function name) and reports keep it out of the
app's waste, cost and efficiency, showing its cost on a line of its own. The verdict is stored
as a score on the *judged* run: the value normalized to [0, 1], ``source="judge:<model>"``,
and the raw verdict (score on the rubric's scale, reason, model, rubric hash) in ``raw_value``.

The prompt asks for a length-neutral judgment (verbosity is not a merit), because LLM judges
prefer longer answers and the efficiency figures are only as Goodhart-resistant as ``q`` is.

Supported clients: ``openai.OpenAI`` (Chat Completions) and ``anthropic.Anthropic`` (Messages),
or anything with the same ``chat.completions.create`` / ``messages.create`` shape.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from wasteaudit._internal import pipeline
from wasteaudit.audit import audit, current_run_id
from wasteaudit.records import ScoreRecord, new_id

__all__ = ("JUDGE_FUNCTION", "JUDGE_TAG", "DEFAULT_RUBRIC", "JudgeResult", "judge", "parse_verdict", "normalize")

JUDGE_FUNCTION = "wasteaudit.judge"
JUDGE_TAG = "wasteaudit.judge"
DEFAULT_RUBRIC = (
    "Rate how well the answer does what was asked: correct, complete, and usable as delivered. "
    "Length is not a merit: do not reward padding, repetition or restating the question, and do not "
    "penalize a short answer that is complete."
)
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")

_PROMPT = """You are grading an AI application's output.

Rubric:
{rubric}

{question_block}Output to grade:
<<<OUTPUT
{output}
OUTPUT>>>

Reply with only a JSON object: {{"score": <number from {low:g} to {high:g}>, "reason": "<one sentence>"}}"""


@dataclass(slots=True)
class JudgeResult:
    """The judge's verdict; ``score`` is in [0, 1], or None when the reply could not be read."""

    score: float | None
    raw_score: float | None
    reason: str | None
    run_id: str | None
    model: str
    error: str | None = None
    reply: str | None = None
    scale: tuple[float, float] = (0.0, 10.0)
    extra: dict[str, Any] = field(default_factory=dict)


def normalize(raw: float, low: float, high: float) -> float:
    """A rubric score on ``[low, high]`` mapped to [0, 1] (clamped)."""
    if high <= low:
        raise ValueError("the judge scale needs low < high")
    return min(1.0, max(0.0, (float(raw) - low) / (high - low)))


def parse_verdict(text: str) -> tuple[float | None, str | None]:
    """``(score, reason)`` from the judge's reply: a JSON object, else the first number in it."""
    if not text:
        return None, None
    candidates = [text.strip()]
    fenced = re.search(r"\{.*\}", text, re.S)
    if fenced:
        candidates.append(fenced.group(0))
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("score"), (int, float)) and not isinstance(data.get("score"), bool):
            reason = data.get("reason")
            return float(data["score"]), str(reason) if reason is not None else None
    match = re.search(r"(?<![\w.])(-?\d+(?:\.\d+)?)", text)
    if match:
        return float(match.group(1)), None
    return None, None


def _client_kind(client: Any) -> str:
    if hasattr(client, "messages") and hasattr(client.messages, "create") and not hasattr(client, "chat"):
        return "anthropic"
    if hasattr(client, "chat") and hasattr(client.chat, "completions"):
        return "openai"
    if hasattr(client, "messages") and hasattr(client.messages, "create"):
        return "anthropic"
    raise TypeError("judge() needs an openai.OpenAI or anthropic.Anthropic client (or one with the same shape)")


def _ask(client: Any, model: str, prompt: str, max_tokens: int) -> str:
    if _client_kind(client) == "openai":
        response = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            max_tokens=max_tokens,
        )
        return (response.choices[0].message.content or "") if response.choices else ""
    response = client.messages.create(
        model=model,
        max_tokens=max_tokens,
        temperature=0,
        messages=[{"role": "user", "content": prompt}],
    )
    return "".join(getattr(block, "text", "") or "" for block in (response.content or []))


@audit(name=JUDGE_FUNCTION, tags={JUDGE_TAG: "1"}, capture_return=False)
def _judge_call(client: Any, model: str, prompt: str, max_tokens: int) -> str:
    return _ask(client, model, prompt, max_tokens)


def _load_output(run_id: str, database_url: str | None) -> str:
    from sqlalchemy import select

    from wasteaudit.report import open_report_engine
    from wasteaudit.storage.models import RunRow

    engine = open_report_engine(database_url)
    try:
        with engine.connect() as conn:
            value = conn.execute(select(RunRow.return_value).where(RunRow.id == run_id)).scalar_one_or_none()
    finally:
        engine.dispose()
    if value is None:
        raise LookupError(f"run {run_id} has no captured return value to judge (pass output=...)")
    return value


def judge(
    target: str | None = None,
    *,
    client: Any,
    model: str,
    rubric: str = DEFAULT_RUBRIC,
    output: str | None = None,
    run_id: str | None = None,
    question: str | None = None,
    scale: tuple[float, float] = (0.0, 10.0),
    name: str = "judge",
    max_tokens: int = 200,
    database_url: str | None = None,
    record: bool = True,
) -> JudgeResult:
    """Judge an output with ``model`` through ``client`` and attach the score to a run.

    ``target`` is the output text, or a run id (32 hex characters) whose captured return value
    is read from the audit database (call ``wasteaudit.flush()`` first); ``judge(run_id=...)``
    with no output does the same. The score goes to
    ``run_id`` if given, else to the run being judged by id, else to the current run. It is
    stored under ``name`` (default ``"judge"``: it then counts in the run's mean score unless
    the run has a ``quality`` score; pass ``name="quality"`` to make it the run's quality).

    Never raises for a bad reply: ``result.score`` is None and ``result.error`` says why
    (and nothing is recorded). Errors from the client itself propagate.
    """
    low, high = float(scale[0]), float(scale[1])
    if high <= low:
        raise ValueError("the judge scale needs low < high")
    if output is None and target is not None and _RUN_ID.match(target) and run_id is None:
        run_id = target
        output = _load_output(target, database_url)
    elif output is None and target is None and run_id is not None:
        output = _load_output(run_id, database_url)
    elif output is None:
        output = target
    if output is None:
        raise ValueError("judge() needs the output to grade (or a run id whose return value was captured)")
    if run_id is None:
        run_id = current_run_id()

    question_block = f"Request:\n<<<REQUEST\n{question}\nREQUEST>>>\n\n" if question else ""
    prompt = _PROMPT.format(rubric=rubric, question_block=question_block, output=output, low=low, high=high)
    reply = _judge_call(client, model, prompt, max_tokens)
    raw, reason = parse_verdict(reply)
    rubric_hash = hashlib.sha256(rubric.encode("utf-8")).hexdigest()[:12]
    result = JudgeResult(score=None, raw_score=raw, reason=reason, run_id=run_id, model=model, reply=reply, scale=(low, high))
    if raw is None:
        result.error = "the judge's reply has no score"
        return result
    if not low <= raw <= high:
        result.error = f"the judge's score {raw:g} is outside the scale {low:g}..{high:g}"
        return result
    result.score = normalize(raw, low, high)
    raw_value = {"raw": raw, "scale": [low, high], "reason": reason, "model": model, "rubric_sha256": rubric_hash}
    result.extra["raw_value"] = raw_value
    if record and run_id is not None:
        pipeline.emit(
            ScoreRecord(id=new_id(), run_id=run_id, name=name, value=result.score, source=f"judge:{model}", raw_value=raw_value)
        )
    return result
