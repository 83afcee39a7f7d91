"""Deliver a compact report summary to a chat webhook (``wasteaudit report --post-to URL``).

A weekly report nobody opens does nothing: this posts totals, the most wasteful functions, the
alarms and a link to the full report where the team already talks. Payload shapes:

* ``slack`` — ``{"text", "blocks"}``, accepted by Slack incoming webhooks and by the many
  chat tools that take Slack's format (Mattermost, Rocket.Chat, Discord's ``/slack`` URL);
* ``teams`` — a message with one Adaptive Card, as Teams' Workflows incoming webhooks expect;
* ``json`` — the summary itself (``wasteaudit.summary/v1``), for your own receiver.

``auto`` (the default) picks ``teams`` for Teams/Power Automate hosts, else ``slack``.
Only the standard library is used (``urllib.request``). 5xx, 429 and connection errors are
retried with exponential backoff, honouring ``Retry-After``; other 4xx answers fail at once.
Model output never leaves unless asked (``include_content``): without it the summary holds
only names, figures and wasteaudit's own alarm texts, no finding evidence.
The webhook URL is a secret: messages show only its scheme and host.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from wasteaudit.exceptions import WasteAuditError

__all__ = ("DeliveryError", "summarize", "payload", "post", "add_arguments", "deliver")

SUMMARY_SCHEMA = "wasteaudit.summary/v1"
FORMATS = ("auto", "slack", "teams", "json")
_TEAMS_HOSTS = ("webhook.office.com", "logic.azure.com", "powerautomate.com", "powerplatform.com", "office.com")
_RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


class DeliveryError(WasteAuditError):
    """The summary could not be delivered (after retries); the message says why."""


# --- summary -------------------------------------------------------------------------------


def summarize(report: dict[str, Any], *, report_url: str | None = None, include_content: bool = False, top: int = 5) -> dict[str, Any]:
    """The compact, JSON-ready summary of a ``wasteaudit.report/v1`` document."""
    totals = report.get("totals") or {}
    waste = totals.get("waste") or {}
    quality = totals.get("quality") or {}
    efficiency = totals.get("efficiency") or {}
    functions = sorted(
        report.get("by_function") or [],
        key=lambda r: ((r.get("waste") or {}).get("cost_usd") or 0.0, (r.get("waste") or {}).get("tokens") or 0),
        reverse=True,
    )
    out: dict[str, Any] = {
        "schema": SUMMARY_SCHEMA,
        "period": (report.get("period") or {}).get("label"),
        "totals": {
            "runs": totals.get("runs"),
            "calls": totals.get("calls"),
            "output_tokens": totals.get("output_tokens"),
            "cost_usd": totals.get("cost_usd"),
            "waste_tokens": waste.get("tokens"),
            "waste_cost_usd": waste.get("cost_usd"),
            "possible_waste_tokens": (waste.get("possible") or {}).get("tokens"),
            "waste_share": _share(waste.get("tokens"), totals.get("output_tokens")),
            "quality_mean": quality.get("mean"),
            "quality_coverage": quality.get("coverage"),
            "value_per_dollar": efficiency.get("value_per_dollar"),
            "unpriced_calls": totals.get("unpriced_calls"),
        },
        "top_wasteful_functions": [
            {
                "name": row.get("name"),
                "waste_tokens": (row.get("waste") or {}).get("tokens"),
                "waste_cost_usd": (row.get("waste") or {}).get("cost_usd"),
                "output_tokens": row.get("output_tokens"),
                "waste_share": _share((row.get("waste") or {}).get("tokens"), row.get("output_tokens")),
            }
            for row in functions[:top]
            if ((row.get("waste") or {}).get("tokens") or 0) > 0
        ],
        "alarms": [{"kind": a.get("kind"), "scope": a.get("scope"), "subject": a.get("subject"), "message": a.get("message")} for a in report.get("alarms") or []],
        "dropped_records": report.get("dropped_records"),
        "report_url": report_url,
    }
    if include_content:
        out["top_findings"] = [
            {
                "function": f.get("function"),
                "model": f.get("model"),
                "waste_tokens": f.get("waste_tokens"),
                "findings": [{"kind": x.get("kind"), "subkind": x.get("subkind"), "evidence": x.get("evidence")} for x in (f.get("findings") or [])[:3]],
            }
            for f in (report.get("top_findings") or [])[:top]
        ]
    return out


def _share(part: Any, whole: Any) -> float | None:
    return round(part / whole, 4) if isinstance(part, (int, float)) and isinstance(whole, (int, float)) and whole else None


def _money(value: Any) -> str:
    return "n/a" if value is None else f"${value:,.2f}"


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:,}"


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def lines(summary: dict[str, Any], escape: Callable[[str], str] = lambda s: s) -> tuple[str, list[str], list[str], list[str]]:
    """(headline, function lines, alarm lines, content lines): the text every payload shape is built from."""
    t = summary["totals"]
    quality = "n/a" if t["quality_mean"] is None else f"{t['quality_mean']:.2f}"
    head = (
        f"wasteaudit {escape(str(summary['period']))}: {_money(t['waste_cost_usd'])} of {_money(t['cost_usd'])} wasted "
        f"({_num(t['waste_tokens'])} of {_num(t['output_tokens'])} output tokens, {_pct(t['waste_share'])}); "
        f"{_num(t['calls'])} calls in {_num(t['runs'])} runs; quality {quality} "
        f"(coverage {_pct(t['quality_coverage'])})"
    )
    functions = [
        f"{escape(str(f['name']))}: {_num(f['waste_tokens'])} tokens, {_money(f['waste_cost_usd'])} ({_pct(f['waste_share'])} of its output)"
        for f in summary["top_wasteful_functions"]
    ]
    alarms = [f"{escape(str(a['kind']))} ({escape(str(a['subject']))}): {escape(str(a['message']))}" for a in summary["alarms"]]
    content = []
    for f in summary.get("top_findings") or []:
        for x in f["findings"]:
            evidence = json.dumps(x.get("evidence"), ensure_ascii=False)[:300]
            content.append(f"{escape(str(f['function']))} {escape(str(x['kind']))}/{escape(str(x['subkind']))}: {escape(evidence)}")
    return head, functions, alarms, content


def _slack_escape(text: str) -> str:
    """Slack's mrkdwn control characters; anything else is shown as written."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _teams_escape(text: str) -> str:
    """Adaptive Cards' TextBlock markdown: keep names like ``a_b_c`` or ``*`` from being styled."""
    out = text
    for ch in ("\\", "*", "_", "[", "]", "`", "#", "<", ">"):
        out = out.replace(ch, "\\" + ch)
    return out


