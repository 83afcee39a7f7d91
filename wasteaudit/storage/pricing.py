"""Price a call from genai-prices' bundled table (never the network), or the user's overrides.

Runs in the writer thread, so it must be cheap: ``genai_prices.calc_price`` costs ~200 µs a
call, too slow for 10k calls/s, so the model lookup is cached per (provider, model), the
rates per (model, minute, service tier), and the arithmetic (in floats, which the cost column
holds anyway) is done here on the table's own ``ModelPrice`` values, with genai-prices' rules:
``input_tokens`` is the total including cache reads and writes, each of which is charged at
its own rate when the table has one; tiered rates switch on total input tokens.
``tests/storage/test_pricing.py`` checks this against ``calc_price`` itself.

Status: ``priced`` (everything billed has a price), ``partial`` (something billed had no
price of its own: charged at the nearest known rate, or left out, never silently $0 for the
whole call), ``unpriced`` (unknown model or no usage: cost ``None``).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

from wasteaudit.exceptions import ConfigError

if TYPE_CHECKING:
    from wasteaudit.records import CallRecord

__all__ = ("PriceStatus", "OVERRIDE_KEYS", "price_call", "price_data_version", "validate_overrides")

PriceStatus = Literal["priced", "unpriced", "partial"]
OVERRIDE_KEYS = ("input", "output", "cache_read", "cache_write")
_CACHE_LIMIT = 4096

_lock = threading.Lock()
_models: dict[tuple[str, str], Any] = {}  # (provider, model ref) -> genai_prices ModelInfo, or None if unknown
_version: str | None = None


def price_data_version() -> str:
    """The version of the price table, stored with each cost so it can be recomputed later."""
    global _version
    if _version is None:
        from importlib.metadata import version

        _version = f"genai-prices=={version('genai-prices')}"
    return _version


def validate_overrides(overrides: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Decimal]]:
    """Check ``{model: {"input": usd_per_mtok, ...}}`` once, at configuration time.

    Keys are ``input``, ``output``, ``cache_read``, ``cache_write`` (USD per million tokens);
    raises ``ConfigError`` on anything else, so a typo fails at ``configure()``, not silently.
    """
    result: dict[str, dict[str, Decimal]] = {}
    for model, prices in (overrides or {}).items():
        if not isinstance(model, str) or not isinstance(prices, Mapping):
            raise ConfigError(f"price override for {model!r} must map a model name to {{'input': usd_per_mtok, ...}}")
        unknown = set(prices) - set(OVERRIDE_KEYS)
        if unknown:
            raise ConfigError(
                f"price override for {model!r} has unknown keys {sorted(unknown)}; use {', '.join(OVERRIDE_KEYS)}"
            )
        clean: dict[str, Decimal] = {}
        for key, value in prices.items():
            try:
                if isinstance(value, bool):
                    raise TypeError
                number = Decimal(str(value))
            except (InvalidOperation, TypeError, ValueError):
                raise ConfigError(f"price override {model!r}.{key} must be a number (USD per million tokens)") from None
            if not number.is_finite() or number < 0:
                raise ConfigError(f"price override {model!r}.{key} must be a finite number >= 0")
            clean[key] = number
        result[model] = clean
    return result


def price_call(
    record: CallRecord, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[float | None, str | None, PriceStatus]:
    """``(cost_usd, price_version, status)`` for one call; never raises.

    An override for the response model (else the request model) wins over the table.
    """
    models = [m for m in (record.response_model, record.request_model) if m]
    if not models or record.usage_source == "missing":
        return None, _safe_version(), "unpriced"
    if record.input_tokens is None and record.output_tokens is None:
        return None, _safe_version(), "unpriced"
    try:
        if overrides:
            for model in models:
                override = overrides.get(model)
                if override is not None:
                    return _price_override(record, override)
        return _price_table(record, models)
    except Exception:  # a malformed table entry or odd usage must not cost us the record
        return None, _safe_version(), "unpriced"


def _safe_version() -> str | None:
    try:
        return price_data_version()
    except Exception:
        return None


# --- usage ----------------------------------------------------------------------------------


class _Usage:
    """The token counts pricing needs, with genai-prices' meaning (input includes cache)."""

    __slots__ = ("input", "cache_read", "cache_write", "cache_write_1h", "output", "web_searches", "unknown_tools")

    def __init__(self, record: CallRecord) -> None:
        self.cache_read = record.input_cache_read_tokens or 0
        self.cache_write = record.input_cache_write_tokens or 0
        self.output = record.output_tokens or 0
        # input_tokens is normalized to include cache reads and writes; never let parts exceed it.
        self.input = max(record.input_tokens or 0, self.cache_read + self.cache_write)
        details = record.usage_details
        if details and isinstance(details, Mapping):
            self.cache_write_1h = min(_cache_write_1h(details), self.cache_write)
            self.web_searches, self.unknown_tools = _server_tools(details)
        else:
            self.cache_write_1h, self.web_searches, self.unknown_tools = 0, 0, False


