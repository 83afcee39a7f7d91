"""Embedding cost without changing findings: checks that cannot change a finding are not embedded,
and the end-of-batch encode is split across encoder threads with the same vectors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scoring_builders import call, run

from wasteaudit.scoring import Scorer
from wasteaudit.scoring.embeddings import EmbeddingStore, default_workers
from wasteaudit.scoring.ledger import Candidate, Claim, moot
from wasteaudit.scoring.views import build_view

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bench_scorer  # noqa: E402

TEXT = ("The nightly backup copies the primary database to the remote bucket. It verifies every checksum afterwards.\n\n"
        "Old copies are deleted after thirty days by the cleanup job.")


def _view():
    view = build_view(call(TEXT))
    assert len(view.choices[0].segments) >= 3
    return view


def _segs(view, *indexes):
    return [("seg", i) for i in indexes]


def test_a_check_is_moot_when_a_higher_ranked_decided_candidate_takes_all_its_segments():
    view = _view()
    unused = Candidate(view.id, "not_in_result", "confirmed", 0.85, 0, _segs(view, 1, 2))
    restate = Claim("repetition", "confirmed", 0.9, 0, tuple(_segs(view, 2)))
    near_dup = Claim("repetition", "possible", 0.3, 0, tuple(_segs(view, 1, 2)))
    assert moot(view, restate, [unused])  # unused outranks redundant in the same tier
    assert moot(view, near_dup, [unused])


def test_a_check_is_not_moot_when_it_outranks_the_decided_candidate_or_reaches_untaken_tokens():
    view = _view()
    possible_unused = Candidate(view.id, "not_in_result", "possible", 0.4, 0, _segs(view, 1, 2))
    assert not moot(view, Claim("repetition", "confirmed", 0.9, 0, tuple(_segs(view, 2))), [possible_unused])  # confirmed first
    confirmed = Candidate(view.id, "not_in_result", "confirmed", 0.85, 0, _segs(view, 1))
    assert not moot(view, Claim("repetition", "confirmed", 0.9, 0, tuple(_segs(view, 1, 2))), [confirmed])  # segment 2 still free
    part = Candidate(view.id, "not_in_result", "confirmed", 0.85, 0, _segs(view, 2), share={("seg", 2): 0.5})
    assert not moot(view, Claim("repetition", "confirmed", 0.9, 0, tuple(_segs(view, 2))), [part])  # half the tokens left
    other_call = Candidate("someone-else", "not_in_result", "confirmed", 0.85, 0, _segs(view, 2))
    assert not moot(view, Claim("repetition", "confirmed", 0.9, 0, tuple(_segs(view, 2))), [other_call])
    assert not moot(view, None, [confirmed])  # a check without a claim is always embedded


def test_a_whole_call_failure_makes_every_lower_ranked_check_of_the_call_moot():
    view = _view()
    failed = Candidate(view.id, "invalid_output", "confirmed", 0.9, None)
    assert moot(view, Claim("duplicate_call", "confirmed", 0.9), [failed])
    assert moot(view, Claim("repetition", "confirmed", 0.9, 0, tuple(_segs(view, 0))), [failed])
    assert not moot(view, Claim("invalid_output", "confirmed", 0.95), [failed])  # ranks ahead of the decided one


def _all(scorer: Scorer, calls: list, runs: dict) -> tuple[list, int, int]:
    found, skipped, embedded = [], 0, 0
    for start in range(0, len(calls), 50):
        chunk = calls[start : start + 50]
        result = scorer.score(chunk, {c.run_id: runs[c.run_id] for c in chunk if c.run_id in runs})
        found += [(f.call_id, f.subkind, f.tier, f.tokens, f.choice_index, f.segment_start, f.segment_end, sorted(f.evidence.items())) for f in result.findings]
        skipped += result.stats["moot_checks"]
        embedded += result.stats["texts_embedded"]
    return sorted(found, key=repr), skipped, embedded


def test_skipping_moot_checks_embeds_fewer_texts_and_gives_the_same_findings_and_evidence(embedder):
    calls, runs = bench_scorer.build_mix(300, seed=2)
    fast, skipped, fewer = _all(Scorer(embedder=embedder), calls, runs)
    full, none_skipped, more = _all(Scorer(embedder=embedder, skip_moot=False), calls, runs)
    assert fast == full
    assert skipped > 0 and none_skipped == 0 and fewer < more


def test_rules_only_scoring_skips_nothing_so_its_gaps_stay_recorded():
    calls, runs = bench_scorer.build_mix(300, seed=2)
    _, skipped, _ = _all(Scorer(embedder=None), calls, runs)
    assert skipped == 0


class _Recording:
    """The real model, recording the size of every encode call."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.sizes = inner, inner.name, []

    def encode(self, texts):
        self.sizes.append(len(texts))
        return self.inner.encode(texts)


