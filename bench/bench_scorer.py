"""Scorer throughput on a realistic mix of calls: calls/s with a cold and a warm embedding cache, peak memory.

    python bench/bench_scorer.py                 # 2,000 calls, batches of 200
    python bench/bench_scorer.py --calls 5000 --batch 500 --rules-only
    python bench/bench_scorer.py --workers 1      # A/B: one encoder thread at the end of a batch
    python bench/bench_scorer.py --calls 10000 --verify   # sustained; findings vs embedding everything

The mix (stated in the output) imitates a production app: ~200 output tokens and ~8 segments
per call; most outputs returned verbatim, some partly used, a few paraphrased, repeated,
restated, duplicated, truncated-and-retried, invalid-then-valid, refused or sampled n=3. Texts
are generated from word lists so that almost every sentence is unique (a cold cache really is
cold). "Cold" = empty embedding cache and duplicate window (the model is loaded beforehand and
its load time reported apart); "warm" = the same records again with the embedding cache filled.
"cores busy" = CPU seconds of the process per wall second: how much of the machine the pass
used (on a busy machine wall figures swing; this and calls per CPU-second are steadier).
Peak memory: tracemalloc's peak of Python allocations during scoring, and the process max RSS
(which includes the model and torch).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from wasteaudit.records import CallRecord, ChoiceContent, RunRecord  # noqa: E402

NOUNS = "cache server request token budget report invoice browser router database index query schema client session backup kernel driver bucket queue worker ticket customer contract meeting deadline release branch build test deploy".split()
VERBS = "stores rejects updates validates expires compresses forwards rebuilds checks retries loads splits merges signs renews tracks flags routes measures reports".split()
ADJS = "stale fresh large small remote local nightly weekly primary shared private public slow fast new old encrypted cached".split()
ADVS = "quickly safely twice daily automatically manually again silently reliably rarely".split()
T0 = 1_760_000_000.0
SYNONYMS = {
    "stores": "keeps", "rejects": "refuses", "updates": "refreshes", "validates": "checks", "expires": "drops", "compresses": "shrinks",
    "forwards": "passes on", "rebuilds": "recreates", "checks": "inspects", "retries": "repeats", "loads": "reads", "splits": "divides",
    "merges": "joins", "signs": "stamps", "renews": "extends", "tracks": "follows", "flags": "marks", "routes": "sends", "measures": "gauges",
    "reports": "announces", "stale": "outdated", "fresh": "new", "large": "big", "small": "little", "remote": "distant", "slow": "sluggish",
    "fast": "quick", "quickly": "rapidly", "safely": "securely", "daily": "every day", "rarely": "seldom", "automatically": "on its own",
}

MIX = [  # (share, kind)
    (0.45, "verbatim"),
    (0.15, "no_use"),
    (0.10, "first_paragraph"),
    (0.05, "paraphrased_use"),
    (0.05, "repeated_paragraph"),
    (0.05, "restating_summary"),
    (0.05, "duplicate"),
    (0.04, "truncated_retry"),
    (0.03, "invalid_then_valid"),
    (0.02, "refusal"),
    (0.01, "n3"),
]


def sentence(rng: random.Random) -> str:
    n1, n2 = rng.sample(NOUNS, 2)
    return (f"The {rng.choice(ADJS)} {n1} {rng.choice(VERBS)} the {rng.choice(ADJS)} {n2} {rng.choice(ADVS)} "
            f"when the {rng.choice(NOUNS)} {rng.choice(VERBS)} every {rng.randint(2, 90)} minutes.")


def answer(rng: random.Random, paragraphs: int = 3, per: int = 3) -> str:
    return "\n\n".join(" ".join(sentence(rng) for _ in range(per)) for _ in range(paragraphs))


def record(cid: str, text: str | None, prompt: str, at: float, run: RunRecord | None, **kw) -> CallRecord:
    texts = text if isinstance(text, list) else [text]
    finish = kw.pop("finish", "stop")
    return CallRecord(
        id=cid, provider="openai", operation="chat", api="chat.completions", started_at=T0 + at,
        run_id=run.id if run else None, function=run.name if run else None, request_model="gpt-4o-mini",
        request_params=kw.pop("params", {"temperature": 0.7}), usage_source="provider",
        output_tokens=sum(max(1, len(t or "") // 4) for t in texts), finish_reasons=[finish] * len(texts),
        finish_category={"stop": "stop", "length": "length"}.get(finish, "stop"),
        input_messages=[{"role": "user", "content": prompt}],
        choices=[ChoiceContent(index=i, text=t, finish_reason=finish) for i, t in enumerate(texts)], **kw,
    )


def build_mix(n: int, seed: int = 7) -> tuple[list[CallRecord], dict[str, RunRecord]]:
    rng = random.Random(seed)
    calls: list[CallRecord] = []
    runs: dict[str, RunRecord] = {}
    asked: list[tuple[str, str]] = []
    kinds = [k for share, k in MIX for _ in range(round(share * 1000))]
    i = 0
    while len(calls) < n:
        kind = rng.choice(kinds)
        i += 1
        at = i * 2.0
        prompt = f"Question {i}: how does the {rng.choice(NOUNS)} handle a {rng.choice(ADJS)} {rng.choice(NOUNS)}?"
        run = RunRecord(id=f"r{i}", name=f"app.fn{i % 7}", started_at=T0 + at, ended_at=T0 + at + 1, status="ok")
        text = answer(rng)
        cid = f"c{i}"
        if kind == "verbatim":
            run.return_value = text
            calls.append(record(cid, text, prompt, at, run))
        elif kind == "no_use":
            calls.append(record(cid, text, prompt, at, None))
            run = None
        elif kind == "first_paragraph":
            run.return_value = text.split("\n\n")[0]
            calls.append(record(cid, text, prompt, at, run))
        elif kind == "paraphrased_use":
            # The app returns a reworded digest of the first two sentences: clause order swapped,
            # articles changed, so word 3-grams no longer match and embeddings must decide.
            digest = []
            for s in text.split("\n\n")[0].split(". ")[:2]:
                main_clause, _, when = s.rstrip(".").partition(" when ")
                words = [SYNONYMS.get(w, w) for w in f"{when}, our {main_clause.removeprefix('The ')}".split() if w != "the"]
                digest.append("Whenever " + " ".join(words) + ".")
            run.return_value = " ".join(digest)
            calls.append(record(cid, text, prompt, at, run))
        elif kind == "repeated_paragraph":
            para = text.split("\n\n")[0]
            text = f"{para}\n\n{text}"
            calls.append(record(cid, text, prompt, at, None))
            run = None
        elif kind == "restating_summary":
            first = text.split("\n\n")[0].split(". ")[0]
            text = f"{text}\n\nIn summary, {first[0].lower()}{first[1:]}."
            run.return_value = text
            calls.append(record(cid, text, prompt, at, run))
        elif kind == "duplicate" and asked:
            p, t = rng.choice(asked)
            reply = t if rng.random() < 0.5 else t.replace("The ", "Our ", 2)
            calls.append(record(cid, reply, p, at, None))
            run = None
        elif kind == "truncated_retry":
            calls.append(record(cid, text[: len(text) // 2], prompt, at, run, finish="length", params={"max_tokens": 100}))
            calls.append(record(cid + "b", text, prompt, at + 1, run, params={"max_tokens": 400}))
            run.return_value = text
        elif kind == "invalid_then_valid":
            body = '{"title": "%s", "items": ["%s", "%s"], "score": %d}' % (sentence(rng)[:40], rng.choice(NOUNS), rng.choice(NOUNS), rng.randint(1, 9))
            calls.append(record(cid, body[:-1], prompt, at, run, response_format={"type": "json_object"}))
            calls.append(record(cid + "b", body, prompt, at + 1, run, response_format={"type": "json_object"}))
            run.return_value = body
        elif kind == "refusal":
            calls.append(record(cid, "I'm sorry, but I can't help with that request.", prompt, at, run))
        elif kind == "n3":
            options = [answer(rng, 1, 2) for _ in range(3)]
            run.return_value = options[1]
            calls.append(record(cid, options, prompt, at, run, params={"n": 3}))
        else:
            run.return_value = text
            calls.append(record(cid, text, prompt, at, run))
        if run is not None:
            runs[run.id] = run
        if kind in ("verbatim", "no_use"):
            asked.append((prompt, text))
    return calls[:n], runs


def run_pass(scorer, calls, runs, batch: int) -> dict[str, float]:
    """Score ``calls`` in batches: wall and CPU seconds (all threads), findings, texts embedded, encode calls."""
    store = scorer.store
    calls0 = store.encode_calls if store is not None else 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    found: list = []
    embedded = moot = 0
    for start in range(0, len(calls), batch):
        chunk = calls[start : start + batch]
        result = scorer.score(chunk, {c.run_id: runs[c.run_id] for c in chunk if c.run_id in runs})
        found += result.findings
        embedded += result.stats["texts_embedded"]
        moot += result.stats.get("moot_checks", 0)
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "findings": found, "embedded": embedded,
            "encodes": (store.encode_calls - calls0) if store is not None else 0, "moot": moot}


def line(name: str, n: int, r: dict) -> str:
    per = r["embedded"] / n
    chunks = f", {r['encodes']} encode calls of {r['embedded'] / r['encodes']:.0f} texts on average" if r["encodes"] else ""
    chunks += f", {r['moot']} checks that could not change a finding not embedded" if r.get("moot") else ""
    return (f"{name}: {n / r['wall']:7.0f} calls/s wall, {n / r['cpu']:5.0f} calls per CPU-second, {r['cpu'] / r['wall']:.2f} cores busy "
            f"({r['wall']:.2f} s, {len(r['findings'])} findings, {r['embedded']} texts embedded = {per:.2f} per call{chunks})")


def naive_baseline(embedder, calls, runs, batch: int) -> tuple[float, float, int]:
    """The approach the scorer avoids: the rules, plus an embedding of every segment of every call.

    Returns (wall seconds, CPU seconds, texts embedded) for ``calls``; no cache, no prefilter.
    """
    from wasteaudit.scoring import Scorer
    from wasteaudit.scoring.views import build_view

    t0, c0 = time.perf_counter(), time.process_time()
    run_pass(Scorer(embedder=None), calls, runs, batch)
    texts = [seg.text for c in calls for ch in build_view(c).choices for seg in ch.segments if seg.text.strip()]
    for start in range(0, len(texts), 256):
        embedder.encode(texts[start : start + 256])
    return time.perf_counter() - t0, time.process_time() - c0, len(texts)


def db_pass(calls, runs, batch: int) -> tuple[float, float]:
    """The worker's path, rules only: store the mix in a fresh SQLite file, then ``score_pending`` it.

    Returns (wall, CPU seconds) of ``score_pending``: claiming, reading rows and the look-back
    window, decoding records, scoring, writing findings and per-call state.
    """
    import dataclasses
    import tempfile

    from wasteaudit.scoring import Scorer
    from wasteaudit.scoring.runner import score_pending
    from wasteaudit.storage.engine import create_engine_for
    from wasteaudit.storage.writer import Writer

    shift = time.time() - 3 * 3600 - T0  # recent, so the window query sees realistic ranges
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        writer = Writer(url, flush_interval=0.05)
        for r in runs.values():
            writer.submit(dataclasses.replace(r, started_at=r.started_at + shift, ended_at=(r.ended_at or r.started_at) + shift))
        for c in calls:
            writer.submit(dataclasses.replace(c, started_at=c.started_at + shift))
        writer.flush(timeout=300)
        writer.shutdown(timeout=30)
        engine = create_engine_for(url)
        t0, c0 = time.perf_counter(), time.process_time()
        score_pending(engine, scorer=Scorer(embedder=None), batch_size=batch)
        result = time.perf_counter() - t0, time.process_time() - c0
        engine.dispose()
    return result


def key(f) -> tuple:
    return (f.call_id, f.subkind, f.tier, f.tokens, f.choice_index, f.segment_start, f.segment_end)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="scorer throughput benchmark")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rules-only", action="store_true", help="no embeddings (the fallback without the scorer extra)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the embedder (default: every core but one; 0 = torch's own)")
    parser.add_argument("--no-background", action="store_true", help="encode on the calling thread instead of beside the rules")
    parser.add_argument("--workers", type=int, default=None, help="encoder threads at the end of a batch (default: one per core; 1 = the former single encoder thread)")
    parser.add_argument("--naive", type=int, default=300, help="calls in the naive-baseline sample (embed every segment); 0 skips it")
    parser.add_argument("--db", action="store_true", help="also time the worker path (score_pending on SQLite, rules only)")
    parser.add_argument("--verify", action="store_true",
                        help="also score with the lexical shortcuts off and every deferred check embedded, and compare the findings")
    args = parser.parse_args(argv)

    from wasteaudit.scoring import Scorer, ScorerConfig
    from wasteaudit.scoring.views import build_view

    calls, runs = build_mix(args.calls)
    views = [build_view(c) for c in calls[:500]]
    tokens = sum(v.billed for v in views) / len(views)
    segs = sum(len(ch.segments) for v in views for ch in v.choices) / len(views)
    n = len(calls)
    print(f"mix: {n} calls in batches of {args.batch}; mean {tokens:.0f} output tokens and {segs:.1f} segments per call")
    print("     " + ", ".join(f"{int(s * 100)}% {k}" for s, k in MIX))

    background = not args.no_background
    t = time.perf_counter()
    embedder = None
    workers = 1
    if not args.rules_only:
        from wasteaudit.scoring.embeddings import SentenceTransformerEmbedder, default_model_path

        embedder = SentenceTransformerEmbedder(default_model_path(), threads=args.threads)
        embedder.encode(["warm up the model"])
        import torch

        from wasteaudit.scoring.embeddings import default_workers

        workers = args.workers or default_workers(embedder)
        print(f"model load: {time.perf_counter() - t:.1f} s; torch threads {torch.get_num_threads()} per encode, encoder "
              + (f"thread beside the rules, then {workers} encoder thread(s) at the end of each batch" if background else "on the calling thread"))

    def fresh(config: ScorerConfig | None = None, skip_moot: bool = True) -> Scorer:
        scorer = Scorer(config, embedder=embedder, background=background, skip_moot=skip_moot)
        if scorer.store is not None:
            scorer.store.workers = workers
        return scorer

    load = os.getloadavg()[0]
    scorer = fresh()
    cold = run_pass(scorer, calls, runs, args.batch)
    print(line("cold", n, cold))
    # Warm: a new duplicate window and filler statistics, the embedding cache of the cold pass.
    warm_scorer = fresh()
    warm_scorer.store = scorer.store
    warm = run_pass(warm_scorer, calls, runs, args.batch)
    print(line("warm", n, warm))
    rules = run_pass(Scorer(embedder=None), calls, runs, args.batch)
    print(line("rules-only", n, rules))

    if args.db:
        wall, cpu = db_pass(calls, runs, args.batch)
        print(f"worker path (score_pending, SQLite, rules only): {n / wall:7.0f} calls/s wall, {n / cpu:5.0f} calls per CPU-second; "
              f"database work is {max(0.0, 1 - rules['cpu'] / cpu):.0%} of its CPU time")

    if embedder is not None and args.naive:
        sample = calls[: args.naive]
        wall, cpu, texts = naive_baseline(embedder, sample, runs, args.batch)
        print(f"naive (embed every segment, {len(sample)}-call sample): {len(sample) / wall:7.0f} calls/s wall, "
              f"{len(sample) / cpu:5.0f} calls per CPU-second, {texts / len(sample):.1f} texts embedded per call; "
              f"cold is {(n / cold['wall']) / (len(sample) / wall):.1f}x faster (wall), {(n / cold['cpu']) / (len(sample) / cpu):.1f}x (CPU)")

    if embedder is not None and args.verify:
        ref = fresh(ScorerConfig(lexical_shortcuts=False), skip_moot=False)
        ref.store = scorer.store  # the same vectors: only the extra texts are encoded
        reference = run_pass(ref, calls, runs, args.batch)
        a, b = sorted(map(key, cold["findings"])), sorted(map(key, reference["findings"]))
        print(f"verify: {len(a)} findings with lexical shortcuts and moot checks skipped, {len(b)} with embeddings deciding everything "
              f"({reference['embedded']} more texts embedded): {'identical' if a == b else 'DIFFERENT'}")
        for item in sorted(set(a) - set(b)):
            print(f"  only with shortcuts: {item}")
        for item in sorted(set(b) - set(a)):
            print(f"  only with embeddings: {item}")

    print(f"load average at start {load:.1f} on {os.cpu_count()} CPUs (wall figures need an otherwise idle machine)")
    # Memory in a separate pass: tracemalloc slows Python down several times, so it must not
    # run during the timed passes. Fresh window and filler stats, as in the cold pass.
    mem_scorer = Scorer(embedder=None)
    mem_scorer.store = scorer.store
    tracemalloc.start()
    run_pass(mem_scorer, calls, runs, args.batch)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: {peak / 2**20:.1f} MiB Python allocations while scoring {n} calls (tracemalloc, separate pass), "
          f"{rss:.0f} MiB max RSS of the process (incl. model and torch)")
    if scorer.store is not None:
        scorer.store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
