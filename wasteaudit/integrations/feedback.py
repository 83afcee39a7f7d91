"""A ready feedback endpoint: ``POST …/feedback {run_id, score[, name]}`` calls ``wasteaudit.score``.

A front end receives a run id (from the middleware's ``run_id_header``, or from the handler via
``wasteaudit.current_run_id()``) and later sends what the user thought of the answer:

    {"run_id": "3f2c…", "score": 0.8}            # a number in [0, 1]
    {"run_id": "3f2c…", "score": "up"}           # thumbs: "up"/"down" (or true/false)
    {"run_id": "3f2c…", "score": false, "name": "helpful"}

Framework-neutral :func:`record_feedback` validates and records; :func:`feedback_route`
(Starlette), :func:`feedback_router` (FastAPI) and :func:`feedback_blueprint` (Flask) wrap it.
Responses: 202 with what was recorded; 400 for a body that is not a JSON object; 422 with
the reason for invalid fields; 413 for bodies over 4 KiB. The endpoint cannot check that the
run exists (no database read on the request path): feedback on a request that made no LLM call
is stored but matches no run in reports. Put it behind the same authentication as the app.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Collection, Mapping

__all__ = ("Feedback", "FeedbackError", "parse_feedback", "record_feedback", "feedback_route", "feedback_router", "feedback_blueprint")

MAX_BODY_BYTES = 4096
DEFAULT_NAME = "feedback"
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_THUMBS = {"up": 1.0, "thumbs_up": 1.0, "down": 0.0, "thumbs_down": 0.0}


class FeedbackError(ValueError):
    """Invalid feedback; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Feedback:
    run_id: str
    value: float
    name: str


def parse_feedback(payload: Any, *, names: Collection[str] | None = None, default_name: str = DEFAULT_NAME) -> Feedback:
    """Validate ``{run_id, score, name?}``; raises :class:`FeedbackError` saying what is wrong.

    ``names``: the score names clients may send (None: any name of letters, digits and ``_.:-``).
    """
    if not isinstance(payload, Mapping):
        raise FeedbackError("feedback must be a JSON object {run_id, score[, name]}", 400)
    unknown = set(payload) - {"run_id", "score", "name"}
    if unknown:
        raise FeedbackError(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    run_id = payload.get("run_id")
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id.strip().lower()):
        raise FeedbackError("run_id must be the 32-hex-digit run id the service returned")
    name = payload.get("name", default_name)
    if name is None:
        name = default_name
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise FeedbackError("name must be 1-64 letters, digits or _.:-")
    if names is not None and name not in names:
        raise FeedbackError(f"name must be one of: {', '.join(sorted(names))}")
    return Feedback(run_id=run_id.strip().lower(), value=_value(payload.get("score")), name=name)


def _value(score: Any) -> float:
    if isinstance(score, bool):
        return 1.0 if score else 0.0
    if isinstance(score, (int, float)):
        number = float(score)
        if number != number or not 0.0 <= number <= 1.0:
            raise FeedbackError("score must be a number in [0, 1], true/false, or \"up\"/\"down\"")
        return number
    if isinstance(score, str) and score.strip().lower() in _THUMBS:
        return _THUMBS[score.strip().lower()]
    raise FeedbackError("score must be a number in [0, 1], true/false, or \"up\"/\"down\"")


def record_feedback(payload: Any, *, names: Collection[str] | None = None, default_name: str = DEFAULT_NAME) -> dict[str, Any]:
    """Validate feedback and attach it to its run with ``wasteaudit.score(..., source="feedback")``.

    Returns ``{run_id, name, score}`` as recorded (the JSON body of a 202 answer).
    """
    from wasteaudit.audit import score

    feedback = parse_feedback(payload, names=names, default_name=default_name)
    score(feedback.value, feedback.name, run_id=feedback.run_id, source="feedback")
    return {"run_id": feedback.run_id, "name": feedback.name, "score": feedback.value}


def handle_body(body: bytes, *, names: Collection[str] | None = None, default_name: str = DEFAULT_NAME) -> tuple[int, dict[str, Any]]:
    """A raw request body in, ``(status, JSON answer)`` out: the whole endpoint, for any framework."""
    if len(body) > MAX_BODY_BYTES:
        return 413, {"error": f"feedback body over {MAX_BODY_BYTES} bytes"}
    try:
        payload = json.loads(body or b"null")
    except ValueError:
        return 400, {"error": "feedback body is not valid JSON"}
    try:
        return 202, record_feedback(payload, names=names, default_name=default_name)
    except FeedbackError as exc:
        return exc.status, {"error": str(exc)}


async def _read_limited(request: Any) -> bytes | None:
    """The body, or None past ``MAX_BODY_BYTES`` (stops reading there)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _starlette_endpoint(names: Collection[str] | None, default_name: str) -> Any:
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    async def wasteaudit_feedback(request: Request) -> Any:
        body = await _read_limited(request)
        if body is None:
            return JSONResponse({"error": f"feedback body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        status, answer = handle_body(body, names=names, default_name=default_name)
        return JSONResponse(answer, status_code=status)

    # FastAPI injects by annotation; with postponed annotations the name would not resolve here.
    wasteaudit_feedback.__annotations__ = {"request": Request, "return": JSONResponse}
    return wasteaudit_feedback


def feedback_route(path: str = "/feedback", *, names: Collection[str] | None = None, default_name: str = DEFAULT_NAME) -> Any:
    """A Starlette ``Route`` for ``POST path`` (``Starlette(routes=[feedback_route()])``)."""
    from starlette.routing import Route

    return Route(path, _starlette_endpoint(names, default_name), methods=["POST"], name="wasteaudit_feedback")


def feedback_router(path: str = "/feedback", *, names: Collection[str] | None = None, default_name: str = DEFAULT_NAME, **router_options: Any) -> Any:
    """A FastAPI ``APIRouter`` with ``POST path`` (``app.include_router(feedback_router(), prefix="/api")``)."""
    from fastapi import APIRouter

    router = APIRouter(**router_options)
    schema = {
        "type": "object",
        "required": ["run_id", "score"],
        "properties": {
            "run_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "score": {"oneOf": [{"type": "number", "minimum": 0, "maximum": 1}, {"type": "boolean"}, {"enum": ["up", "down"]}]},
            "name": {"type": "string", "default": default_name},
        },
    }
    router.add_api_route(
        path,
        _starlette_endpoint(names, default_name),
        methods=["POST"],
        status_code=202,
        name="wasteaudit_feedback",
        summary="Send feedback (a score in [0, 1] or thumbs up/down) for an earlier response's run id",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}},
    )
    return router


def feedback_blueprint(path: str = "/feedback", *, names: Collection[str] | None = None, default_name: str = DEFAULT_NAME, name: str = "wasteaudit_feedback") -> Any:
    """A Flask ``Blueprint`` with ``POST path`` (``app.register_blueprint(feedback_blueprint())``)."""
    from flask import Blueprint, jsonify, request

    blueprint = Blueprint(name, __name__)

    @blueprint.post(path)
    def wasteaudit_feedback() -> Any:
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return jsonify({"error": f"feedback body over {MAX_BODY_BYTES} bytes"}), 413
        status, answer = handle_body(request.get_data(cache=False), names=names, default_name=default_name)
        return jsonify(answer), status

    return blueprint
