"""Re-measure the MiniLM thresholds on MRPC, STS-B and QQP from local copies (not redistributable).

These three sets are the source of record for the scorer's cosine thresholds
(reference: waste-methods §1.2), but their licences do not allow shipping them, so this script
reads files you fetch yourself:

* MRPC test — ``msr_paraphrase_test.txt`` (Microsoft Research Paraphrase Corpus; research use).
  Tab-separated: Quality, #1 ID, #2 ID, #1 String, #2 String. Distributed by Microsoft
  (search "Microsoft Research Paraphrase Corpus"); also inside the GLUE data download
  (``glue_data/MRPC``).
* STS-B dev — ``dev.tsv`` from the GLUE data download (``glue_data/STS-B/dev.tsv``), columns
  ``sentence1``, ``sentence2``, ``score`` (0–5). A pair counts as a paraphrase at gold ≥ 4 and
  as a non-paraphrase at gold ≤ 3 (pairs in between are dropped), as in §1.2.
* QQP dev — ``dev.tsv`` from the GLUE data download (``glue_data/QQP/dev.tsv``), columns
  ``question1``, ``question2``, ``is_duplicate``. Quora terms: non-commercial research use.

The GLUE download script (``download_glue_data.py``) from the GLUE benchmark site fetches all
three. Then::

    python bench/calibrate_public.py --mrpc PATH --stsb PATH --qqp PATH [--limit 6000]

prints, per set: ROC-AUC, the lowest threshold with precision ≥ 0.90 and its recall,
precision/recall at the scorer's thresholds (0.75, 0.85, 0.90, 0.95), and the best-F1 threshold.
Compare with the table in ``docs/calibration.md``; if you change the embedding model, re-run
this and ``bench/calibrate.py`` before trusting any threshold.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
csv.field_size_limit(10_000_000)

THRESHOLDS = (0.75, 0.85, 0.90, 0.95)


def read_mrpc(path: str) -> list[tuple[str, str, bool]]:
    out = []
    with open(path, encoding="utf-8-sig") as handle:
        next(handle)
        for line in handle:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 5:
                out.append((parts[3], parts[4], parts[0].strip() == "1"))
    return out


def read_stsb(path: str) -> list[tuple[str, str, bool]]:
    out = []
    with open(path, encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            score = float(row["score"])
            if score >= 4.0:
                out.append((row["sentence1"], row["sentence2"], True))
            elif score <= 3.0:
                out.append((row["sentence1"], row["sentence2"], False))
    return out


def read_qqp(path: str) -> list[tuple[str, str, bool]]:
    out = []
    with open(path, encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            try:
                out.append((row["question1"], row["question2"], row["is_duplicate"].strip() == "1"))
            except (KeyError, AttributeError):
                continue
    return out


def auc(scores: list[float], labels: list[bool]) -> float:
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    pos = sum(labels)
    neg = len(labels) - pos
    if not pos or not neg:
        return float("nan")
    return (sum(r for r, label in zip(ranks, labels) if label) - pos * (pos + 1) / 2) / (pos * neg)


def pr(scores: list[float], labels: list[bool], t: float) -> tuple[float, float]:
    tp = sum(1 for s, label in zip(scores, labels) if s >= t and label)
    fp = sum(1 for s, label in zip(scores, labels) if s >= t and not label)
    fn = sum(1 for s, label in zip(scores, labels) if s < t and label)
    return (tp / (tp + fp) if tp + fp else float("nan")), (tp / (tp + fn) if tp + fn else float("nan"))


def report(name: str, pairs: list[tuple[str, str, bool]], embedder: object, limit: int | None) -> None:
    if limit and len(pairs) > limit:
        pairs = random.Random(0).sample(pairs, limit)
    a = embedder.encode([p[0] for p in pairs])  # type: ignore[attr-defined]
    b = embedder.encode([p[1] for p in pairs])  # type: ignore[attr-defined]
    scores = [float(x @ y) for x, y in zip(a, b)]
    labels = [p[2] for p in pairs]
    grid = [i / 1000 for i in range(500, 1000)]
    p90 = next(((t, pr(scores, labels, t)[1]) for t in grid if pr(scores, labels, t)[0] >= 0.9), None)
    best = max(grid, key=lambda t: (lambda p, r: 2 * p * r / (p + r) if p + r and p == p else 0)(*pr(scores, labels, t)))
    print(f"\n{name}: {len(pairs)} pairs, {sum(labels) / len(labels):.0%} positive, ROC-AUC {auc(scores, labels):.3f}")
    if p90:
        print(f"  lowest t with precision >= 0.90: {p90[0]:.3f} (recall {p90[1]:.2f})")
    for t in THRESHOLDS:
        p, r = pr(scores, labels, t)
        print(f"  t = {t:.2f}: precision {p:.2f}, recall {r:.2f}")
    p, r = pr(scores, labels, best)
    print(f"  best F1 at t = {best:.3f}: precision {p:.2f}, recall {r:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MiniLM thresholds on local copies of MRPC / STS-B / QQP")
    parser.add_argument("--mrpc", help="msr_paraphrase_test.txt")
    parser.add_argument("--stsb", help="STS-B dev.tsv")
    parser.add_argument("--qqp", help="QQP dev.tsv")
    parser.add_argument("--limit", type=int, default=6000, help="sample at most this many pairs per set (QQP is large)")
    args = parser.parse_args(argv)
    if not (args.mrpc or args.stsb or args.qqp):
        parser.print_help()
        print("\nnothing to do: give at least one of --mrpc / --stsb / --qqp (see the docstring for where to get them)")
        return 2
    from wasteaudit.scoring.embeddings import load_default_embedder

    embedder = load_default_embedder()
    for name, path, reader in (("MRPC test", args.mrpc, read_mrpc), ("STS-B dev (gold >= 4 vs <= 3)", args.stsb, read_stsb), ("QQP dev", args.qqp, read_qqp)):
        if path:
            report(name, reader(path), embedder, args.limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
