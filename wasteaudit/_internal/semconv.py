"""Attribute names: OpenTelemetry GenAI conventions (v1.41 names) plus wasteaudit's own.

Plain strings on purpose: the semconv package's enums emit DeprecationWarnings when called.
"""

from __future__ import annotations

import os

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_TOP_K = "gen_ai.request.top_k"
REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
REQUEST_SEED = "gen_ai.request.seed"
REQUEST_STOP = "gen_ai.request.stop_sequences"
REQUEST_STREAM = "gen_ai.request.stream"
REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
OUTPUT_TYPE = "gen_ai.output.type"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
RESPONSE_TTFC = "gen_ai.response.time_to_first_chunk"
USAGE_INPUT = "gen_ai.usage.input_tokens"
USAGE_OUTPUT = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
USAGE_CACHE_CREATION = "gen_ai.usage.cache_creation.input_tokens"
USAGE_CACHE_WRITE = "gen_ai.usage.cache_write.input_tokens"
USAGE_REASONING = "gen_ai.usage.reasoning.output_tokens"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
OPENAI_RESPONSE_SERVICE_TIER = "openai.response.service_tier"

WA_RUN_ID = "wasteaudit.run.id"
WA_RUN_NAME = "wasteaudit.run.name"
WA_CALL_ID = "wasteaudit.call.id"
WA_ATTEMPTS = "wasteaudit.attempts"
WA_ATTEMPT_STATUSES = "wasteaudit.attempts.failed_statuses"
WA_USAGE_SOURCE = "wasteaudit.usage_source"
WA_FINISH_CATEGORY = "wasteaudit.finish.category"
WA_COST = "wasteaudit.cost.usd"
WA_STREAM_STATE = "wasteaudit.stream.state"
WA_RUN_TAGS = "wasteaudit.run.tags"
WA_RUN_STATUS = "wasteaudit.run.status"


def latest_experimental() -> bool:
    """Whether the newest GenAI names were asked for (``OTEL_SEMCONV_STABILITY_OPT_IN``)."""
    value = os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")
    return "gen_ai_latest_experimental" in {part.strip() for part in value.split(",")}
