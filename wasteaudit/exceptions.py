"""Exceptions wasteaudit raises at configuration time (never from the request path)."""

from __future__ import annotations


class WasteAuditError(Exception):
    """Base class of every wasteaudit error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(WasteAuditError, ValueError):
    """A configuration value (argument or WASTEAUDIT_* variable) is invalid."""


class StorageError(WasteAuditError):
    """The audit database could not be reached or used."""


class SchemaVersionError(StorageError):
    """The audit database's schema does not match this wasteaudit version."""


class MissingExtraError(WasteAuditError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""
