"""The benchmark and calibration scripts keep working (smoke runs, rules only, small inputs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_scorer_runs_on_a_small_rules_only_mix():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_scorer.py"), "--calls", "150", "--batch", "50", "--rules-only", "--db"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "cold:" in out and "warm:" in out and "peak memory" in out and "segments per call" in out
    assert "rules-only:" in out and "worker path" in out and "texts embedded" in out


def test_calibrate_public_reads_mrpc_format(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import calibrate_public

    path = tmp_path / "mrpc.txt"
    path.write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tThe cat sat.\tA cat was sitting.\n0\t3\t4\tPrices rose.\tIt is cold.\n", encoding="utf-8")
    assert calibrate_public.read_mrpc(str(path)) == [("The cat sat.", "A cat was sitting.", True), ("Prices rose.", "It is cold.", False)]
    assert calibrate_public.auc([0.9, 0.1], [True, False]) == 1.0
    assert calibrate_public.main([]) == 2
