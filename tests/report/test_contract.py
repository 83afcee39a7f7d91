"""The shipped JSON Schema is valid, found as package data, and documents every alarm kind and verdict."""

from __future__ import annotations

from importlib.resources import files

import jsonschema

from wasteaudit.report import schema
from wasteaudit.report.alarms import ALARM_KINDS
from wasteaudit.report.build import SCHEMA_ID


def test_schema_is_package_data_and_valid() -> None:
    resource = files("wasteaudit").joinpath("schemas", "report.v1.json")
    assert resource.is_file()
    document = schema()
    jsonschema.Draft202012Validator.check_schema(document)
    assert document["title"] == SCHEMA_ID
    assert document["properties"]["schema"]["const"] == SCHEMA_ID


def test_schema_lists_the_closed_alarm_kinds_and_scopes() -> None:
    alarm = schema()["$defs"]["alarm"]["properties"]
    assert alarm["kind"]["enum"] == list(ALARM_KINDS)
    assert alarm["scope"]["enum"] == ["total", "function", "model"]


def test_wasteaudit_build_report_is_the_report_builder(tmp_path) -> None:
    import pytest

    import wasteaudit
    from wasteaudit.exceptions import StorageError

    with pytest.raises(StorageError, match="no audit database"):
        wasteaudit.build_report(f"sqlite:///{tmp_path / 'missing.db'}")
