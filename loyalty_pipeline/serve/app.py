"""The customer 360 app (README, The customer 360 app): a lookup API and a page for service staff, reading only
the serving copy.

`loyalty-pipeline serve` runs it with uvicorn. With LOYALTY_APP_TOKEN set every request needs the token (a bearer
header, or the cookie the login form sets); without one it binds loopback only. Logs name routes, never ids.
"""

import hmac
import json
import logging
import os
import re
import sys
import time
from html import escape
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote_to_bytes, urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Match, Route

from loyalty_pipeline.serve.serving import Ambiguous, NotPublished, ServingCopy, serving_path, warehouse_path

MAX_ID, MAX_QUERY = 200, 100
MAX_BODY = 16 * 1024  # bytes: a sign-in form is a token, not a file
TOO_LARGE = f"request body over {MAX_BODY} bytes"
TOKEN_NEEDED = "a token is needed: Authorization: Bearer <LOYALTY_APP_TOKEN>"
VALID = re.compile(r"[^\x00-\x1f\x7f]+")  # printable: no control characters
COOKIE = "loyalty_app_token"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
log = logging.getLogger("loyalty_pipeline.serve.app")


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _checked(value: str, limit: int, what: str) -> str | None:
    """None when `value` is usable, else why not (a 400)."""
    if not value.strip() or not VALID.fullmatch(value):
        return f"malformed {what}: empty or with control characters"
    if len(value) > limit:
        return f"{what} too long: {len(value)} characters, at most {limit}"
    return None


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
        if problem := _checked(identifier, MAX_ID, "customer id"):
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
        if problem := _checked(query, MAX_QUERY, "query"):
            return _problem(400, problem)
        try:
            return JSONResponse({"results": copy.search(query)}, headers={"Cache-Control": "no-store"})
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
            body, status = _page_body(copy, query, identifier)
        except NotPublished as error:
            body, status = f'<p class="problem">{escape(str(error))}</p>', 503
        return HTMLResponse(_layout(body, query), status_code=status)

    async def login(request: Request) -> Response:
        # read as Latin-1, byte for byte, so the token compares as the bytes sent whatever they are
        form = parse_qs((await request.body()).decode("latin-1"), encoding="latin-1")
        offered = form.get("token", [""])[0].encode("latin-1")
        if secret and hmac.compare_digest(offered, secret):
            response = RedirectResponse("/", status_code=303)
            # percent-encoded: a cookie is ASCII, and Set-Cookie cannot carry a token beyond Latin-1 as it is
            response.set_cookie(COOKIE, quote(secret, safe=""), httponly=True, samesite="strict")
            return response
        return HTMLResponse(_layout(_LOGIN.format(problem="wrong token"), ""), status_code=401)

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
    body = _LOGIN.format(problem="") if status == 401 else f'<p class="problem">{escape(message)}</p>'
    return HTMLResponse(_layout(body, ""), status_code=status)


def _authorized(request: Request, secret: bytes) -> bool:
    """Compared as bytes: a value beyond ASCII is a mismatch, never an error. The cookie holds the token
    percent-encoded (a cookie set by hand to an ASCII token decodes to itself)."""
    header = request.headers.get("authorization", "")
    if header.startswith("Bearer "):
        return hmac.compare_digest(_wire(header.removeprefix("Bearer ")), secret)
    return hmac.compare_digest(unquote_to_bytes(_wire(request.cookies.get(COOKIE, ""))), secret)


def _page_body(copy: ServingCopy, query: str, identifier: str) -> tuple[str, int]:
    if identifier:
        if problem := _checked(identifier, MAX_ID, "customer id"):
            return f'<p class="problem">{escape(problem)}</p>', 400
        try:
            card = copy.card(identifier)
        except Ambiguous as error:
            return f'<p class="problem">{escape(str(error))}</p>{_results(error.candidates)}', 409
        if card is None:
            return f'<p class="problem">No customer with id {escape(identifier)}.</p>', 404
        return _card(json.loads(card)), 200
    if query:
        if problem := _checked(query, MAX_QUERY, "query"):
            return f'<p class="problem">{escape(problem)}</p>', 400
        found = copy.search(query)
        if not found:
            return f'<p class="problem">Nobody matches “{escape(query)}”.</p>', 200
        return _results(found), 200
    return "<p>Type a customer id, a name or an email.</p>", 200


def _results(people: list[dict]) -> str:
    """People as a table, each id a link to the card: the id is query-encoded (an `&` in it stays in the id), then
    HTML-escaped."""
    rows = "".join(
        f'<tr><td><a href="/?{escape(urlencode({"id": person["user_id"]}, quote_via=quote))}">'
        f"{escape(person['user_id'])}</a></td>"
        f"<td>{escape(person['name'] or '')}</td><td>{escape(person['email'] or '')}</td>"
        f"<td>{escape(person['reward_level'] or '')}</td></tr>"
        for person in people
    )
    return f'<table class="results"><tr><th>id</th><th>name</th><th>email</th><th>tier</th></tr>{rows}</table>'


def _table(headers: tuple[str, ...], rows: list[tuple], css: str) -> str:
    if not rows:
        return '<p class="none">none</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(_show(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><tr>{head}</tr>{body}</table>'


