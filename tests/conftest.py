"""Shared fixtures: a loopback LLM server, isolated settings, in-memory capture."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

os.environ.setdefault("WASTEAUDIT_RAISE_INTERNAL", "1")

from wasteaudit import config  # noqa: E402
from wasteaudit._internal import pipeline  # noqa: E402
from wasteaudit.localllm import LocalLLMServer  # noqa: E402
from wasteaudit.testing import CapturedAudit, SpanCapture, capture, capture_spans  # noqa: E402


@pytest.fixture
def llm_server() -> Iterator[LocalLLMServer]:
    with LocalLLMServer() as server:
        yield server


@pytest.fixture
def memory_only(tmp_path) -> Iterator[None]:
    """Settings with storage off: records go to in-memory sinks only."""
    previous = config.get_settings()
    pipeline.reset_writer()
    config.set_settings(config.settings_from_env(storage=False, database_url=f"sqlite:///{tmp_path}/unused.db", _explicit=True))
    try:
        yield
    finally:
        pipeline.reset_writer()
        config.set_settings(previous)


@pytest.fixture
def records(memory_only) -> Iterator[CapturedAudit]:
    with capture() as sink:
        yield sink


@pytest.fixture
def spans() -> Iterator[SpanCapture]:
    with capture_spans() as captured:
        yield captured
