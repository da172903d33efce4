"""The console's Faust web views: three pages, their two static files, and the JSON API.

Pages (no data in them; their script asks the API):
``/console/`` (flows), ``/console/link?id=ID`` (a record's links), ``/console/deadletters``.

API (``Authorization: Bearer <TALKSTREAM_CONSOLE_TOKEN>``; 401 without it):

- ``GET  /console/api/flows``: ``talkstream status --json`` plus each flow's title and activity;
- ``GET  /console/api/links?id=ID[&system=customcrm|businessnxt]``: the record's links;
- ``GET  /console/api/deadletters``, ``GET /console/api/deadletters/{id}``;
- ``POST /console/api/deadletters/{id}/redrive``, ``POST /console/api/deadletters/redrive[?flow=F]``;
- ``POST /console/api/flows/{flow}/pause``, ``POST /console/api/flows/{flow}/resume``.

Every answer carries ``auth.HEADERS`` (a Content-Security-Policy among them).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import orjson
from faust.web import Request, Response, View

from streams.console import auth
from streams.console.data import Console, NotFound

class BadRequest(ValueError):
    pass


STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
PAGES = {"flows": "Flows", "link": "Record", "deadletters": "Dead letters"}


def register(app, console: Console, token: str | None) -> None:
    """Add the console's views to ``app``'s web server; with no ``token`` every console address
    answers 404 saying how to turn it on."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    templates = Environment(loader=PackageLoader("streams.console", "templates"),
                            autoescape=select_autoescape(default=True))
    flows = [{"id": flow.id, "title": flow.title, "source": flow.source.label, "target": flow.target.label}
             for flow in console.mapping.flows]

    class Base(View):
        def answer(self, value: Any, status: int = 200) -> Response:
            return self.bytes(orjson.dumps(value), content_type="application/json", status=status,
                              headers=dict(auth.HEADERS))

        def off(self) -> Response | None:
            if token:
                return None
            return self.answer({"error": "the console is off: set TALKSTREAM_CONSOLE_TOKEN on the worker "
                                         "(`talkstream run` sets one and prints the address to open)"}, 404)

    class Page(Base):
        page = "flows"

        async def get(self, request: Request, **_: Any) -> Response:
            closed = self.off()
            if closed is not None:
                return closed
            html = templates.get_template(f"{self.page}.html").render(page=self.page, title=PAGES[self.page],
                                                                      flows=flows)
            return self.html(html, headers=dict(auth.HEADERS))

    class Static(Base):
        async def get(self, request: Request, name: str = "", **_: Any) -> Response:
            if name not in STATIC or self.off() is not None:
                return self.answer({"error": "not found"}, 404)
            body = resources.files("streams.console").joinpath("static", name).read_text(encoding="utf-8")
            return self.text(body, content_type=STATIC[name], headers=dict(auth.HEADERS))

    class Api(Base):
        """Answers only a caller with the token; ``NotFound`` and ``BadRequest`` become 404 and 400."""

        async def guarded(self, request: Request, answer: Callable[[], Awaitable[Any]]) -> Response:
            closed = self.off()
            if closed is not None:
                return closed
            if not auth.authorized(request.headers.get("Authorization"), token or ""):
                return self.answer({"error": "unauthorized: send Authorization: Bearer <TALKSTREAM_CONSOLE_TOKEN>"},
                                   401)
            try:
                return self.answer(await answer())
            except NotFound as exc:
                return self.answer({"error": str(exc)}, 404)
            except BadRequest as exc:
                return self.answer({"error": str(exc)}, 400)

        @staticmethod
        def who(request: Request) -> str:
            return getattr(request, "remote", None) or "?"

    class FlowsApi(Api):
        async def get(self, request: Request, **_: Any) -> Response:
            return await self.guarded(request, console.flows)

    class FlowAction(Api):
        async def post(self, request: Request, flow: str = "", action: str = "", **_: Any) -> Response:
            return await self.guarded(request, lambda: console.set_flow(flow, action, self.who(request)))

    class LinksApi(Api):
        async def get(self, request: Request, **_: Any) -> Response:
            async def links() -> dict:
                record_id = (request.query.get("id") or "").strip()
                system = request.query.get("system") or None
                if not record_id:
                    raise BadRequest("give the record's id: ?id=ID")
                if system not in (None, "customcrm", "businessnxt"):
                    raise BadRequest("system is customcrm or businessnxt")
                return {"id": record_id, "system": system, "links": await console.links(system, record_id)}
            return await self.guarded(request, links)

    class DeadLettersApi(Api):
        async def get(self, request: Request, **_: Any) -> Response:
            async def listed() -> dict:
                return {"deadletters": await console.deadletters()}
            return await self.guarded(request, listed)

    class RedriveAll(Api):
        async def post(self, request: Request, **_: Any) -> Response:
            return await self.guarded(request, lambda: console.redrive(
                self.who(request), flow_id=request.query.get("flow") or None))

    class DeadLetterApi(Api):
        async def get(self, request: Request, id: str = "", **_: Any) -> Response:
            return await self.guarded(request, lambda: console.deadletter(id))

    class RedriveOne(Api):
        async def post(self, request: Request, id: str = "", **_: Any) -> Response:
            return await self.guarded(request, lambda: console.redrive(self.who(request), entry_id=id))

    def page(name: str) -> type[View]:
        return type(f"Console{name.title()}Page", (Page,), {"page": name})

    # the fixed paths before the ones with a {parameter} that would also match them
    routes: list[tuple[str, type[View]]] = [
        ("/console/", page("flows")),
        ("/console/link", page("link")),
        ("/console/deadletters", page("deadletters")),
        ("/console/static/{name}", Static),
        ("/console/api/flows", FlowsApi),
        ("/console/api/flows/{flow}/{action}", FlowAction),
        ("/console/api/links", LinksApi),
        ("/console/api/deadletters", DeadLettersApi),
        ("/console/api/deadletters/redrive", RedriveAll),
        ("/console/api/deadletters/{id}", DeadLetterApi),
        ("/console/api/deadletters/{id}/redrive", RedriveOne),
    ]
    for path, view in routes:
        app.page(path, name=f"console:{path}")(view)
