"""track_json: unread fields of a parsed JSON reply are counted; bulk reads count as use."""

from __future__ import annotations

import json
import subprocess
import sys

from scoring_builders import call, run

import wasteaudit
from wasteaudit.scoring import track_json
from wasteaudit.scoring.jsonuse import JSON_ACCESS_PREFIX, split_used_values

REPLY = {"title": "Ten Habits for Better Sleep", "summary": "A short guide to sleeping better.", "tags": ["sleep", "health"], "seo": {"slug": "ten-habits", "keywords": ["sleep tips"]}}


def test_only_read_leaves_are_recorded(records):
    @wasteaudit.audit
    def headline():
        wasteaudit.score(1.0)  # materialize the run
        data = track_json(json.loads(json.dumps(REPLY)))
        return data["title"] + " / " + data["seo"]["slug"]

    assert headline() == "Ten Habits for Better Sleep / ten-habits"
    (run_record,) = records.runs
    _, access = split_used_values(run_record.used_values)
    assert access and access[0].leaves == {("title",), ("seo", "slug")}


def test_json_dumps_and_iteration_count_as_bulk_use(records):
    @wasteaudit.audit
    def dump():
        wasteaudit.score(1.0)
        data = track_json(dict(REPLY))
        tags = [t for t in data["tags"]]
        return json.dumps({"all": data, "tags": tags})

    dump()
    (run_record,) = records.runs
    _, access = split_used_values(run_record.used_values)
    assert () in access[0].bulk


def test_tracked_objects_behave_like_the_originals():
    data = track_json(json.loads(json.dumps(REPLY)))  # outside a run: returned unchanged
    assert data == REPLY
    from wasteaudit._internal.runs import RunState, _current

    token = _current.set(RunState(name="t", tags={}, parent=None, started_at=0.0))
    try:
        tracked = track_json(json.loads(json.dumps(REPLY)))
        assert isinstance(tracked, dict) and tracked["tags"][1] == "health" and tracked.get("missing", 3) == 3
        assert json.loads(json.dumps(tracked)) == REPLY and dict(tracked)["title"] == REPLY["title"]
        assert list(reversed(tracked["tags"])) == ["health", "sleep"] and tracked["tags"][-1] == "health"
    finally:
        _current.reset(token)


def test_unread_fields_are_not_in_result_waste(rules_scorer):
    text = json.dumps(REPLY, indent=2)
    access = {"v": 1, "fp": __import__("wasteaudit.scoring.jsontext", fromlist=["fingerprint"]).fingerprint(REPLY),
              "leaves": [["title"]], "bulk": [], "overflow": False}
    r = run(returned="Ten Habits for Better Sleep", used=[JSON_ACCESS_PREFIX + json.dumps(access)])
    c = call(text, run=r, response_format={"type": "json_object"})
    result = rules_scorer.score([c], {r.id: r})
    unused = [f for f in result.findings if f.subkind == "not_in_result"]
    assert unused and unused[0].evidence["method"] == "json_access"
    assert set(unused[0].evidence["unread_fields"]) >= {"summary", "tags.0", "seo.slug"}
    share = sum(f.tokens for f in unused) / c.output_tokens
    assert 0.6 < share < 0.95


def test_scoring_package_imports_no_heavy_dependency():
    code = "import sys, wasteaudit, wasteaudit.scoring, wasteaudit.scoring.engine; print([m for m in ('numpy','torch','sentence_transformers','sqlalchemy') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
