"""The 360 app's HTML page: search results, a customer's card, the sign-in form; every value escaped. And the check
of what a request asks for (`checked`), which the page and the API share."""

import json
import re
from html import escape
from urllib.parse import quote, urlencode

from loyalty_pipeline.serve.serving import Ambiguous, ServingCopy

MAX_ID, MAX_QUERY = 200, 100  # characters of a customer id, of a search
VALID = re.compile(r"[^\x00-\x1f\x7f]+")  # printable: no control characters


def checked(value: str, limit: int, what: str) -> str | None:
    """None when `value` is usable, else why not (a 400)."""
    if not value.strip() or not VALID.fullmatch(value):
        return f"malformed {what}: empty or with control characters"
    if len(value) > limit:
        return f"{what} too long: {len(value)} characters, at most {limit}"
    return None


def page_body(copy: ServingCopy, query: str, identifier: str) -> tuple[str, int]:
    if identifier:
        if problem := checked(identifier, MAX_ID, "customer id"):
            return f'<p class="problem">{escape(problem)}</p>', 400
        try:
            card = copy.card(identifier)
        except Ambiguous as error:
            return f'<p class="problem">{escape(str(error))}</p>{_results(error.candidates)}', 409
        if card is None:
            return f'<p class="problem">No customer with id {escape(identifier)}.</p>', 404
        return _card(json.loads(card)), 200
    if query:
        if problem := checked(query, MAX_QUERY, "query"):
            return f'<p class="problem">{escape(problem)}</p>', 400
        if card := copy.exact(query):  # a profile's id or an email: the card itself
            return _card(json.loads(card)), 200
        found, more = copy.search(query)
        if not found:
            return f'<p class="problem">Nobody matches “{escape(query)}”.</p>', 200
        hint = f'<p class="more">More than {len(found)} match: type more of the name, email or id.</p>'
        return _results(found) + (hint if more else ""), 200
    return "<p>Type a customer id, a name or an email.</p>", 200


def _results(people: list[dict]) -> str:
    """People as a table whose id, name and email each link to the card (a phone taps anywhere on the row's text):
    the id is query-encoded (an `&` in it stays in the id), then HTML-escaped."""

    def row(person: dict) -> str:
        href = escape(urlencode({"id": person["user_id"]}, quote_via=quote))
        texts = (person["user_id"], person["name"], person["email"])
        linked = "".join(f'<td><a href="/?{href}">{escape(text)}</a></td>' if text else "<td></td>" for text in texts)
        return f"<tr>{linked}<td>{escape(person['reward_level'] or '')}</td></tr>"

    rows = "".join(row(person) for person in people)
    return f'<table class="results"><tr><th>id</th><th>name</th><th>email</th><th>tier</th></tr>{rows}</table>'


def _table(headers: tuple[str, ...], rows: list[tuple], css: str, empty: str) -> str:
    if not rows:
        return f'<p class="none">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(_show(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><tr>{head}</tr>{body}</table>'


INSTANT = re.compile(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]00(:?00)?)?")


def _show(value) -> str:
    """A value as the page shows it: an instant to the second, marked UTC (the warehouse keeps UTC)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, str) and (instant := INSTANT.fullmatch(value)):
        return f"{instant[1]} {instant[2]} UTC"
    return str(value)


def _price(value) -> str | None:
    return None if value is None else f"{value:.2f}"


def _card(card: dict) -> str:
    tier, period, stamps, points = card["tier"], card.get("tier_period") or {}, card["stamps"], card["points"]
    next_tier = tier["next"]
    spent = f"{tier['total_spend']:.2f}"
    value = period["period_value"] if period.get("period_value") is not None else tier["total_spend"]
    progress = (
        f'<progress value="{value}" max="{next_tier["above"]}"></progress>'
        f"<p>spent {spent} · {escape(next_tier['name'])} above {next_tier['above']:.2f}: "
        f"{next_tier['to_go']:.2f} to go</p>"
        if next_tier
        else f"<p>spent {spent} · top tier</p>"
    )
    if period.get("expires_at"):  # a tier kept by periods: when it is next evaluated, what keeping it takes
        keep = period.get("to_keep")
        progress += f"<p>evaluated {_show(period['expires_at'])}" + (
            f": {keep:.2f} more this period keeps {escape(tier['level'] or '')}</p>" if keep else "</p>"
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
    activity = [(r["at"], r["what"], r["product_id"], _price(r["price"])) for r in card["recent_activity"]]
    profile = card.get("profile") or {}
    closed = '<p class="closed">Account closed</p>' if profile.get("account_closed") else ""
    offers = "".join(f'<span class="promotion">{escape(name)}</span>' for name in profile.get("promotions") or [])
    # the id and email beside the name, only those there are: no dangling separator
    known = [value for value in (card["user_id"] if card["name"] else None, card["email"]) if value]
    aside = f" <small>{escape(' · '.join(known))}</small>" if known else ""
    return f"""
