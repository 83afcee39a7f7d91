"""A local, scripted OpenAI/Anthropic-compatible endpoint for tests, benchmarks and the demo."""

from wasteaudit.localllm.server import LocalLLMServer, RecordedRequest, Reply

__all__ = ["LocalLLMServer", "RecordedRequest", "Reply"]
