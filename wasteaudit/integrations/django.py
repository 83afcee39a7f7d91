"""Django: name request runs by the matched URL pattern (``/users/<int:user_id>/``).

Django does not put the resolved route into the ASGI scope or WSGI environ, so the ASGI/WSGI
middleware cannot see it on its own. Add this Django middleware; it copies
``request.resolver_match.route`` where they look, before the view runs:

    # settings.py
    MIDDLEWARE = ["wasteaudit.integrations.django.WasteAuditRouteMiddleware", ...]

    # asgi.py
    application = WasteAuditMiddleware(get_asgi_application(), run_id_header="x-wasteaudit-run-id")
    # or wsgi.py
    application = WasteAuditWSGIMiddleware(get_wsgi_application())

Works in sync and async stacks (no thread hop of its own). Imports nothing from Django at import
time. :func:`feedback_view` is the feedback endpoint as a Django view:

    # urls.py
    path("api/feedback", feedback_view())
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Collection

from wasteaudit.integrations._request import ROUTE_KEY
from wasteaudit.integrations.feedback import DEFAULT_NAME, MAX_BODY_BYTES, handle_body

__all__ = ("WasteAuditRouteMiddleware", "feedback_view")


class WasteAuditRouteMiddleware:
    """Expose the matched Django route to wasteaudit's request run (``process_view``)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._async = inspect.iscoroutinefunction(get_response) or getattr(get_response, "_is_coroutine", None) is not None
        if self._async:
            from asgiref.sync import markcoroutinefunction

            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        return self.get_response(request)

    async def __acall__(self, request: Any) -> Any:
        return await self.get_response(request)

    def process_view(self, request: Any, view_func: Any, view_args: Any, view_kwargs: Any) -> None:
        route = getattr(getattr(request, "resolver_match", None), "route", None)
        if isinstance(route, str):
            target = getattr(request, "scope", None)
            if not isinstance(target, dict):
                target = request.META  # WSGI: META is the environ
            target[ROUTE_KEY] = route if route.startswith("/") else "/" + route
        return None


def feedback_view(*, names: Collection[str] | None = None, default_name: str = DEFAULT_NAME) -> Callable[[Any], Any]:
    """A Django view for ``POST {run_id, score[, name]}`` (answers as :func:`~wasteaudit.integrations.feedback.handle_body`).

    Django's CSRF protection still applies, as to any view: a browser front end sends the CSRF
    token; an API authenticated by tokens wraps the view in ``csrf_exempt`` itself (not done here,
    so that a cross-site form cannot score runs by default).
    """
    from django.http import JsonResponse

    def wasteaudit_feedback(request: Any) -> Any:
        if request.method != "POST":
            response = JsonResponse({"error": "feedback is sent with POST"}, status=405)
            response["Allow"] = "POST"
            return response
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > MAX_BODY_BYTES:
            return JsonResponse({"error": f"feedback body over {MAX_BODY_BYTES} bytes"}, status=413)
        status, answer = handle_body(request.body, names=names, default_name=default_name)
        return JsonResponse(answer, status=status)

    return wasteaudit_feedback
