"""The customer 360 app (README, The customer 360 app): a lookup API and a page for service staff, reading only
the serving copy.

`loyalty-pipeline serve` runs it with uvicorn. With LOYALTY_APP_TOKEN set every request needs the token (a bearer
header, or the cookie the login form sets); without one it binds loopback only. Logs name routes, never ids.
"""

import hmac
import logging
import os
import sys
import time
from html import escape
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote_to_bytes

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Match, Route

from loyalty_pipeline.serve.page import LOGIN, MAX_ID, MAX_QUERY, checked, layout, page_body
from loyalty_pipeline.serve.serving import Ambiguous, NotPublished, ServingCopy, serving_path, warehouse_path

MAX_BODY = 16 * 1024  # bytes: a sign-in form is a token, not a file


TOO_LARGE = f"request body over {MAX_BODY} bytes"


TOKEN_NEEDED = "a token is needed: Authorization: Bearer <LOYALTY_APP_TOKEN>"


COOKIE = "loyalty_app_token"


LOOPBACK = {"127.0.0.1", "::1", "localhost"}


log = logging.getLogger("loyalty_pipeline.serve.app")


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _secret(token: str | None) -> bytes | None:
    """The token as bytes (UTF-8; surrogateescape keeps an environment value that is not UTF-8 as its bytes)."""
    return token.encode("utf-8", "surrogateescape") if token else None


def _wire(value: str) -> bytes:
    """A header or cookie value back to the bytes sent (Starlette decodes them as Latin-1): any bytes compare."""
    return value.encode("latin-1", "backslashreplace")


def create_app(serving_file: Path, token: str | None = None) -> Starlette:
    copy = ServingCopy(serving_file)
    secret = _secret(token)

    async def customer(request: Request) -> Response:
        identifier = request.path_params["identifier"]
        if problem := checked(identifier, MAX_ID, "customer id"):
            return _problem(400, problem)
        try:
            card = copy.card(identifier)
        except NotPublished as error:
            return _problem(503, str(error))
        except Ambiguous as error:
            return JSONResponse({"error": str(error), "candidates": error.candidates}, status_code=409)
        if card is None:
            return _problem(404, f"no customer with id {identifier!r}")
        return Response(card, media_type="application/json")

    async def search(request: Request) -> Response:
        query = request.query_params.get("q", "")
        if problem := checked(query, MAX_QUERY, "query"):
            return _problem(400, problem)
        try:
            found, more = copy.search(query)
            body = {"results": found} | ({"more": True} if more else {})  # more match than the page lists
            return JSONResponse(body, headers={"Cache-Control": "no-store"})
        except NotPublished as error:
            return _problem(503, str(error))

    async def version(request: Request) -> Response:
        try:
            return JSONResponse({"published_at": copy.published_at()})
        except NotPublished as error:
            return _problem(503, str(error))

    async def page(request: Request) -> Response:
        query, identifier = request.query_params.get("q", ""), request.query_params.get("id", "")
        try:
            body, status = page_body(copy, query, identifier)
        except NotPublished as error:
            body, status = f'<p class="problem">{escape(str(error))}</p>', 503
        return HTMLResponse(layout(body, query), status_code=status)

    async def login(request: Request) -> Response:
        # read as Latin-1, byte for byte, so the token compares as the bytes sent whatever they are
        form = parse_qs((await request.body()).decode("latin-1"), encoding="latin-1")
        offered = form.get("token", [""])[0].encode("latin-1")
        if secret and hmac.compare_digest(offered, secret):
            response = RedirectResponse("/", status_code=303)
            # percent-encoded: a cookie is ASCII, and Set-Cookie cannot carry a token beyond Latin-1 as it is
            response.set_cookie(COOKIE, quote(secret, safe=""), httponly=True, samesite="strict")
            return response
        return HTMLResponse(layout(LOGIN.format(problem="wrong token"), ""), status_code=401)

    routes = [
        Route("/", page),
        Route("/login", login, methods=["POST"]),
        Route("/api/customers", search),
        Route("/api/customers/{identifier:path}", customer),
        Route("/api/version", version),
    ]
    return Starlette(routes=routes, middleware=[Middleware(GuardAndLog, secret=secret, routes=routes)])