<section class="card" data-user="{escape(card["user_id"])}">
  <h2>{escape(card["name"] or card["user_id"])}{aside}</h2>
  {closed}
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
  {_table(("when", "points", "kind", "expires"), [(r["occurred_at"], r["points"], r["kind"], r["expires_at"]) for r in card["ledger"]], "ledger", "no points yet")}
  <h3>Promotions</h3>
  <p class="promotions">{offers or '<span class="none">no promotion</span>'}</p>
  <h3>Journeys</h3>
  {_table(("journey", "current node", "since"), journeys, "journeys", "in no journey")}
  <h3>Activations</h3>
  {_table(("journey", "activation", "on"), activations, "activations", "no activation")}
  <h3>Recommendations</h3>
  {_table(("rank", "product", "score"), [(r["rank"], r["product_id"], r["score"]) for r in card["recommendations"]], "recommendations", "no recommendation")}
  <h3>Recent activity</h3>
  {_table(("when", "what", "product", "price"), activity, "activity", "no recent activity")}
  <p class="copy">as of {escape(str(card["copy"]["as_of"]))} · published {_show(card["copy"]["published_at"])}</p>
</section>"""


LOGIN = """<form class="login" method="post" action="/login"><label>Token <input type="password" name="token"
autofocus></label> <button>Sign in</button> <span class="problem">{problem}</span></form>"""


_STYLE = """
*{box-sizing:border-box}
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330;overflow-wrap:break-word}
header{background:#1d3557;color:#fff;padding:10px 20px;display:flex;flex-wrap:wrap;gap:8px 20px;align-items:center}
header h1{font-size:16px;margin:0}header form{display:flex;gap:6px;flex:1 1 260px;max-width:420px}
header input{flex:1;min-width:0;padding:6px;border:0;border-radius:3px;font-size:16px}
main{padding:16px 20px;max-width:1100px}
.card{background:#fff;border:1px solid #d8dce3;border-radius:4px;padding:12px 18px}
.card h2 small{font-weight:normal;color:#5b6577;font-size:13px}
.results td,.card h2{overflow-wrap:anywhere}  /* emails and ids have no space to wrap at */
.facts{display:flex;flex-wrap:wrap;gap:12px}
.fact{flex:1 1 200px;min-width:0;background:#f7f9fc;border:1px solid #e3e7ee;border-radius:4px;padding:8px 12px}
.fact h3{margin:0;font-size:12px;text-transform:uppercase;color:#5b6577}.fact p{margin:4px 0}
.tier,.stamps,.points{font-size:22px;font-weight:600}.dots{color:#b5651d;letter-spacing:2px;margin-left:8px}
progress{width:100%;height:10px;accent-color:#2a9d8f}
table{border-collapse:collapse;width:100%;margin:4px 0 12px}th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #e3e7ee}
th{background:#eef1f6;font-weight:600}.problem,.closed{color:#b00020}.closed{font-weight:600}.none,.copy,.more{color:#5b6577}
.promotion{display:inline-block;background:#e8f4f2;border-radius:3px;padding:1px 8px;margin:0 6px 4px 0}
@media (max-width:600px){header,main{padding:8px 10px}.card{padding:8px 10px}th,td{padding:3px 4px}}
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


def layout(body: str, query: str) -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Customer 360</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><style>{_STYLE}</style></head><body>
<header><h1>Customer 360</h1><form action="/"><input name="q" value="{escape(query)}"
placeholder="customer id, name or email" autofocus> <button>Search</button></form></header>
<main>{body}</main><script>{_REFRESH}</script></body></html>"""
