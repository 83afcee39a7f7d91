"""Score a batch of recorded calls: records in, findings out. Pure — no database, no clock.

Order of work, cheapest first (DESIGN §2, issue §8):

1. prepare each call (segments, token apportioning) and each run's use evidence;
2. rule detectors for failed, unused and redundant output, and the duplicate-call index —
   all lexical or hash based; checks that need embeddings are *deferred*;
3. the texts the deferred checks need (deduplicated and cached by content hash) go to the
   model in chunks on a background thread while step 2 carries on with the next calls; at
   the end of the batch the rest is encoded and the checks resolved — or, without the
   embedding extra, the rules that need none stand in and the gap is noted on the calls;
4. the ledger turns candidates into disjoint findings (failed > unused > redundant).

A :class:`Scorer` keeps state that makes later batches better: the embedding cache, the
duplicate look-back window and the per-function filler statistics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wasteaudit.exceptions import MissingExtraError
from wasteaudit.records import CallRecord, RunRecord, ScoreRecord
from wasteaudit.scoring.context import RunContext, build_use
from wasteaudit.scoring.duplicates import DuplicateIndex, detect_duplicate, entry_for
from wasteaudit.scoring.failed import detect_failed
from wasteaudit.scoring.findings import CallCoverage, Finding
from wasteaudit.scoring.ledger import Candidate, Deferred, assign, moot
from wasteaudit.scoring.redundant import FillerStats, boundary_keys, detect_redundant
from wasteaudit.scoring.settings import ScorerConfig, config_fingerprint
from wasteaudit.scoring.unused import compute_coverage, detect_unused, use_coverage
from wasteaudit.scoring.views import CallView, build_view

__all__ = ("Scorer", "ScoreResult", "score_batch", "default_scorer")

log = logging.getLogger("wasteaudit.scoring")
_AUTO = "auto"


@dataclass(slots=True)
class ScoreResult:
    findings: list[Finding]
    coverage: list[CallCoverage]
    errors: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


class Scorer:
    """Scores batches of calls; reuse one instance so caches and the duplicate window carry over.

    ``embedder``: ``"auto"`` loads all-MiniLM-L6-v2 on first need (or runs rules-only, with the
    gap recorded, when the ``scorer`` extra is missing); ``None`` forces rules-only; any
    :class:`~wasteaudit.scoring.embeddings.Embedder` replaces the model.
    """

    def __init__(
        self,
        config: ScorerConfig | None = None,
        *,
        embedder: Any = _AUTO,
        index: DuplicateIndex | None = None,
        filler: FillerStats | None = None,
        cache_size: int = 50_000,
        background: bool = True,
        skip_moot: bool = True,
    ) -> None:
        """``background``: encode in helper threads (see :class:`EmbeddingStore`).

        ``skip_moot``: do not embed for a check whose every possible finding is already
        outranked by a decided one on the same tokens (:func:`~wasteaudit.scoring.ledger.moot`);
        findings are identical either way, so it is not part of the config fingerprint.
        """
        self.config = config or ScorerConfig()
        self.skip_moot = skip_moot
        self.index = index if index is not None else DuplicateIndex(window_s=self.config.dup_window_s)
        self.filler = filler if filler is not None else FillerStats()
        self.embedding_gap: str | None = None
        self.store: Any = None
        if embedder == _AUTO:
            try:
                from wasteaudit.scoring.embeddings import load_default_embedder

                embedder = load_default_embedder()
            except MissingExtraError as exc:
                self.embedding_gap = f"embeddings unavailable, rules only: {exc}"
                log.warning("%s", self.embedding_gap)
                embedder = None
        elif embedder is None:
            self.embedding_gap = "embeddings disabled, rules only"
        if embedder is not None:
            from wasteaudit.scoring.embeddings import EmbeddingStore

            self.store = EmbeddingStore(embedder, max_entries=cache_size, background=background)

    @property
    def embeddings(self) -> bool:
        return self.store is not None

    @property
    def fingerprint(self) -> str:
        """What scored the calls: version, thresholds and model (see :func:`config_fingerprint`)."""
        from wasteaudit.scoring import SCORER_VERSION

        model = getattr(self.store.embedder, "name", "embedder") if self.store is not None else None
        return config_fingerprint(self.config, SCORER_VERSION, model)

    def score(
        self,
        calls: Sequence[CallRecord],
        runs: Mapping[str, RunRecord] | None = None,
        scores: Iterable[ScoreRecord] = (),
        *,
        context_calls: Sequence[CallRecord] = (),
    ) -> ScoreResult:
        """Findings for ``calls``; ``context_calls`` (other calls of the same runs) inform but are not scored."""
        t0 = time.perf_counter()
        cfg = self.config
        runs = runs or {}
        targets: dict[str, CallView] = {}
        for rec in sorted(calls, key=lambda r: (r.started_at or 0.0, r.id)):
            if rec.id not in targets:
                targets[rec.id] = build_view(rec)
        others = [build_view(rec, segment=False) for rec in context_calls if rec.id not in targets]
        contexts = self._contexts(list(targets.values()) + others, runs, scores)

        candidates: list[Candidate] = []
        deferred: list[Deferred] = []
        errors: dict[str, str] = {}
        observable: dict[str, bool] = {}
        judged: dict[str, float | None] = {}
        requested = 0  # deferred checks whose texts were handed to the store
        skipped = 0  # deferred checks that could not change a finding (not embedded)
        emb = self.embeddings

        # entry_for is a pure function of the record: reuse the window's entry when it has one.
        entries = {view.id: self.index.get(view.id) or entry_for(view.rec) for view in list(targets.values()) + others}
        for entry in entries.values():
            self.index.add(entry)
        for view in targets.values():
            if view.rec.function and view.mode == "full":
                self.filler.observe(view.rec.function, view.id, boundary_keys(view))

        for view in targets.values():
            first_candidate, first_deferred = len(candidates), len(deferred)
            try:
                ctx = contexts[_ctx_key(view)]
                compute_coverage(view, ctx)
                found, more = detect_failed(view, ctx, cfg, emb)
                candidates += found
                deferred += more
                found, more, seen = detect_unused(view, ctx, cfg, emb)
                observable[view.id] = seen
                judged[view.id] = use_coverage(view, ctx, seen)
                candidates += found
                deferred += more
                found, more = detect_redundant(view, ctx, cfg, self.filler, emb)
                candidates += found
                deferred += more
                found, more = detect_duplicate(view, entries[view.id], self.index, cfg, emb)
                candidates += found
                deferred += more
            except Exception as exc:  # one odd record must not stop the batch
                errors[view.id] = f"{type(exc).__name__}: {exc}"[:500]
                log.exception("scoring call %s failed", view.id)
            else:
                if self.store is not None and self.skip_moot and len(deferred) > first_deferred:
                    mine = candidates[first_candidate:]
                    keep = [item for item in deferred[first_deferred:] if not moot(view, item.claim, mine)]
                    skipped += len(deferred) - first_deferred - len(keep)
                    deferred[first_deferred:] = keep
                if self.store is not None and len(deferred) > requested:
                    # Texts go to the encoder as soon as a chunk is full; the rules carry on meanwhile.
                    for item in deferred[requested:]:
                        self.store.request(item.texts)
                    requested = len(deferred)
                    send = getattr(self.store, "send", None)  # stand-in stores may batch only at flush
                    if send is not None:
                        send()

        gaps: dict[str, list[str]] = {}
        embedded = 0
        if deferred:
            if self.store is not None:
                for item in deferred[requested:]:
                    self.store.request(item.texts)
                embedded = self.store.flush()
                for item in deferred:
                    try:
                        candidates += item.resolve(self.store)
                    except Exception as exc:
                        errors.setdefault(item.call_id, f"{type(exc).__name__}: {exc}"[:500])
            else:
                for item in deferred:
                    if item.fallback is not None:
                        candidates += item.fallback()
                    if item.gap:
                        gaps.setdefault(item.call_id, []).append(item.gap)

        ok_views = {cid: v for cid, v in targets.items() if cid not in errors}
        findings = assign(ok_views, [c for c in candidates if c.call_id in ok_views])
        if self.embedding_gap:
            for f in findings:
                f.evidence.setdefault("limitation", self.embedding_gap)
        coverage = [
            CallCoverage(
                call_id=v.id,
                run_id=v.run_id,
                billed_output_tokens=v.billed if v.rec.output_tokens is not None else None,
                tokens_source=v.tokens_source if v.billed or v.rec.output_tokens is not None else "missing",
                content_mode=v.mode,
                use_observable=observable.get(v.id, False),
                embeddings=emb,
                gaps=v.gaps + gaps.get(v.id, []) + ([self.embedding_gap] if self.embedding_gap else []),
                use_coverage=judged.get(v.id),
            )
            for v in ok_views.values()
        ]
        stats = {
            "calls": len(targets),
            "deferred_checks": len(deferred),
            "moot_checks": skipped,
            "texts_embedded": embedded,
            "seconds": round(time.perf_counter() - t0, 4),
            "index_entries": len(self.index),
        }
        return ScoreResult(findings, coverage, errors, stats)

    def _contexts(self, views: list[CallView], runs: Mapping[str, RunRecord], scores: Iterable[ScoreRecord]) -> dict[str, RunContext]:
        by_run: dict[str, list[ScoreRecord]] = {}
        for s in scores:
            by_run.setdefault(s.run_id, []).append(s)
        contexts: dict[str, RunContext] = {}
        for view in sorted(views, key=lambda v: (v.rec.started_at or 0.0, v.id)):
            key = _ctx_key(view)
            ctx = contexts.get(key)
            if ctx is None:
                run = runs.get(view.run_id) if view.run_id else None
                ctx = contexts[key] = RunContext(view.run_id, run, by_run.get(view.run_id or "", []), build_use(run), [])
            ctx.calls.append(view)
        return contexts


def _ctx_key(view: CallView) -> str:
    # Calls outside any run share nothing: each is its own context.
    return f"run:{view.run_id}" if view.run_id else f"call:{view.id}"


_default: Scorer | None = None


def default_scorer() -> Scorer:
    """A process-wide scorer (the model is loaded once)."""
    global _default
    if _default is None:
        _default = Scorer()
    return _default


def score_batch(
    calls: Sequence[CallRecord],
    runs: Mapping[str, RunRecord] | None = None,
    scores: Iterable[ScoreRecord] = (),
    *,
    scorer: Scorer | None = None,
    context_calls: Sequence[CallRecord] = (),
) -> list[Finding]:
    """Findings for a batch of calls (uses :func:`default_scorer` unless ``scorer`` is given)."""
    return (scorer or default_scorer()).score(calls, runs, scores, context_calls=context_calls).findings
