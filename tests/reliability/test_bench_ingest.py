"""The ingest benchmark runs end to end in a tiny configuration (figures are its job, not this test's)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]


def test_the_ingest_benchmark_reports_writer_baseline_and_end_to_end_figures_for_both_databases() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "bench/bench_ingest.py", "--records", "300", "--batch-size", "100", "--e2e-calls", "16", "--threads", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for database in ("sqlite", "postgresql"):
        assert re.search(rf"^{database} +writer +[\d,]+ records/s wall .* records per CPU-second", out, re.M), out
        assert re.search(rf"^{database} +end to end, 2 app threads .* calls/s stored \(bare SDK", out, re.M), out
    assert len(re.findall(r"baseline: database alone .* records/s wall", out)) == 2, out
