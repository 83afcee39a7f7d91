"""The public surface stays small, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import wasteaudit


def test_public_names_are_the_documented_dozen():
    assert sorted(wasteaudit.__all__) == sorted(
        [
            "__version__",
            "audit",
            "build_report",
            "configure",
            "ConfigError",
            "current_run_id",
            "flush",
            "instrument",
            "instrument_anthropic",
            "instrument_openai",
            "mark_used",
            "score",
            "shutdown",
            "status",
            "track_json",
            "WasteAuditError",
        ]
    )
    for name in wasteaudit.__all__:
        assert hasattr(wasteaudit, name), name


def test_import_loads_no_heavy_dependency():
    code = (
        "import sys, wasteaudit\n"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'sqlalchemy', 'openai', 'anthropic', 'numpy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
