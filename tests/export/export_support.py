"""Helpers for the export tests: reading an in-memory metric reader, running an app in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

__all__ = ["REPO", "metric", "points", "run_app"]


def metric(reader: Any, name: str) -> Any:
    """The one metric called ``name`` in the reader's current collection (None if absent)."""
    data = reader.get_metrics_data()
    if data is None:
        return None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    return m
    return None


def points(reader: Any, name: str) -> list[Any]:
    found = metric(reader, name)
    return list(found.data.data_points) if found is not None else []


def run_app(code: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (own global providers), with the repo importable."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "WASTEAUDIT_"))}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), str(REPO / "tests" / "export")])
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, capture_output=True, text=True, timeout=timeout)
