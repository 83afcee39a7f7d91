"""Configuration: precedence, validation, and a reference page that cannot drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from wasteaudit.config import options_markdown, settings_from_env
from wasteaudit.exceptions import ConfigError


def test_code_argument_beats_environment_beats_default():
    env = {"WASTEAUDIT_CONTENT_MODE": "none", "WASTEAUDIT_QUEUE_SIZE": "7"}
    settings = settings_from_env(env, content_mode="hashed")
    assert settings.content_mode == "hashed"
    assert settings.queue_size == 7
    assert settings_from_env({}).queue_size == 10_000


@pytest.mark.parametrize(
    "env",
    [
        {"WASTEAUDIT_CONTENT_MODE": "everything"},
        {"WASTEAUDIT_QUEUE_SIZE": "lots"},
        {"WASTEAUDIT_ENABLED": "maybe"},
        {"WASTEAUDIT_DATABASE_URL": "not a url"},
        {"WASTEAUDIT_PRICES": "{not json"},
    ],
)
def test_invalid_values_raise_a_config_error_naming_the_variable(env):
    with pytest.raises(ConfigError) as caught:
        settings_from_env(env)
    message = str(caught.value)
    assert any(key in message or key.split("_", 1)[1].lower() in message for key in env)


def test_redacted_mode_needs_a_hook():
    with pytest.raises(ConfigError):
        settings_from_env({}, content_mode="redacted")
    assert settings_from_env({}, content_mode="redacted", redact=str.upper).redact is str.upper


def test_unknown_option_is_rejected():
    with pytest.raises(ConfigError):
        settings_from_env({}, colour="blue")


def test_capture_content_on_spans_follows_the_standard_otel_variable():
    assert settings_from_env({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}).capture_content_on_spans
    assert not settings_from_env({}).capture_content_on_spans


def test_configuration_reference_in_docs_is_generated_from_the_code():
    page = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    assert page.read_text() == options_markdown(), "run: python -m wasteaudit.config > docs/configuration.md"
