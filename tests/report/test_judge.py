"""The optional LLM judge: its call is tagged and kept apart, its score lands on the judged run."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import openai
import pytest
from builders import Dataset, monday

from wasteaudit import audit, current_run_id
from wasteaudit.instrumentation import active_instrumentations, instrument_openai
from wasteaudit.judge import JUDGE_FUNCTION, judge, normalize, parse_verdict
from wasteaudit.localllm import Reply
from wasteaudit.localllm import openai_bodies as ob


@pytest.fixture
def openai_client(records: Any, llm_server: Any) -> Any:
    instrument_openai()
    try:
        yield openai.OpenAI(base_url=llm_server.openai_base_url, api_key="sk-test-not-a-real-key", max_retries=0)
    finally:
        current = active_instrumentations().get("openai")
        if current is not None:
            current.undo()


def test_judge_call_is_tagged_and_its_score_goes_to_the_app_run(openai_client: Any, llm_server: Any, records: Any) -> None:
    llm_server.enqueue(Reply(json=ob.chat_completion('{"score": 8, "reason": "complete and correct"}', prompt_tokens=90, completion_tokens=14)))

    @audit(name="support.answer")
    def answer(question: str) -> tuple[str, Any, str | None]:
        text = "Reset it from Settings > Security."
        verdict = judge(text, client=openai_client, model="gpt-4o-mini", rubric="Does it solve the problem?", question=question)
        return text, verdict, current_run_id()

    _, verdict, app_run = answer("How do I reset my password?")

    assert verdict.score == pytest.approx(0.8) and verdict.raw_score == 8 and verdict.reason == "complete and correct"
    (call,) = records.calls
    assert call.function == JUDGE_FUNCTION  # so reports keep it out of the app's waste and cost
    judge_run = next(r for r in records.runs if r.name == JUDGE_FUNCTION)
    assert judge_run.tags == {"wasteaudit.judge": "1"} and judge_run.parent_id == app_run and call.run_id == judge_run.id
    (score,) = [s for s in records.scores if s.name == "judge"]
    assert (score.run_id, score.value, score.source) == (app_run, pytest.approx(0.8), "judge:gpt-4o-mini")
    assert score.raw_value["raw"] == 8 and score.raw_value["scale"] == [0.0, 10.0] and score.raw_value["reason"] == "complete and correct"
    prompt = llm_server.requests[-1].json["messages"][0]["content"]
    assert "Does it solve the problem?" in prompt and "Settings > Security" in prompt and "How do I reset my password?" in prompt
    assert "Length is not a merit" not in prompt  # a custom rubric replaces the default one
    assert llm_server.requests[-1].json["temperature"] == 0


def test_an_unreadable_verdict_records_nothing(openai_client: Any, llm_server: Any, records: Any) -> None:
    llm_server.enqueue(Reply(json=ob.chat_completion("I cannot grade this.", completion_tokens=5)))
    result = judge("text", client=openai_client, model="gpt-4o-mini", run_id="f" * 32)
    assert result.score is None and "no score" in result.error
    assert not records.scores
    llm_server.enqueue(Reply(json=ob.chat_completion('{"score": 42}', completion_tokens=5)))
    result = judge("text", client=openai_client, model="gpt-4o-mini", run_id="f" * 32)
    assert result.score is None and "outside the scale" in result.error and not records.scores


class _FakeAnthropic:
    """Just the shape of ``anthropic.Anthropic().messages.create`` the judge uses."""

    def __init__(self, reply: str) -> None:
        self.sent: list[dict[str, Any]] = []

        def create(**kwargs: Any) -> Any:
            self.sent.append(kwargs)
            return SimpleNamespace(content=[SimpleNamespace(type="text", text=reply)])

        self.messages = SimpleNamespace(create=create)


def test_anthropic_shaped_client_and_a_run_id_target_read_from_the_database(records: Any, tmp_path: Any) -> None:
    ds = Dataset()
    run_id = ds.run("support.answer", at=monday("2026-W47") + timedelta(hours=1), return_value="Use the reset link.")
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    ds.write(url)
    client = _FakeAnthropic('Sure: {"score": 3, "reason": "vague"}')
    result = judge(run_id=run_id, client=client, model="claude-x", scale=(1, 5), name="quality", database_url=url)
    assert result.score == pytest.approx(0.5) and result.run_id == run_id
    assert "Use the reset link." in client.sent[0]["messages"][0]["content"]
    (score,) = records.scores
    assert (score.run_id, score.name, score.source) == (run_id, "quality", "judge:claude-x")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"score": 7.5, "reason": "ok"}', (7.5, "ok")),
        ('```json\n{"score": 9}\n```', (9.0, None)),
        ("Score: 6/10", (6.0, None)),
        ('{"score": true}', (None, None)),
        ("", (None, None)),
    ],
)
def test_parse_verdict(reply: str, expected: tuple[Any, Any]) -> None:
    assert parse_verdict(reply) == expected


def test_normalize() -> None:
    assert normalize(8, 0, 10) == 0.8 and normalize(1, 1, 5) == 0.0 and normalize(12, 0, 10) == 1.0
    with pytest.raises(ValueError):
        normalize(1, 5, 5)