class BodyTooLarge(Exception):
    """A request body past MAX_BODY, found while it streams in."""


class GuardAndLog:
    """Refuses a body over MAX_BODY (413) before reading it, asks for the token (when one is set), and logs each
    request by its route's pattern, never its path: ids, names and emails are personal data. Plain ASGI: it adds
    microseconds, not a task per request."""

    def __init__(self, app, secret: bytes | None, routes: list[Route]):
        self.app, self.secret, self.routes = app, secret, routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, sent = time.perf_counter(), {}

        async def noting_status(message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            await send(message)

        received = 0

        async def bounded() -> dict:
            # counted as it arrives: a body without a Content-Length (chunked) stops at the limit, not at its end
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY:
                raise BodyTooLarge
            return message

        if _declared_length(scope) > MAX_BODY:
            await _refusal(scope, 413, TOO_LARGE)(scope, receive, noting_status)
        elif self.secret and scope["path"] != "/login" and not _authorized(Request(scope), self.secret):
            await _refusal(scope, 401, TOKEN_NEEDED)(scope, receive, noting_status)
        else:
            try:
                await self.app(scope, bounded, noting_status)
            except BodyTooLarge:
                if "status" in sent:
                    raise
                await _refusal(scope, 413, TOO_LARGE)(scope, receive, noting_status)
        # the router notes the route it took; a refused request never reached it
        route = scope.get("route") or next((r for r in self.routes if r.matches(scope)[0] == Match.FULL), None)
        pattern = route.path if route else "?"
        log.info(
            "%s %s %s %.1f ms", scope["method"], pattern, sent.get("status"), (time.perf_counter() - started) * 1e3
        )


def _declared_length(scope) -> int:
    length = dict(scope["headers"]).get(b"content-length", b"0")
    return int(length) if length.isdigit() else 0  # the server refuses a malformed length itself


def _refusal(scope, status: int, message: str) -> Response:
    """A refusal in the form the path answers in: JSON for the API, the page (with the sign-in form) otherwise."""
    if scope["path"].startswith("/api/"):
        return _problem(status, message)
    body = LOGIN.format(problem="") if status == 401 else f'<p class="problem">{escape(message)}</p>'
    return HTMLResponse(layout(body, ""), status_code=status)


def _authorized(request: Request, secret: bytes) -> bool:
    """Compared as bytes: a value beyond ASCII is a mismatch, never an error. The cookie holds the token
    percent-encoded (a cookie set by hand to an ASCII token decodes to itself)."""
    header = request.headers.get("authorization", "")
    if header.startswith("Bearer "):
        return hmac.compare_digest(_wire(header.removeprefix("Bearer ")), secret)
    return hmac.compare_digest(unquote_to_bytes(_wire(request.cookies.get(COOKIE, ""))), secret)


def run(host: str, port: int, warehouse: str | None = None) -> int:
    """`loyalty-pipeline serve`: refuses a non-loopback address without a token, then serves until stopped."""
    import uvicorn

    token = os.environ.get("LOYALTY_APP_TOKEN", "").strip() or None
    if host not in LOOPBACK and token is None:
        print(
            f"error: --host {host} would serve personal data beyond this machine: set LOYALTY_APP_TOKEN, "
            "or bind 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    env = dict(os.environ, **({"LOYALTY_WAREHOUSE": warehouse} if warehouse else {}))
    serving_file = serving_path(warehouse_path(env))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(f"serving {serving_file} on http://{host}:{port}/")
    uvicorn.run(create_app(serving_file, token), host=host, port=port, access_log=False, log_level="warning")
    return 0
