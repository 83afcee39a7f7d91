"""Pricing from genai-prices' bundled table: exact dollars, overrides, unknowns, and parity with calc_price."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import genai_prices
import pytest
from genai_prices import data_snapshot

from wasteaudit.exceptions import ConfigError
from wasteaudit.storage.pricing import price_call, price_data_version, validate_overrides

NOV_2026 = datetime(2026, 11, 2, 12, 0, tzinfo=timezone.utc).timestamp()


def _rates(provider: str, model: str) -> dict[str, Decimal]:
    _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
    prices = info.get_prices(datetime.fromtimestamp(NOV_2026, timezone.utc))
    return {key: value for key, value in prices.__dict__.items() if isinstance(value, Decimal)}


def test_openai_call_with_cached_input_is_priced_to_the_cent_fraction(call: Any) -> None:
    # OpenAI's input_tokens include the cached ones: 800 fresh + 200 cached.
    assert _rates("openai", "gpt-4o").items() >= {
        "input_mtok": Decimal("2.5"),
        "cache_read_mtok": Decimal("1.25"),
        "output_mtok": Decimal("10"),
    }.items()
    record = call(
        provider="openai", request_model="gpt-4o", response_model="gpt-4o-2024-08-06", started_at=NOV_2026,
        input_tokens=1000, input_cache_read_tokens=200, output_tokens=500,
    )

    cost, version, status = price_call(record)

    # 800 x 2.50 + 200 x 1.25 + 500 x 10.00 = 7250 USD per million tokens
    assert cost == pytest.approx(0.00725, rel=1e-12)
    assert status == "priced"
    assert version == f"genai-prices=={genai_prices.__version__}" == price_data_version()


def test_anthropic_call_with_cache_reads_and_writes_is_priced_per_part(call: Any) -> None:
    assert _rates("anthropic", "claude-3-5-haiku-20241022").items() >= {
        "input_mtok": Decimal("0.8"),
        "cache_read_mtok": Decimal("0.08"),
        "cache_write_mtok": Decimal("1"),
        "output_mtok": Decimal("4"),
    }.items()
    # Anthropic reported input_tokens=5000 (excluding cache), cache_read=2000, cache_creation=3000;
    # the record holds the normalized total, 10000.
    record = call(
        provider="anthropic", api="messages", request_model="claude-3-5-haiku-20241022", response_model=None,
        started_at=NOV_2026, input_tokens=10_000, input_cache_read_tokens=2000, input_cache_write_tokens=3000,
        output_tokens=500,
    )

    cost, _, status = price_call(record)

    # 5000 x 0.80 + 2000 x 0.08 + 3000 x 1.00 + 500 x 4.00 = 9160 USD per million tokens
    assert cost == pytest.approx(0.00916, rel=1e-12)
    assert status == "priced"


def test_anthropic_one_hour_cache_writes_use_their_own_rate(call: Any) -> None:
    assert _rates("anthropic", "claude-opus-4-1").items() >= {
        "input_mtok": Decimal("15"),
        "cache_read_mtok": Decimal("1.5"),
        "cache_write_mtok": Decimal("18.75"),
        "cache_write_1h_mtok": Decimal("30"),
        "output_mtok": Decimal("75"),
    }.items()
    record = call(
        provider="anthropic", request_model="claude-opus-4-1", response_model=None, started_at=NOV_2026,
        input_tokens=8000, input_cache_read_tokens=4000, input_cache_write_tokens=3000, output_tokens=200,
        usage_details={"cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 1000}},
    )

    cost, _, status = price_call(record)

    # 1000 x 15 + 4000 x 1.50 + 2000 x 18.75 + 1000 x 30 + 200 x 75 = 103500 USD per million tokens
    assert cost == pytest.approx(0.1035, rel=1e-12)
    assert status == "priced"


def test_an_override_wins_over_the_table(call: Any) -> None:
    overrides = validate_overrides({"gpt-4o": {"input": 1, "output": "2", "cache_read": 0.5}})
    record = call(request_model="gpt-4o", response_model=None, input_tokens=1000, input_cache_read_tokens=200,
                  output_tokens=500)

    cost, version, status = price_call(record, overrides)

    assert cost == pytest.approx((800 * 1 + 200 * 0.5 + 500 * 2) / 1e6, rel=1e-12)
    assert status == "priced"
    assert version is not None and version.startswith("override:")
    assert price_call(record, validate_overrides({"gpt-4o": {"input": 1.0, "output": 2, "cache_read": "0.50"}}))[1] == version


def test_an_override_without_a_cache_rate_charges_input_and_says_partial(call: Any) -> None:
    record = call(request_model="mine", response_model=None, input_tokens=1000, input_cache_read_tokens=200,
                  output_tokens=500)

    cost, _, status = price_call(record, {"mine": {"input": 1, "output": 2}})

    assert cost == pytest.approx((1000 * 1 + 500 * 2) / 1e6, rel=1e-12)
    assert status == "partial"


def test_an_unknown_model_is_unpriced_not_free(call: Any) -> None:
    record = call(request_model="acme-llm-9000", response_model=None)

    assert price_call(record) == (None, price_data_version(), "unpriced")


def test_the_request_model_is_used_when_the_response_model_is_unknown(call: Any) -> None:
    record = call(request_model="gpt-4o", response_model="gpt-4o-some-future-snapshot-xyz", started_at=NOV_2026)

    assert price_call(record)[0] == pytest.approx(0.00725, rel=1e-12)


@pytest.mark.parametrize(
    "fields",
    [
        {"usage_source": "missing", "input_tokens": None, "input_cache_read_tokens": None, "output_tokens": None},
        {"input_tokens": None, "input_cache_read_tokens": None, "output_tokens": None},
        {"request_model": None, "response_model": None},
    ],
)
def test_missing_usage_or_model_is_unpriced(call: Any, fields: dict[str, Any]) -> None:
    cost, _, status = price_call(call(**fields))

    assert (cost, status) == (None, "unpriced")


def test_half_known_usage_is_priced_as_partial(call: Any) -> None:
    record = call(request_model="gpt-4o", response_model=None, started_at=NOV_2026, input_tokens=None,
                  input_cache_read_tokens=None, output_tokens=500)

    assert price_call(record) == (pytest.approx(0.005, rel=1e-12), price_data_version(), "partial")


def test_server_tool_fees_are_added_or_flagged(call: Any) -> None:
    base = {"provider": "anthropic", "request_model": "claude-3-5-haiku-20241022", "response_model": None,
            "started_at": NOV_2026, "input_tokens": 1000, "input_cache_read_tokens": None, "output_tokens": 100}
    searched = call(**base, usage_details={"server_tool_use": {"web_search_requests": 3}})
    fetched = call(**base, usage_details={"server_tool_use": {"web_fetch_requests": 2}})
    tokens_only = (1000 * 0.8 + 100 * 4) / 1e6

    assert price_call(searched)[0] == pytest.approx(tokens_only + 3 * 10 / 1000, rel=1e-12)
    assert price_call(searched)[2] == "priced"
    assert price_call(fetched) == (pytest.approx(tokens_only, rel=1e-12), price_data_version(), "partial")


@pytest.mark.parametrize(
    ("provider", "model", "usage", "context"),
    [
        ("openai", "gpt-4o-mini", {"input_tokens": 5000, "cache_read_tokens": 1024, "output_tokens": 700}, {}),
        ("openai", "gpt-5", {"input_tokens": 5000, "cache_read_tokens": 1024, "output_tokens": 7000}, {}),
        ("openai", "gpt-5", {"input_tokens": 5000, "cache_read_tokens": 1024, "output_tokens": 7000},
         {"service_tier": "flex"}),
        ("openai", "o3-mini", {"input_tokens": 321, "output_tokens": 4000}, {}),
        ("anthropic", "claude-sonnet-4-5-20250929",
         {"input_tokens": 300_000, "cache_read_tokens": 2000, "cache_write_tokens": 3000, "cache_write_1h_tokens": 1000,
          "output_tokens": 500}, {}),
        ("anthropic", "claude-sonnet-4-5-20250929", {"input_tokens": 90_000, "cache_write_tokens": 3000,
                                                     "output_tokens": 500}, {}),
        ("anthropic", "claude-3-haiku-20240307", {"input_tokens": 2000, "output_tokens": 10}, {}),
    ],
)
def test_agrees_with_genai_prices_calc_price(
    call: Any, provider: str, model: str, usage: dict[str, int], context: dict[str, str]
) -> None:
    when = datetime.fromtimestamp(NOV_2026, timezone.utc)
    expected = genai_prices.calc_price(
        genai_prices.Usage(**usage), model, provider_id=provider, genai_request_timestamp=when,
        price_context=context or None,
    ).total_price
    details = {"cache_creation": {"ephemeral_1h_input_tokens": usage["cache_write_1h_tokens"]}} \
        if "cache_write_1h_tokens" in usage else None
    record = call(
        provider=provider, request_model=model, response_model=None, started_at=NOV_2026,
        input_tokens=usage["input_tokens"], input_cache_read_tokens=usage.get("cache_read_tokens"),
        input_cache_write_tokens=usage.get("cache_write_tokens"), output_tokens=usage["output_tokens"],
        usage_details=details, service_tier=context.get("service_tier"),
    )

    cost, _, status = price_call(record)

    assert status == "priced"
    assert cost == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"m": {"inptu": 1}}, "unknown keys"),
        ({"m": {"input": "cheap"}}, "must be a number"),
        ({"m": {"input": -1}}, ">= 0"),
        ({"m": {"input": float("nan")}}, "finite"),
        ({"m": 3}, "must map"),
    ],
)
def test_bad_overrides_are_rejected_at_configuration(overrides: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_overrides(overrides)


@pytest.mark.parametrize(
    ("provider", "model"),
    [("x_ai", "grok-3"), ("mistral_ai", "mistral-large-latest"), ("gcp.gemini", "gemini-2.5-flash"), ("azure.ai.openai", "gpt-4o")],
)
def test_semconv_provider_names_find_their_genai_prices_entry(provider, model):
    from wasteaudit.records import CallRecord
    from wasteaudit.storage.pricing import price_call

    record = CallRecord(id="c", provider=provider, operation="chat", api="chat.completions", started_at=1.76e9,
                        request_model=model, response_model=model, usage_source="provider",
                        input_tokens=1000, output_tokens=500)
    cost, _, status = price_call(record)
    assert status == "priced" and cost is not None and cost > 0


def test_self_hosted_models_stay_unpriced():
    from wasteaudit.records import CallRecord
    from wasteaudit.storage.pricing import price_call

    record = CallRecord(id="c", provider="ollama", operation="chat", api="chat.completions", started_at=1.76e9,
                        request_model="llama3.1:8b", usage_source="provider", input_tokens=10, output_tokens=5)
    assert price_call(record)[2] == "unpriced"
