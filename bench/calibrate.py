"""Print the precision/recall table of every scorer rule and tier on the shipped labelled set.

    python bench/calibrate.py            # markdown table (docs/calibration.md holds the last run)
    python bench/calibrate.py --fp       # also list the ids of false positives

The set is ``wasteaudit/scoring/data/calibration.jsonl`` (written for this project, licence-clean):
paraphrase vs same-topic pairs, repeated vs parallel list items, restating summaries vs new
conclusions, exact / paraphrased duplicate requests vs negated, reversed and one-word-different
questions, partial vs full use, refusals vs look-alikes. Needs the ``scorer`` extra (MiniLM).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="another JSONL file with the same item types")
    parser.add_argument("--fp", action="store_true", help="list false-positive item ids per rule")
    args = parser.parse_args(argv)

    from wasteaudit.scoring import Scorer
    from wasteaudit.scoring.calibration import cosine_sweep, evaluate, format_table, load_items

    items = load_items(args.data) if args.data else load_items()
    scorer = Scorer()
    if not scorer.embeddings:
        print(f"note: {scorer.embedding_gap}", file=sys.stderr)
    t0 = time.perf_counter()
    table = evaluate(scorer, items)
    sweep = cosine_sweep(scorer.store, items) if scorer.store is not None else None
    print(f"{len(items)} items, {time.perf_counter() - t0:.1f} s\n")
    print(format_table(table, sweep))
    if args.fp:
        print()
        for (rule, kind, tier), counts in table.items():
            if counts.false_positives:
                print(f"{rule} [{kind}, {tier}]: {', '.join(counts.false_positives)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
