"""``wasteaudit report --post-to``: a compact summary posted to a loopback webhook receiver that
fails first, with retries, Retry-After, a clear error, and no model content unless asked."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Iterator

import pytest
from report.builders import Dataset, monday
from report.webhook_receiver import Receiver

from wasteaudit.cli import main
from wasteaudit.report import deliver

WEEK = "2026-W45"
SECRET_MODEL_TEXT = "SECRET-MODEL-OUTPUT-4711"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('post') / 'audit.db'}"
    data = Dataset()
    start = monday(WEEK) + timedelta(hours=9)
    for i in range(6):
        data.run("support.answer", at=start + timedelta(hours=i), quality=0.8, output_tokens=200,
                 waste=(("redundant", "repetition", 50),), evidence={"excerpt": SECRET_MODEL_TEXT}, text=SECRET_MODEL_TEXT)
        data.run("search.<rank>", at=start + timedelta(hours=i, minutes=5), quality=0.9, output_tokens=100, waste=(("failed", "truncated", 10),))
    data.write(url)
    return url


def run_cli(db_url: str, *extra: str) -> int:
    return main(["--database-url", db_url, "report", "--week", WEEK, *extra])


def test_posts_a_slack_summary_after_retrying_server_errors(db_url, receiver, capsys) -> None:
    receiver.script = [(500, {}), (429, {"Retry-After": "0"}), (503, {"Retry-After": "0"})]
    code = run_cli(db_url, "--post-to", receiver.url, "--post-retries", "3")
    err = capsys.readouterr().err
    assert code == 0, err
    assert len(receiver.bodies) == 4 and all(b == receiver.bodies[0] for b in receiver.bodies)
    body = receiver.bodies[-1]
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith(f"wasteaudit {WEEK}:")
    text = json.dumps(body)
    assert "support.answer" in text and "search.&lt;rank&gt;" in text  # Slack control characters escaped
    assert SECRET_MODEL_TEXT not in text
    assert "after 4 attempt(s)" in err and "secret-token" not in err


def test_post_content_includes_finding_evidence_only_when_asked(db_url, receiver) -> None:
    assert run_cli(db_url, "--post-to", receiver.url, "--post-format", "json", "--post-content") == 0
    body = receiver.bodies[-1]
    assert body["schema"] == "wasteaudit.summary/v1" and body["period"] == WEEK
    assert SECRET_MODEL_TEXT in json.dumps(body["top_findings"])
    names = [f["name"] for f in body["top_wasteful_functions"]]
    assert names[0] == "support.answer" and set(names) == {"support.answer", "search.<rank>"}
    assert body["totals"]["waste_tokens"] == 6 * 50 + 6 * 10


def test_teams_card_and_link_to_the_written_html_report(db_url, receiver, tmp_path) -> None:
    out = tmp_path / "week.html"
    assert run_cli(db_url, "--format", "html", "-o", str(out), "--post-to", receiver.url, "--post-format", "teams") == 0
    assert out.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    (body,) = receiver.bodies
    card = body["attachments"][0]["content"]
    assert body["type"] == "message" and card["type"] == "AdaptiveCard"
    assert card["actions"][0]["url"] == "file://" + str(out)
    assert "support.answer" in json.dumps(card)


def test_client_error_fails_at_once_with_a_clear_message(db_url, receiver, capsys) -> None:
    receiver.script = [(400, {})]
    assert run_cli(db_url, "--post-to", receiver.url) == 1
    err = capsys.readouterr().err
    assert "HTTP 400: invalid_payload (not retried)" in err
    assert "http://127.0.0.1:" in err and "secret-token" not in err
    assert len(receiver.bodies) == 1


def test_gives_up_after_the_retries_and_exits_1(db_url, receiver, capsys) -> None:
    receiver.script = [(502, {"Retry-After": "0"})] * 3
    assert run_cli(db_url, "--post-to", receiver.url, "--post-retries", "2") == 1
    assert "failed after 3 attempts: HTTP 502" in capsys.readouterr().err
    assert len(receiver.bodies) == 3


def test_url_from_environment_variable(db_url, receiver, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TEAM_WEBHOOK", receiver.url)
    assert run_cli(db_url, "--post-to", "env:TEAM_WEBHOOK") == 0
    assert len(receiver.bodies) == 1
    monkeypatch.delenv("TEAM_WEBHOOK")
    assert run_cli(db_url, "--post-to", "env:TEAM_WEBHOOK") == 1
    assert "TEAM_WEBHOOK is not set" in capsys.readouterr().err


def test_backoff_doubles_and_honours_retry_after(receiver) -> None:
    receiver.script = [(500, {}), (500, {}), (429, {"Retry-After": "7"}), (503, {})]
    waits: list[float] = []
    result = deliver.post(receiver.url, {"text": "hi"}, retries=4, backoff=0.5, sleep=waits.append)
    assert result.attempts == 5 and result.status == 200
    assert 0.5 <= waits[0] <= 0.55 and 1.0 <= waits[1] <= 1.1 and waits[2] == 7.0 and 4.0 <= waits[3] <= 4.4


def test_connection_refused_is_retried_then_reported(capsys) -> None:
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    waits: list[float] = []
    with pytest.raises(deliver.DeliveryError, match="after 3 attempts: connection failed"):
        deliver.post(f"http://127.0.0.1:{port}/hook", {"text": "x"}, retries=2, backoff=0.01, sleep=waits.append)
    assert len(waits) == 2


def test_only_http_urls_are_posted_to() -> None:
    with pytest.raises(deliver.DeliveryError, match="http"):
        deliver.post("file:///etc/passwd", {"text": "x"})


def test_auto_format_picks_teams_for_teams_hosts() -> None:
    assert deliver.detect_format("https://prod-01.westeurope.logic.azure.com:443/workflows/abc") == "teams"
    assert deliver.detect_format("https://example.webhook.office.com/webhookb2/x") == "teams"
    assert deliver.detect_format("https://hooks.slack.com/services/T/B/X") == "slack"


def test_summary_of_an_empty_week_has_no_functions_and_null_figures() -> None:
    summary = deliver.summarize({"period": {"label": "2026-W01"}, "totals": {"runs": 0, "calls": 0, "output_tokens": 0, "cost_usd": 0.0,
                                                                            "waste": {"tokens": 0, "cost_usd": 0.0}}, "by_function": [], "alarms": []})
    assert summary["top_wasteful_functions"] == [] and summary["totals"]["waste_share"] is None
    text = deliver.payload(summary, "slack")["text"]
    assert "n/a" in text and "2026-W01" in text