def _int(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def _cache_write_1h(details: Mapping[str, Any]) -> int:
    """Anthropic's 1-hour cache writes, from the raw usage shape or a flattened one."""
    creation = details.get("cache_creation")
    if isinstance(creation, Mapping):
        return _int(creation.get("ephemeral_1h_input_tokens"))
    return _int(details.get("ephemeral_1h_input_tokens") or details.get("cache_write_1h_tokens"))


def _server_tools(details: Mapping[str, Any]) -> tuple[int, bool]:
    """(web searches, whether other billed server tools were used) from Anthropic's ``server_tool_use``."""
    tools = details.get("server_tool_use")
    web = _int(details.get("web_search_requests"))
    other = False
    if isinstance(tools, Mapping):
        for key, value in tools.items():
            if key == "web_search_requests":
                web += _int(value)
            elif _int(value):
                other = True
    return web, other


# --- arithmetic -----------------------------------------------------------------------------

class _Rates:
    """One model's rates at one time: None (no price), USD per MTok (per 1000 for web searches),
    or ``(base, ((start, rate), ...))`` for rates tiered on the call's total input tokens."""

    __slots__ = ("input", "output", "cache_read", "cache_write", "cache_write_1h", "web_search_k")

    def __init__(self, get: Any) -> None:
        self.input = _rate(get("input_mtok"))
        self.output = _rate(get("output_mtok"))
        self.cache_read = _rate(get("cache_read_mtok"))
        self.cache_write = _rate(get("cache_write_mtok"))
        self.cache_write_1h = _rate(get("cache_write_1h_mtok"))
        self.web_search_k = _rate(get("web_searches_kcount"))


def _rate(price: Any) -> Any:
    if price is None:
        return None
    if isinstance(price, (Decimal, int, float)):
        return float(price)
    return float(price.base), tuple((int(t.start), float(t.price)) for t in price.tiers)  # TieredPrices


def _charge(rate: Any, count: int, total_input: int) -> float:
    if rate is None or not count:
        return 0.0
    if type(rate) is tuple:
        base, tiers = rate
        for start, tier_rate in reversed(tiers):
            if total_input > start:
                return tier_rate * count
        return base * count
    return rate * count


def _cost(rates: _Rates, usage: _Usage, partial: bool) -> tuple[float, bool]:
    """USD for ``usage``, and whether some billed part had no price of its own.

    Most specific first, as genai-prices' unit tree does: each part with a price of its own is
    taken out of its parent (1h writes out of cache writes, cache reads and writes out of input);
    a part without one stays in its parent and is charged at the parent's rate (``partial``).
    """
    total, uncached, cache_write, n_in = 0.0, usage.input, usage.cache_write, usage.input
    if usage.cache_write_1h:
        if rates.cache_write_1h is not None:
            total += _charge(rates.cache_write_1h, usage.cache_write_1h, n_in)
            uncached -= usage.cache_write_1h
            cache_write -= usage.cache_write_1h
        else:
            partial = True
    if cache_write:
        if rates.cache_write is not None:
            total += _charge(rates.cache_write, cache_write, n_in)
            uncached -= cache_write
        else:
            partial = True
    if usage.cache_read:
        if rates.cache_read is not None:
            total += _charge(rates.cache_read, usage.cache_read, n_in)
            uncached -= usage.cache_read
        else:
            partial = True
    if (uncached and rates.input is None) or (usage.output and rates.output is None):
        partial = True
    total += _charge(rates.input, uncached, n_in) + _charge(rates.output, usage.output, n_in)
    total /= 1_000_000
    if usage.web_searches:
        if rates.web_search_k is None:
            partial = True
        else:
            total += _charge(rates.web_search_k, usage.web_searches, n_in) / 1000
    return total, partial


# --- overrides ------------------------------------------------------------------------------

_override_cache: dict[int, tuple[Mapping[str, Any], _Rates, str]] = {}


def _price_override(record: CallRecord, prices: Mapping[str, Any]) -> tuple[float | None, str, PriceStatus]:
    cached = _override_cache.get(id(prices))
    if cached is None or cached[0] is not prices:
        clean = {key: Decimal(str(value)) for key, value in prices.items()}
        names = {"input": "input_mtok", "output": "output_mtok", "cache_read": "cache_read_mtok",
                 "cache_write": "cache_write_mtok"}
        rates = _Rates({names[k]: v for k, v in clean.items() if k in names}.get)
        canonical = json.dumps({k: str(v.normalize()) for k, v in sorted(clean.items())})
        version = "override:" + hashlib.sha256(canonical.encode()).hexdigest()[:12]
        with _lock:
            if len(_override_cache) >= _CACHE_LIMIT:
                _override_cache.clear()
            _override_cache[id(prices)] = cached = (prices, rates, version)
    _, rates, version = cached
    usage = _Usage(record)
    partial = record.input_tokens is None or record.output_tokens is None or usage.unknown_tools
    cost, partial = _cost(rates, usage, partial)
    return cost, version, "partial" if partial else "priced"


# --- genai-prices table ---------------------------------------------------------------------


def _lookup(provider: str, model: str) -> Any:
    key = (provider, model)
    try:
        return _models[key]
    except KeyError:
        pass
    try:
        _, info = _bundled().find_provider_model(model, None, provider, None)
    except LookupError:
        info = None
    with _lock:
        if len(_models) >= _CACHE_LIMIT:  # bounded: model names are open-ended
            _models.clear()
        _models[key] = info
    return info


_snapshot: Any = None


def _bundled() -> Any:
    """genai-prices' bundled table; never the snapshot an app may be auto-updating over the network."""
    global _snapshot
    if _snapshot is None:
        from genai_prices.data import providers
        from genai_prices.data_snapshot import DataSnapshot

        _snapshot = DataSnapshot(providers=providers, from_auto_update=False)
    return _snapshot


def _price_context(record: CallRecord) -> tuple[tuple[str, str], ...]:
    tier = record.service_tier.lower() if record.service_tier else ""
    details = record.usage_details
    fast = bool(details) and isinstance(details, Mapping) and details.get("speed") == "fast"
    if not tier and not fast:
        return ()
    context: list[tuple[str, str]] = []
    if tier == "batch":
        context.append(("processing", "batch"))
    elif record.provider == "openai" and tier in ("default", "flex", "priority", "fast"):
        context.append(("service_tier", tier))
    if fast:
        context.append(("speed", "fast"))
    return tuple(context)


def _table_rates(info: Any, started_at: float, context: tuple[tuple[str, str], ...]) -> _Rates:
    when = datetime.fromtimestamp(started_at, timezone.utc)
    return _Rates(info.get_prices(when, dict(context) or None).__dict__.get)


# gen_ai.provider.name values (OpenTelemetry conventions) -> genai-prices provider ids. Self-hosted
# servers (ollama, vllm, llama.cpp, ...) have no entry on purpose: they stay unpriced unless the
# user sets a price per model.
PROVIDER_IDS = {
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "aws.bedrock": "aws",
    "x_ai": "x-ai",
    "mistral_ai": "mistral",
    "moonshot_ai": "moonshotai",
}


# (provider, models, minute, price context) -> the rates, or None for a model without a price: the
# writer prices every call, and most calls of a minute share a model. Price windows (start
# dates, off-peak hours) are minute-grained at most.
_call_rates: dict[tuple[Any, ...], _Rates | None] = {}


def _price_table(record: CallRecord, models: list[str]) -> tuple[float | None, str, PriceStatus]:
    started_at = record.started_at or time.time()
    context = _price_context(record)
    key = (record.provider, *models, int(started_at // 60), context)
    try:
        rates = _call_rates[key]
    except KeyError:
        rates = _find_rates(record.provider, models, started_at, context)
        with _lock:
            if len(_call_rates) >= _CACHE_LIMIT:
                _call_rates.clear()
            _call_rates[key] = rates
    if rates is None:
        return None, price_data_version(), "unpriced"
    usage = _Usage(record)
    partial = record.input_tokens is None or record.output_tokens is None or usage.unknown_tools
    cost, partial = _cost(rates, usage, partial)
    return cost, price_data_version(), "partial" if partial else "priced"


def _find_rates(provider: str | None, models: list[str], started_at: float, context: tuple[tuple[str, str], ...]) -> _Rates | None:
    name = (provider or "").lower()
    name = PROVIDER_IDS.get(name, name)
    for model in models:
        info = _lookup(name, model.lower())
        if info is not None:
            return _table_rates(info, started_at, context)
    return None
