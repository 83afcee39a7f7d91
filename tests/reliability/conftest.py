"""Fixtures for the reliability tests (defined in reliability_support.py)."""

from reliability_support import audited, echo_server, pg_database, pg_proxy_url, pg_url  # noqa: F401 - fixture reuse
