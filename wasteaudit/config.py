"""Configuration: one table of options, each settable in code or by a ``WASTEAUDIT_*`` variable.

Precedence is code argument > environment variable > default. ``configure()`` is keyword-only
and validates eagerly (a bad value raises :class:`~wasteaudit.exceptions.ConfigError` at start-up,
never later on the request path). Calling it is optional: the defaults apply, with one warning
the first time a record is made.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from wasteaudit.exceptions import ConfigError

ContentMode = Literal["full", "redacted", "hashed", "none"]
CONTENT_MODES: tuple[str, ...] = ("full", "redacted", "hashed", "none")
ANTHROPIC_SDK_SPAN_MODES: tuple[str, ...] = ("replace", "enrich")


@dataclass(frozen=True)
class Option:
    """One row of the option table: the source of the configuration reference in docs/."""

    name: str
    env: str
    default: Any
    kind: str
    doc: str


OPTIONS: tuple[Option, ...] = (
    Option("enabled", "WASTEAUDIT_ENABLED", True, "bool", "Master switch; `0` turns capture, storage and export off."),
    Option(
        "database_url",
        "WASTEAUDIT_DATABASE_URL",
        "sqlite:///wasteaudit.db",
        "str",
        "SQLAlchemy URL of the audit database; a relative SQLite path is resolved against the working directory.",
    ),
    Option("content_mode", "WASTEAUDIT_CONTENT_MODE", "full", "str", "What text is kept for scoring: full, redacted, hashed or none."),
    Option("hash_key", "WASTEAUDIT_HASH_KEY", "", "str", "Key for keyed hashes in `hashed` mode; set one per deployment."),
    Option("max_output_bytes", "WASTEAUDIT_MAX_OUTPUT_BYTES", 262_144, "int", "Cap on stored text per output; beyond it the call is marked partly measurable."),
    Option("max_return_bytes", "WASTEAUDIT_MAX_RETURN_BYTES", 65_536, "int", "Cap on the captured return value of an audited function."),
    Option("capture_return", "WASTEAUDIT_CAPTURE_RETURN", True, "bool", "Capture audited functions' return values (needed to measure unused output)."),
    Option("queue_size", "WASTEAUDIT_QUEUE_SIZE", 10_000, "int", "Records buffered in memory for the writer; beyond it new records are dropped and counted."),
    Option("batch_size", "WASTEAUDIT_BATCH_SIZE", 500, "int", "Records written per database transaction."),
    Option("flush_interval", "WASTEAUDIT_FLUSH_INTERVAL", 0.5, "float", "Seconds the writer waits to fill a batch."),
    Option("auto_migrate", "WASTEAUDIT_AUTO_MIGRATE", True, "bool", "Upgrade the schema on first use (under a lock); off for teams that run `wasteaudit db upgrade`."),
    Option("storage", "WASTEAUDIT_STORAGE", True, "bool", "Write records to the database (off: spans and in-memory sinks only)."),
    Option(
        "finish_in_background",
        "WASTEAUDIT_FINISH_IN_BACKGROUND",
        True,
        "bool",
        "Finish calls (span made and ended with the call's own times, end attributes, record hand-off) on a background thread; off: on the calling thread, so span processors see a call's span start when the call starts and its end when the SDK call returns.",
    ),
    Option(
        "anthropic_sdk_span",
        "WASTEAUDIT_ANTHROPIC_SDK_SPAN",
        "replace",
        "str",
        "Anthropic clients whose own tracing is on: `replace` keeps the SDK from making its `anthropic.messages.create` span for captured calls and makes that span itself (same name, scope, attributes and status, plus ours; most work off the calling thread); `enrich` lets the SDK make its span and adds ours to it.",
    ),
    Option(
        "openai_stream_usage",
        "WASTEAUDIT_OPENAI_STREAM_USAGE",
        True,
        "bool",
        "Ask OpenAI-compatible hosts for stream usage (`include_usage`) and hide the extra chunk from the app.",
    ),
    Option(
        "stream_usage_hosts",
        "WASTEAUDIT_STREAM_USAGE_HOSTS",
        ("api.openai.com", ".openai.azure.com", "127.0.0.1", "localhost"),
        "list",
        "Hosts known to accept `stream_options.include_usage` (suffix match when it starts with a dot).",
    ),
    Option("price_overrides", "WASTEAUDIT_PRICES", None, "json", "Per-model prices in USD per million tokens: {model: {input, output, cache_read, cache_write}}."),
    Option(
        "capture_content_on_spans",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
        False,
        "bool",
        "Put messages and outputs on exported spans (opt-in; the standard OpenTelemetry variable).",
    ),
    Option(
        "export",
        "WASTEAUDIT_EXPORT",
        "none",
        "str",
        "`otlp`: export spans, metrics and waste events over OTLP/HTTP, plugged into the app's OpenTelemetry providers when it has them (see docs/otel-export.md); `none`: no exporter of our own.",
    ),
    Option(
        "otlp_endpoint",
        "WASTEAUDIT_OTLP_ENDPOINT",
        "",
        "str",
        "Base URL of the OTLP/HTTP receiver (`http://collector:4318`); empty: the standard `OTEL_EXPORTER_OTLP_[SIGNAL_]ENDPOINT` variables, else `http://localhost:4318`.",
    ),
    Option("service_name", "OTEL_SERVICE_NAME", "", "str", "`service.name` of the resource wasteaudit creates when the app has no provider (the standard OpenTelemetry variable)."),
    Option("export_traces", "WASTEAUDIT_EXPORT_TRACES", True, "bool", "With `export=otlp`: add an OTLP span exporter (off when the app already exports its spans to the same place)."),
    Option(
        "export_metrics",
        "WASTEAUDIT_EXPORT_METRICS",
        True,
        "bool",
        "Record the GenAI client and waste metrics (into the app's MeterProvider, or the one `export=otlp` sets up); off: no metrics at all.",
    ),
    Option("export_logs", "WASTEAUDIT_EXPORT_LOGS", True, "bool", "With `export=otlp`: export waste findings as `wasteaudit.waste.finding` events linked to the call's span."),
    Option(
        "provider_hosts",
        "WASTEAUDIT_PROVIDER_HOSTS",
        None,
        "json",
        'Provider names for OpenAI-compatible servers the built-in table cannot know: {"gpu-box:8000": "vllm", ".inference.internal": "vllm"} (host:port, host, or .suffix).',
    ),
)

EXPORT_MODES: tuple[str, ...] = ("none", "otlp")

_TRUE = {"1", "true", "yes", "on", "span_only", "span_and_event"}
_FALSE = {"0", "false", "no", "off", "", "no_content", "event_only"}


def _parse(option: Option, raw: str) -> Any:
    text = raw.strip()
    try:
        if option.kind == "bool":
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(f"expected true/false, got {raw!r}")
        if option.kind == "int":
            return int(text)
        if option.kind == "float":
            return float(text)
        if option.kind == "list":
            return tuple(part.strip() for part in text.split(",") if part.strip())
        if option.kind == "json":
            if text and os.path.isfile(text):
                with open(text, encoding="utf-8") as handle:
                    return json.load(handle)
            return json.loads(text) if text else None
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{option.env}={raw!r} is not a valid {option.kind}: {exc}") from None
    return text


@dataclass(frozen=True)
class Settings:
    """The resolved configuration. Read on the request path, so it is immutable and swapped whole."""

    enabled: bool = True
    database_url: str = "sqlite:///wasteaudit.db"
    content_mode: str = "full"
    hash_key: str = ""
    max_output_bytes: int = 262_144
    max_return_bytes: int = 65_536
    capture_return: bool = True
    queue_size: int = 10_000
    batch_size: int = 500
    flush_interval: float = 0.5
    auto_migrate: bool = True
    storage: bool = True
    finish_in_background: bool = True
    anthropic_sdk_span: str = "replace"
    openai_stream_usage: bool = True
    stream_usage_hosts: tuple[str, ...] = ("api.openai.com", ".openai.azure.com", "127.0.0.1", "localhost")
    price_overrides: dict[str, dict[str, float]] | None = None
    capture_content_on_spans: bool = False
    export: str = "none"
    otlp_endpoint: str = ""
    service_name: str = ""
    export_traces: bool = True
    export_metrics: bool = True
    export_logs: bool = True
    provider_hosts: dict[str, str] | None = None
    redact: Callable[[str], str] | None = field(default=None, compare=False)
    explicit: bool = False

    def validate(self) -> "Settings":
        if self.content_mode not in CONTENT_MODES:
            raise ConfigError(f"content_mode must be one of {', '.join(CONTENT_MODES)}; got {self.content_mode!r}")
        if self.anthropic_sdk_span not in ANTHROPIC_SDK_SPAN_MODES:
            raise ConfigError(f"anthropic_sdk_span must be one of {', '.join(ANTHROPIC_SDK_SPAN_MODES)}; got {self.anthropic_sdk_span!r}")
        if self.content_mode == "redacted" and self.redact is None:
            raise ConfigError("content_mode='redacted' needs a redact hook: configure(redact=callable)")
        if self.redact is not None and not callable(self.redact):
            raise ConfigError("redact must be a callable taking and returning a string")
        for name in ("max_output_bytes", "max_return_bytes", "queue_size", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive; got {getattr(self, name)!r}")
        if self.flush_interval <= 0:
            raise ConfigError(f"flush_interval must be positive; got {self.flush_interval!r}")
        if self.price_overrides is not None and not isinstance(self.price_overrides, dict):
            raise ConfigError("price_overrides must map model names to {input, output, cache_read, cache_write}")
        if not isinstance(self.database_url, str) or "://" not in self.database_url:
            raise ConfigError(f"database_url must be an SQLAlchemy URL such as sqlite:///wasteaudit.db; got {self.database_url!r}")
        if (self.export or "none").strip().lower() not in EXPORT_MODES + ("",):
            raise ConfigError(f"export must be one of {', '.join(EXPORT_MODES)}; got {self.export!r}")
        if self.provider_hosts is not None and not (
            isinstance(self.provider_hosts, dict) and all(isinstance(k, str) and isinstance(v, str) and v for k, v in self.provider_hosts.items())
        ):
            raise ConfigError('provider_hosts must map hosts to provider names, e.g. {"gpu-box:8000": "vllm"}')
        if self.otlp_endpoint and "://" not in self.otlp_endpoint:
            raise ConfigError(f"otlp_endpoint must be a URL such as http://localhost:4318; got {self.otlp_endpoint!r}")
        return self


def settings_from_env(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Resolve every option: keyword override > environment > default."""
    source = os.environ if env is None else env
    values: dict[str, Any] = {}
    for option in OPTIONS:
        if option.name in overrides and overrides[option.name] is not None:
            values[option.name] = overrides[option.name]
        elif option.env in source:
            values[option.name] = _parse(option, source[option.env])
        else:
            values[option.name] = option.default
    if overrides.get("redact") is not None:
        values["redact"] = overrides["redact"]
    values["explicit"] = bool(overrides.pop("_explicit", False))
    unknown = set(overrides) - {o.name for o in OPTIONS} - {"redact", "_explicit"}
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(sorted(unknown))}")
    return Settings(**values).validate()


