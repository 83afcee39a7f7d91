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

Works in sync and async stacks (no thread hop of its own). Imports nothing from Django.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from wasteaudit.integrations._request import ROUTE_KEY

__all__ = ("WasteAuditRouteMiddleware",)


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