def _show(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return (
        str(value).replace("T", " ") if isinstance(value, str) and re.match(r"\d{4}-\d\d-\d\dT", value) else str(value)
    )


def _card(card: dict) -> str:
    tier, stamps, points = card["tier"], card["stamps"], card["points"]
    next_tier = tier["next"]
    spent = f"{tier['total_spend']:.2f}"
    progress = (
        f'<progress value="{tier["total_spend"]}" max="{next_tier["above"]}"></progress>'
        f"<p>spent {spent} · {escape(next_tier['name'])} above {next_tier['above']:.2f}: "
        f"{next_tier['to_go']:.2f} to go</p>"
        if next_tier
        else f"<p>spent {spent} · top tier</p>"
    )
    dots = "●" * stamps["in_cycle"] + "○" * (stamps["cycle"] - stamps["in_cycle"]) if stamps["cycle"] <= 20 else ""
    coffee = escape(stamps["product_id"])
    stamp_line = (
        f"the next {coffee} is free"
        if stamps["next_one_free"]
        else f"{stamps['to_free']} more {coffee} purchases, then one free"
    )
    expiry = (
        f"{points['next_expiry_points']} expire {_show(points['next_expiry_at'])}" if points["next_expiry_at"] else ""
    )
    journeys = [(j["journey_id"], j["node"], j["entered_at"]) for j in card["journeys"]]
    activations = [(a["journey_id"], a["activation"], a["activated_on"]) for a in card["activations"]]
    return f"""
<section class="card" data-user="{escape(card["user_id"])}">
  <h2>{escape(card["name"] or card["user_id"])} <small>{escape(card["user_id"])} · {escape(card["email"] or "")}</small></h2>
  <div class="facts">
    <div class="fact"><h3>Tier</h3><p class="tier">{escape(tier["level"] or "")}</p>
      {progress}</div>
    <div class="fact"><h3>Stamp card</h3><p class="stamps">{stamps["in_cycle"]} / {stamps["cycle"]}
      <span class="dots">{dots}</span></p>
      <p>{stamp_line}</p></div>
    <div class="fact"><h3>Points</h3><p class="points">{points["balance"]}</p>
      <p>available {points["available"]} · pending {points["pending"]} · debt {points["debt"]}</p><p>{expiry}</p></div>
  </div>
  <h3>Ledger</h3>
  {_table(("when", "points", "kind", "expires"), [(r["occurred_at"], r["points"], r["kind"], r["expires_at"]) for r in card["ledger"]], "ledger")}
  <h3>Journeys</h3>
  {_table(("journey", "current node", "since"), journeys, "journeys")}
  {_table(("journey", "activation", "on"), activations, "activations")}
  <h3>Recommendations</h3>
  {_table(("rank", "product", "score"), [(r["rank"], r["product_id"], r["score"]) for r in card["recommendations"]], "recommendations")}
  <h3>Recent activity</h3>
  {_table(("when", "what", "product", "price"), [(r["at"], r["what"], r["product_id"], r["price"]) for r in card["recent_activity"]], "activity")}
  <p class="copy">as of {escape(str(card["copy"]["as_of"]))} · published {_show(card["copy"]["published_at"])}</p>
</section>"""


_LOGIN = """<form class="login" method="post" action="/login"><label>Token <input type="password" name="token"
autofocus></label> <button>Sign in</button> <span class="problem">{problem}</span></form>"""

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d3557;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:center}
header h1{font-size:16px;margin:0}header input{width:320px;padding:6px;border:0;border-radius:3px}
main{padding:16px 20px;max-width:1100px}
.card{background:#fff;border:1px solid #d8dce3;border-radius:4px;padding:12px 18px}
.card h2 small{font-weight:normal;color:#5b6577;font-size:13px}
.facts{display:flex;gap:12px}.fact{flex:1;background:#f7f9fc;border:1px solid #e3e7ee;border-radius:4px;padding:8px 12px}
.fact h3{margin:0;font-size:12px;text-transform:uppercase;color:#5b6577}.fact p{margin:4px 0}
.tier,.stamps,.points{font-size:22px;font-weight:600}.dots{color:#b5651d;letter-spacing:2px;margin-left:8px}
progress{width:100%;height:10px;accent-color:#2a9d8f}
table{border-collapse:collapse;width:100%;margin:4px 0 12px}th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #e3e7ee}
th{background:#eef1f6;font-weight:600}.problem{color:#b00020}.none,.copy{color:#5b6577}
"""

# Reloads the page when a new serving copy is published (as Retool's auto-refresh does).
_REFRESH = """
let seen = null;
setInterval(async () => {
  const answer = await fetch('/api/version', {credentials: 'same-origin'});
  if (!answer.ok) return;
  const now = (await answer.json()).published_at;
  if (seen !== null && now !== seen) location.reload();
  seen = now;
}, 5000);
"""


def _layout(body: str, query: str) -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Customer 360</title>
<style>{_STYLE}</style></head><body>
<header><h1>Customer 360</h1><form action="/"><input name="q" value="{escape(query)}"
placeholder="customer id, name or email" autofocus> <button>Search</button></form></header>
<main>{body}</main><script>{_REFRESH}</script></body></html>"""


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
