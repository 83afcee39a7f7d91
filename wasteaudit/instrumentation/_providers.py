"""Which provider an OpenAI-SDK client is really talking to, from its base URL.

The OpenAI SDK is used against many OpenAI-compatible hosts; ``gen_ai.provider.name`` must name
the one that serves (and bills) the call. The table is deliberately small and data-only so it can
grow; names follow the GenAI semantic conventions' well-known values where one exists. Unknown
hosts (gateways, self-hosted servers, the loopback test server) are attributed to ``openai``.
"""

from __future__ import annotations

from typing import Any

# Exact host -> provider. Checked first.
EXACT_HOSTS: dict[str, str] = {
    "api.openai.com": "openai",
    "api.groq.com": "groq",
    "api.mistral.ai": "mistral_ai",
    "api.deepseek.com": "deepseek",
    "generativelanguage.googleapis.com": "gcp.gemini",
    "openrouter.ai": "openrouter",
    "api.together.xyz": "together",
    "api.together.ai": "together",
    "api.fireworks.ai": "fireworks",
    "qianfan.baidubce.com": "baidu.qianfan",
    "aip.baidubce.com": "baidu.qianfan",
    "api.x.ai": "x_ai",
    "api.perplexity.ai": "perplexity",
    "api.moonshot.ai": "moonshot_ai",
    "api.moonshot.cn": "moonshot_ai",
    "api.anthropic.com": "anthropic",
    "localhost": "openai",
    "127.0.0.1": "openai",
}

# Host suffix -> provider, for per-tenant hosts. Checked in order after the exact table.
SUFFIX_HOSTS: tuple[tuple[str, str], ...] = (
    (".openai.azure.com", "azure.ai.openai"),
    (".cognitiveservices.azure.com", "azure.ai.openai"),
    (".openai.com", "openai"),
    (".groq.com", "groq"),
    (".mistral.ai", "mistral_ai"),
    (".deepseek.com", "deepseek"),
    (".openrouter.ai", "openrouter"),
    (".together.xyz", "together"),
    (".fireworks.ai", "fireworks"),
    (".baidubce.com", "baidu.qianfan"),
)

DEFAULT_PROVIDER = "openai"

# Self-hosted OpenAI-compatible servers, by the default port their docs use in the base URL
# (``http://localhost:11434/v1`` ...). Recognized only on local hosts (loopback, private addresses,
# ``*.local``, ``host.docker.internal``): a public host on port 8000 is not assumed to be vLLM.
# Self-hosted providers are unknown to the price table, so their calls stay unpriced unless the
# user sets a price per model (``price_overrides``). ``provider_hosts`` (configuration) names any
# other server: ``{"gpu-box:8000": "vllm", ".inference.internal": "vllm"}``.
LOCAL_PORTS: dict[int, str] = {
    11434: "ollama",
    8000: "vllm",
    8080: "llama.cpp",
    1234: "lm_studio",
}
SELF_HOSTED: frozenset[str] = frozenset({"ollama", "vllm", "llama.cpp", "lm_studio", "self_hosted"})


def _is_local(host: str) -> bool:
    if host in ("localhost", "host.docker.internal", "::1") or host.endswith((".local", ".localhost", ".internal")):
        return True
    try:
        import ipaddress

        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def _configured(host: str, port: int | None, mapping: Any) -> str | None:
    """A user's ``provider_hosts`` entry: ``host:port``, then ``host``, then ``.suffix`` entries."""
    if not mapping or not isinstance(mapping, dict):
        return None
    lowered = {str(k).lower(): v for k, v in mapping.items() if isinstance(v, str) and v}
    if port is not None and f"{host}:{port}" in lowered:
        return lowered[f"{host}:{port}"]
    if host in lowered:
        return lowered[host]
    for key, provider in lowered.items():
        if key.startswith(".") and (host.endswith(key) or f"{host}:{port}".endswith(key)):
            return provider
    return None


def provider_for_endpoint(host: str | None, port: int | None, mapping: Any = None) -> str:
    """The provider for a host and port: the user's ``provider_hosts`` first, then a self-hosted
    server's default port on a local host, then the host tables (``openai`` when unknown)."""
    if host:
        host = host.lower().rstrip(".")
        configured = _configured(host, port, mapping)
        if configured is not None:
            return configured
        if port in LOCAL_PORTS and _is_local(host):
            return LOCAL_PORTS[port]  # type: ignore[index]
    return provider_for_host(host)


def _provider_hosts() -> Any:
    try:
        from wasteaudit.config import get_settings

        return getattr(get_settings(), "provider_hosts", None)
    except Exception:  # configuration errors surface in configure(), never here
        return None


def provider_for_host(host: str | None) -> str:
    """The provider name for a host (lower-case, without port); ``openai`` when unknown."""
    if not host:
        return DEFAULT_PROVIDER
    host = host.lower().rstrip(".")
    found = EXACT_HOSTS.get(host)
    if found is not None:
        return found
    for suffix, provider in SUFFIX_HOSTS:
        if host.endswith(suffix):
            return provider
    return DEFAULT_PROVIDER


def host_allowed(host: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether ``host`` is on an allow-list: exact entries, or suffix entries starting with '.'."""
    if not host:
        return False
    host = host.lower()
    for entry in allowed:
        entry = entry.lower()
        if entry.startswith("."):
            if host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False


class Endpoint:
    """What a client's base URL tells us; computed once per URL object and cached."""

    __slots__ = ("url", "host", "port", "provider")

    def __init__(self, url: Any, host: str | None, port: int | None, provider: str) -> None:
        self.url = url  # kept alive so the id()-keyed cache can never see a reused id
        self.host = host
        self.port = port
        self.provider = provider


_cache: dict[int, Endpoint] = {}
_CACHE_MAX = 256


def endpoint_of(client: Any) -> Endpoint:
    """Host, port and provider of an OpenAI-SDK client (``AzureOpenAI`` is always Azure)."""
    # The property, not its ``_base_url`` storage: the module-level client overrides it.
    url = getattr(client, "base_url", None)
    key = id(url)
    cached = _cache.get(key)
    if cached is not None and cached.url is url:
        return cached
    host: str | None = None
    port: int | None = None
    try:
        host = url.host or None  # httpx2.URL / httpx.URL
        port = url.port
        if port is None:
            scheme = url.scheme
            port = 443 if scheme == "https" else 80 if scheme == "http" else None
    except AttributeError:
        pass
    provider = provider_for_endpoint(host, port, _provider_hosts())
    if provider == DEFAULT_PROVIDER and type(client).__name__ in ("AzureOpenAI", "AsyncAzureOpenAI"):
        provider = "azure.ai.openai"
    endpoint = Endpoint(url, host, port, provider)
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[key] = endpoint
    return endpoint