def test_flush_splits_the_rest_across_encoder_threads_and_gives_the_vectors_of_one_encode(embedder):
    texts = [f"The {w} server retries the request after {n} seconds." for n, w in enumerate(["cached", "remote", "primary", "local"] * 10)]
    split = EmbeddingStore(_Recording(embedder), background=True, workers=2)
    single = EmbeddingStore(_Recording(embedder), background=False)
    for store in (split, single):
        store.request(texts)
        assert store.flush() == len(texts)
    assert len(split.embedder.sizes) == 2 and sum(split.embedder.sizes) == len(texts)
    assert single.embedder.sizes == [len(texts)]
    a = np.stack([split.vector(t) for t in texts])
    b = np.stack([single.vector(t) for t in texts])
    assert np.array_equal(a, b)  # a vector does not depend on its batch neighbours
    split.close()


def test_background_scoring_with_two_encoder_threads_gives_the_findings_of_one(embedder):
    calls, runs = bench_scorer.build_mix(200, seed=5)
    two, one = Scorer(embedder=embedder), Scorer(embedder=embedder)
    two.store.workers, one.store.workers = 2, 1
    assert _all(two, calls, runs)[0] == _all(one, calls, runs)[0]
    two.store.close()
    one.store.close()


def test_encoder_threads_default_to_one_per_core_divided_by_the_torch_threads_of_each(monkeypatch):
    monkeypatch.delenv("WASTEAUDIT_SCORER_WORKERS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 4)

    class Threads:
        def __init__(self, n: int) -> None:
            self.threads = n

    assert default_workers(Threads(1)) == 4
    assert default_workers(Threads(2)) == 2
    assert default_workers(Threads(0)) == 1  # torch's own choice already uses every core
    assert default_workers(object()) == 1  # an embedder that does not say: not called from two threads
    monkeypatch.setenv("WASTEAUDIT_SCORER_WORKERS", "3")
    assert default_workers(Threads(1)) == 3


def test_a_closing_restatement_of_unused_sentences_is_not_embedded(embedder):
    first = "The cached session flags the nightly cache quickly when the queue renews every 20 minutes."
    closing = "The nightly cache flags the cached session quickly when the queue renews every 30 minutes."
    text = f"{first} The router stores the index.\n\nThe build checks the deploy.\n\nThe branch merges the test.\n\n{closing}"
    r = run(name="app.cache", returned="The build checks the deploy.")  # only that sentence is used
    c = call(text, run=r)
    skipping = Scorer(embedder=embedder).score([c], {r.id: r})
    embedding = Scorer(embedder=embedder, skip_moot=False).score([c], {r.id: r})
    key = lambda res: sorted((f.subkind, f.tier, f.tokens, f.segment_start, f.segment_end) for f in res.findings)  # noqa: E731
    assert key(skipping) == key(embedding)
    assert {f.subkind for f in skipping.findings} == {"not_in_result"}
    assert skipping.stats["moot_checks"] == 2  # the restatement and the near-duplicate pair
    assert skipping.stats["texts_embedded"] == 0 and embedding.stats["texts_embedded"] == 2


class _FirstCallWaits(_Recording):
    """Holds its first encode until released, so later chunks queue behind it."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        import threading

        self.release = threading.Event()

    def encode(self, texts):
        if not self.sizes:
            self.release.wait(30)
        return super().encode(texts)


def test_chunks_still_queued_at_flush_are_shared_out_across_the_encoder_threads(embedder):
    import threading

    texts = [f"The {w} worker renews the ticket every {n} minutes." for n, w in enumerate(["shared", "nightly", "fresh", "stale"] * 10)][:37]
    slow = _FirstCallWaits(embedder)
    store = EmbeddingStore(slow, background=True, chunk=16, workers=2)
    store.request(texts[:16])
    store.send()  # running (held)
    store.request(texts[16:32])
    store.send()  # queued behind it
    store.request(texts[32:])
    threading.Timer(0.5, slow.release.set).start()
    assert store.flush() == len(texts)
    assert sorted(slow.sizes) == [10, 11, 16]  # the held chunk, then the other 21 texts in two parts
    assert store.encode_calls == 3
    reference = EmbeddingStore(embedder)
    reference.request(texts)
    reference.flush()
    assert all(np.array_equal(store.vector(t), reference.vector(t)) for t in texts)
    store.close()


def test_a_fresh_model_called_from_several_threads_at_once_returns_every_vector():
    from concurrent.futures import ThreadPoolExecutor

    from wasteaudit.scoring.embeddings import SentenceTransformerEmbedder, default_model_path

    fresh = SentenceTransformerEmbedder(default_model_path(), threads=1)  # its first encode sets up the tokenizer
    batches = [[f"The {w} queue {v} the report every {n} minutes." for n in range(6)] for w in ("nightly", "shared", "remote", "local")
               for v in ("checks", "routes")]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(fresh.encode, batches))
    assert [r.shape for r in results] == [(6, 384)] * len(batches)
    assert np.array_equal(results[0], fresh.encode(batches[0]))