def payload(summary: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The webhook body for ``fmt`` (``slack``, ``teams`` or ``json``)."""
    if fmt == "json":
        return summary
    if fmt == "slack":
        head, functions, alarms, content = lines(summary, _slack_escape)
        blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": head}}]
        for title, items in (("Most wasteful functions", functions), ("Alarms", alarms), ("Top findings", content)):
            if items:
                text = f"*{title}*\n" + "\n".join(f"• {item}" for item in items)
                blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}})
        url = summary.get("report_url")
        if url:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{_slack_escape(url)}|Full report>"}})
        fallback = head + (f" — {len(alarms)} alarm(s)" if alarms else "")
        return {"text": fallback, "blocks": blocks}
    if fmt == "teams":
        head, functions, alarms, content = lines(summary, _teams_escape)
        body: list[dict[str, Any]] = [{"type": "TextBlock", "text": head, "wrap": True, "weight": "Bolder"}]
        for title, items in (("Most wasteful functions", functions), ("Alarms", alarms), ("Top findings", content)):
            if items:
                body.append({"type": "TextBlock", "text": title, "wrap": True, "weight": "Bolder", "spacing": "Medium"})
                body.append({"type": "TextBlock", "text": "\n".join(f"- {item}" for item in items), "wrap": True})
        card: dict[str, Any] = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard", "version": "1.4", "body": body}
        url = summary.get("report_url")
        if url:
            card["actions"] = [{"type": "Action.OpenUrl", "title": "Full report", "url": url}]
        return {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}]}
    raise ValueError(f"unknown post format {fmt!r}; use one of {', '.join(FORMATS)}")


def detect_format(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower()
    return "teams" if any(host == h or host.endswith("." + h) for h in _TEAMS_HOSTS) else "slack"


# --- posting -------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """Scheme and host only: a webhook's path is its secret."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or '?'}{port}/…"


@dataclass(frozen=True, slots=True)
class PostResult:
    status: int
    attempts: int


def _retry_after(value: str | None, cap: float) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), cap)