_lock = threading.Lock()
_settings: Settings | None = None
_warned_unconfigured = False


def get_settings() -> Settings:
    """The settings in force (resolved from the environment on first use)."""
    global _settings
    current = _settings
    if current is None:
        with _lock:
            if _settings is None:
                _settings = settings_from_env()
            current = _settings
    return current


def set_settings(settings: Settings) -> Settings:
    global _settings
    with _lock:
        _settings = settings
    return settings


def warn_if_unconfigured() -> None:
    """Warn once when records are made under defaults nobody chose."""
    global _warned_unconfigured
    if _warned_unconfigured or get_settings().explicit:
        return
    _warned_unconfigured = True
    warnings.warn(
        "wasteaudit.configure() was not called; using defaults "
        f"(database {get_settings().database_url}, content mode {get_settings().content_mode})",
        stacklevel=3,
    )


def option_names() -> list[str]:
    return [option.name for option in OPTIONS] + ["redact"]


def replace(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes).validate()


def options_markdown() -> str:
    """The configuration reference in docs/, generated from :data:`OPTIONS` so it cannot drift."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by `python -m wasteaudit.config > docs/configuration.md`; a test checks it is current -->",
        "",
        "Every option can be passed to `wasteaudit.configure(...)` by name or set through its environment",
        "variable. Precedence: code argument > environment variable > default. Invalid values raise",
        "`wasteaudit.ConfigError` when `configure()` runs (or on first use), never later in a request.",
        "",
        "| option | environment variable | type | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for option in OPTIONS:
        default = ", ".join(option.default) if isinstance(option.default, tuple) else option.default
        lines.append(f"| `{option.name}` | `{option.env}` | {option.kind} | `{default}` | {option.doc} |")
    lines += [
        "| `redact` | — (code only) | callable | `None` | `str -> str` hook applied to every stored text in `redacted` mode. |",
        "",
        "Values for booleans: `1/true/yes/on` and `0/false/no/off`. `WASTEAUDIT_PRICES` takes JSON or a path to a JSON file.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(options_markdown(), end="")
