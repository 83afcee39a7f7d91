"""Precision/recall of each rule and tier on the shipped labelled set (``data/calibration.jsonl``).

Every item runs through the real scorer (records built the way the instrumentation builds
them), so the numbers measure the rules as shipped — segmentation, prefilters, guards and
thresholds together — not just a cosine. ``bench/calibrate.py`` prints the table;
``tests/scoring/test_calibration.py`` holds the confirmed tier to precision ≥ 0.9.

Item types: ``pair`` (paraphrase vs same-topic sentences), ``output`` (a reply that does or
does not repeat itself), ``requests`` (two calls that are or are not cacheable duplicates),
``use`` (a reply and what the app returned), ``refusal`` (a reply that is or is not a refusal).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasteaudit.records import CallRecord, ChoiceContent, RunRecord
from wasteaudit.scoring.duplicates import DuplicateIndex
from wasteaudit.scoring.redundant import FillerStats

__all__ = ("DATA_PATH", "load_items", "Counts", "evaluate", "format_table", "cosine_sweep")

DATA_PATH = Path(__file__).resolve().parent / "data" / "calibration.jsonl"
T0 = 1_760_000_000.0


def load_items(path: str | Path = DATA_PATH) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    false_positives: list[str] = field(default_factory=list)

    def add(self, predicted: bool, label: bool, item_id: str) -> None:
        if predicted and label:
            self.tp += 1
        elif predicted:
            self.fp += 1
            self.false_positives.append(item_id)
        elif label:
            self.fn += 1
        else:
            self.tn += 1

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None


def _call(cid: str, text: str, prompt: str, at: float = 0.0, run_id: str | None = None) -> CallRecord:
    return CallRecord(
        id=cid, provider="openai", operation="chat", api="chat.completions", started_at=T0 + at, run_id=run_id,
        function="calibration" if run_id else None, request_model="gpt-4o-mini", request_params={"temperature": 0.7},
        usage_source="provider", output_tokens=max(1, round(len(text) / 4)), finish_reasons=["stop"], finish_category="stop",
        input_messages=[{"role": "user", "content": prompt}], choices=[ChoiceContent(index=0, text=text, finish_reason="stop")],
    )


def _fresh(scorer: Any) -> None:
    scorer.index = DuplicateIndex(window_s=scorer.config.dup_window_s)
    scorer.filler = FillerStats()


def _has(findings: Iterable[Any], call_id: str, subkind: str, tiers: tuple[str, ...]) -> bool:
    return any(f.call_id == call_id and f.subkind == subkind and f.tier in tiers and f.tokens > 0 for f in findings)


CONFIRMED = ("confirmed",)
ANY = ("confirmed", "possible")


class _Collector:
    """Stands in for the embedding store on a dry run: remembers what would be embedded."""

    def __init__(self) -> None:
        self.texts: dict[str, None] = {}

    def request(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.texts[text] = None

    def send(self) -> None:
        pass

    def flush(self) -> int:
        return 0

    def cos(self, a: str, b: str) -> float:
        self.request([a, b])
        return 0.0

    def max_cos(self, text: str, others: list[str]) -> tuple[float, int]:
        self.request([text, *others])
        return 0.0, -1


def evaluate(scorer: Any, items: list[dict[str, Any]] | None = None, *, prefetch: bool = True) -> dict[tuple[str, str, str], Counts]:
    """(rule, item type, tier) → counts; tier is 'confirmed' or 'confirmed+possible'.

    With ``prefetch`` a dry run first collects every text the checks will ask for, so the
    model runs once over all of them (hundreds of tiny ``encode`` calls are what makes a
    naive run slow), then the real run finds them all cached.
    """
    items = items if items is not None else load_items()
    if prefetch and scorer.store is not None:
        real, collector = scorer.store, _Collector()
        scorer.store = collector
        try:
            _run(scorer, items)
        finally:
            scorer.store = real
        real.request(collector.texts)
        real.flush()
    return _run(scorer, items)


def _run(scorer: Any, items: list[dict[str, Any]]) -> dict[tuple[str, str, str], Counts]:
    table: dict[tuple[str, str, str], Counts] = {}

    def count(rule: str, kind: str, findings: list[Any], call_id: str, subkind: str, label: bool, item_id: str) -> None:
        for tier_name, tiers in (("confirmed", CONFIRMED), ("confirmed+possible", ANY)):
            table.setdefault((rule, kind, tier_name), Counts()).add(_has(findings, call_id, subkind, tiers), label, item_id)

    for item in items:
        _fresh(scorer)
        kind, label, iid = item["type"], bool(item["label"]), item["id"]
        if kind == "pair":
            text = f"{item['a']}\n\n{item['b']}"
            c = _call(f"{iid}-out", text, "Tell me about it.")
            findings = scorer.score([c]).findings
            count("repetition (within one reply)", "pair", findings, c.id, "repetition", label, iid)
            a = _call(f"{iid}-a", "Noted.", item["a"], at=0)
            b = _call(f"{iid}-b", "Noted.", item["b"], at=60)
            findings = scorer.score([a, b]).findings
            count("duplicate_call (prompt side; responses equal)", "pair", findings, b.id, "duplicate_call", label, iid)
        elif kind == "output":
            c = _call(f"{iid}-out", item["text"], item["prompt"])
            findings = scorer.score([c]).findings
            count("repetition", "output", findings, c.id, "repetition", label, iid)
            # Nothing in these replies restates the prompt or is filler: any hit is a false positive.
            count("prompt_echo", "output", findings, c.id, "prompt_echo", False, iid)
        elif kind == "requests":
            a = _call(f"{iid}-a", item["response_a"], item["prompt_a"], at=0)
            b = _call(f"{iid}-b", item["response_b"], item["prompt_b"], at=3600)
            findings = scorer.score([a, b]).findings
            count("duplicate_call", "requests", findings, b.id, "duplicate_call", label, iid)
        elif kind == "use":
            run = RunRecord(id=f"{iid}-run", name="calibration", started_at=T0, ended_at=T0 + 1, status="ok", return_value=item["returned"])
            c = _call(f"{iid}-out", item["text"], "Do the task.", run_id=run.id)
            findings = scorer.score([c], {run.id: run}).findings
            count("not_in_result", "use", findings, c.id, "not_in_result", label, iid)
        elif kind == "refusal":
            c = _call(f"{iid}-out", item["text"], "Help me with this.")
            findings = scorer.score([c]).findings
            count("refusal", "refusal", findings, c.id, "refusal", label, iid)
    overall = Counts()
    for (rule, _kind, tier), counts in table.items():
        if tier == "confirmed":
            overall.tp += counts.tp
            overall.fp += counts.fp
            overall.fn += counts.fn
            overall.tn += counts.tn
            overall.false_positives += counts.false_positives
    table[("ALL confirmed findings", "all", "confirmed")] = overall
    return table


def cosine_sweep(store: Any, items: list[dict[str, Any]] | None = None, thresholds: tuple[float, ...] = (0.75, 0.85, 0.90, 0.95)) -> dict[float, Counts]:
    """Raw MiniLM cosine as a paraphrase detector on the ``pair`` items (the §1.2 table, in-house)."""
    items = [i for i in (items if items is not None else load_items()) if i["type"] == "pair"]
    store.request([t for i in items for t in (i["a"], i["b"])])
    store.flush()
    out: dict[float, Counts] = {}
    for t in thresholds:
        counts = Counts()
        for item in items:
            counts.add(store.cos(item["a"], item["b"]) >= t, bool(item["label"]), item["id"])
        out[t] = counts
    return out


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def format_table(table: dict[tuple[str, str, str], Counts], sweep: dict[float, Counts] | None = None) -> str:
    lines = ["| rule | items | tier | TP | FP | FN | TN | precision | recall |", "|---|---|---|---|---|---|---|---|---|"]
    for (rule, kind, tier), c in table.items():
        lines.append(f"| {rule} | {kind} | {tier} | {c.tp} | {c.fp} | {c.fn} | {c.tn} | {_fmt(c.precision)} | {_fmt(c.recall)} |")
    if sweep:
        lines += ["", "| raw MiniLM cosine on `pair` items | TP | FP | FN | TN | precision | recall |", "|---|---|---|---|---|---|---|"]
        for t, c in sweep.items():
            lines.append(f"| cos ≥ {t:.2f} | {c.tp} | {c.fp} | {c.fn} | {c.tn} | {_fmt(c.precision)} | {_fmt(c.recall)} |")
    return "\n".join(lines)