def post(
    url: str,
    body: dict[str, Any],
    *,
    timeout: float = 10.0,
    retries: int = 4,
    backoff: float = 1.0,
    max_wait: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> PostResult:
    """POST ``body`` as JSON; retry 5xx/429/connection errors up to ``retries`` times.

    Waits ``backoff * 2**n`` seconds (with up to 10% jitter) or the server's ``Retry-After``,
    at most ``max_wait`` each. Raises :class:`DeliveryError` with the last reason.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError(f"--post-to needs an http(s) URL; got {parts.scheme or 'no scheme'}://…")
    where = redact_url(url)
    try:
        data = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise DeliveryError(f"the report summary is not valid JSON: {exc}") from None
    reason = "no attempt made"
    for attempt in range(retries + 1):
        wait: float | None = None
        request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "wasteaudit-report"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked above
                response.read(65536)
                return PostResult(status=response.status, attempts=attempt + 1)
        except urllib.error.HTTPError as exc:
            text = _error_text(exc)
            reason = f"HTTP {exc.code}{': ' + text if text else ''}"
            if exc.code not in _RETRYABLE:
                raise DeliveryError(f"posting the report summary to {where} failed: {reason} (not retried)") from None
            wait = _retry_after(exc.headers.get("Retry-After") if exc.headers else None, max_wait)
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            inner = getattr(exc, "reason", exc)
            reason = f"connection failed: {inner}"
        if attempt == retries:
            break
        if wait is None:
            wait = min(backoff * (2**attempt), max_wait) * (1 + random.random() * 0.1)
        sleep(wait)
    raise DeliveryError(f"posting the report summary to {where} failed after {retries + 1} attempts: {reason}")


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read(300).decode("utf-8", "replace").strip()
    except Exception:
        return ""
    return " ".join(text.split())[:200]


# --- CLI -----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--post-to`` and its options, on the ``report`` subcommand."""
    group = parser.add_argument_group("delivery")
    group.add_argument("--post-to", metavar="URL", help="post a compact summary to this webhook (Slack/Teams incoming webhook, or any URL); "
                       "env:NAME reads the URL from environment variable NAME, keeping it out of process lists")
    group.add_argument("--post-format", default="auto", choices=FORMATS, help="webhook payload shape (default auto: teams for Teams/Power Automate hosts, else slack)")
    group.add_argument("--post-content", action="store_true", help="include finding evidence (may quote model output) in the summary")
    group.add_argument("--report-url", metavar="URL", help="link to the full report in the summary (default: the HTML file written with -o, if any)")
    group.add_argument("--post-retries", type=int, default=4, metavar="N", help="retries on 5xx/429/connection errors (default 4)")
    group.add_argument("--post-timeout", type=float, default=10.0, metavar="SECONDS", help="timeout of each attempt (default 10)")


def resolve_target(value: str) -> str:
    if value.startswith("env:"):
        name = value[4:]
        url = os.environ.get(name, "").strip()
        if not url:
            raise DeliveryError(f"--post-to {value}: environment variable {name} is not set")
        return url
    return value


def deliver(args: argparse.Namespace, report: dict[str, Any], *, backoff: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> int:
    """Post the summary as the CLI asked; returns the exit code (1 with a message on failure)."""
    try:
        url = resolve_target(args.post_to)
        report_url = args.report_url
        if report_url is None and args.output and args.format == "html":
            report_url = "file://" + os.path.abspath(args.output)
        summary = summarize(report, report_url=report_url, include_content=args.post_content)
        fmt = args.post_format if args.post_format != "auto" else detect_format(url)
        result = post(url, payload(summary, fmt), timeout=args.post_timeout, retries=max(0, args.post_retries), backoff=backoff, sleep=sleep)
    except DeliveryError as exc:
        print(f"wasteaudit: {exc}", file=sys.stderr)
        return 1
    print(f"posted the {summary['period']} summary ({fmt}) to {redact_url(url)}: HTTP {result.status} after {result.attempts} attempt(s)", file=sys.stderr)
    return 0
