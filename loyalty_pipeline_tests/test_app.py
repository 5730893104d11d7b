"""Issue 16: the customer 360 app's API and page, on the demo's serving copy (Starlette's TestClient)."""

import asyncio
import html
import json
import logging
import re
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from loyalty_pipeline.serve.app import COOKIE, MAX_BODY, create_app, run
from loyalty_pipeline.serve.serving import serving_path
from loyalty_pipeline_tests.scenarios import Inputs, buy, users


@pytest.fixture(scope="module")
def copy_file(demo):
    return serving_path(str(demo.warehouse))


@pytest.fixture(scope="module")
def client(copy_file):
    return TestClient(create_app(copy_file))


def test_a_card_by_any_identifier_holds_every_field(client):
    card = client.get("/api/customers/kris").json()  # a name; the account id and the email find the same card
    assert client.get("/api/customers/u2001").json() == card == client.get("/api/customers/KRIS@example.com").json()
    assert (card["user_id"], card["name"], card["email"]) == ("u2001", "kris", "kris@example.com")
    assert card["copy"]["as_of"] == "2024-06-05"
    assert card["tier"] == {
        "level": "CLIMBING",
        "total_spend": 74.28,
        "next": {"name": "BRONZE", "above": 200.0, "to_go": 125.72},
    }
    assert card["stamps"] == {
        "product_id": "coffee",
        "cycle": 6,
        "bought": 13,
        "in_cycle": 1,
        "next_one_free": False,
        "to_free": 4,
    }
    assert card["points"] == {
        "balance": 37,
        "available": 37,
        "pending": 0,
        "debt": 0,
        "next_expiry_at": "2025-06-03 00:00:00",
        "next_expiry_points": 16,
    }
    assert len(card["ledger"]) == 15 and sum(row["points"] for row in card["ledger"]) == 37
    assert card["ledger"][0] == {
        "occurred_at": "2024-06-04 22:00:00",
        "points": 3,
        "kind": "earn",
        "expires_at": "2025-06-05 00:00:00",
    }
    assert {"occurred_at": "2024-06-04 12:00:00", "points": -30, "kind": "use", "expires_at": None} in card["ledger"]
    assert card["journeys"] == [{"journey_id": "tea_trial", "node": "end", "entered_at": "2024-06-04"}]
    assert card["activations"] == [
        {"journey_id": "tea_trial", "activation": "double_points", "activated_on": "2024-06-04"},
        {"journey_id": "tea_trial", "activation": "tea_coupon", "activated_on": "2024-06-01"},
    ]
    assert [(r["product_id"], r["rank"]) for r in card["recommendations"]] == [("honey", 1), ("cake", 2), ("coffee", 3)]
    assert len(card["recent_activity"]) == 10
    assert card["recent_activity"][0] == {
        "at": "2024-06-05 08:10:00",
        "what": "view",
        "product_id": "scone",
        "price": None,
    }
    assert card["recent_activity"][3] == {
        "at": "2024-06-04 22:00:00",
        "what": "purchase",
        "product_id": "coffee",
        "price": 3.05,
    }
    assert card["profile"]["purchase_count"] == 14 and Decimal(str(card["profile"]["total_spend"])) == Decimal("74.28")


def test_a_returning_customer_shows_the_return_and_the_debt(client):
    card = client.get("/api/customers/mona").json()
    assert card["points"] == {
        "balance": -100,
        "available": 0,
        "pending": 0,
        "debt": 100,
        "next_expiry_at": None,
        "next_expiry_points": None,
    }
    assert [(r["kind"], r["points"]) for r in card["ledger"]] == [("clawback", -126), ("use", -100), ("earn", 126)]
    assert card["recent_activity"] == [
        {"at": "2024-06-02 10:00:00", "what": "purchase (returned)", "product_id": "handbag", "price": 126.0}
    ]
    assert card["tier"]["next"]["to_go"] == 200.0  # nothing net spent


def test_search_by_id_name_or_email_prefix_at_most_20(client):
    assert client.get("/api/customers", params={"q": "kri"}).json() == {
        "results": [{"user_id": "u2001", "name": "kris", "email": "kris@example.com", "reward_level": "CLIMBING"}]
    }
    assert [r["user_id"] for r in client.get("/api/customers", params={"q": "u200"}).json()["results"]] == [
        "u2001",
        "u2002",
        "u2003",
        "u2004",
    ]
    assert [r["user_id"] for r in client.get("/api/customers", params={"q": "YEVA@"}).json()["results"]] == ["u2003"]
    assert client.get("/api/customers", params={"q": "zzz"}).json() == {"results": []}


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/customers/nobody", 404, "no customer with id 'nobody'"),
        ("/api/customers/" + "x" * 201, 400, "customer id too long: 201 characters, at most 200"),
        ("/api/customers/a%01b", 400, "malformed customer id"),
        ("/api/customers?q=" + "k" * 101, 400, "query too long: 101 characters, at most 100"),
        ("/api/customers?q=", 400, "malformed query"),
    ],
)
def test_errors_are_json_with_a_clear_message(client, path, status, message):
    answer = client.get(path)
    assert answer.status_code == status
    assert answer.json()["error"].startswith(message)


def test_no_serving_copy_yet_is_503_naming_what_to_run(tmp_path):
    answer = TestClient(create_app(tmp_path / "warehouse.serving.sqlite")).get("/api/customers/kris")
    assert answer.status_code == 503
    assert "run `loyalty-pipeline materialize` first" in answer.json()["error"]


def copy_store(source: Path, target: Path) -> Path:
    """A copy of a serving store, whatever its WAL holds (SQLite's backup)."""
    with sqlite3.connect(source) as origin, sqlite3.connect(target) as copy:
        origin.backup(copy)
    copy.close()
    return target


def test_a_publish_is_read_without_a_restart(copy_file, tmp_path):
    path = copy_store(copy_file, tmp_path / "warehouse.serving.sqlite")
    client = TestClient(create_app(path))
    assert client.get("/api/customers/kris").json()["points"]["balance"] == 37
    before = client.get("/api/version").json()["published_at"]
    with sqlite3.connect(path) as conn:  # what a publish does: one write transaction in place
        conn.execute("UPDATE cards SET card = json_set(card, '$.points.balance', 40) WHERE user_id = 'u2001'")
        conn.execute("UPDATE info SET published_at = '2099-01-01 00:00:00'")
    conn.close()
    assert client.get("/api/customers/kris").json()["points"]["balance"] == 40
    assert client.get("/api/version").json() == {"published_at": "2099-01-01 00:00:00"} != {"published_at": before}


def test_the_page_searches_then_shows_the_card(client):
    results = client.get("/", params={"q": "kris"}).text
    # the id, the name and the email each open the card, so a phone can tap any of them
    for text in ("u2001", "kris", "kris@example.com"):
        assert f'<a href="/?id=u2001">{text}</a>' in results
    assert '<link rel="icon" href="data:,">' in results  # no favicon request answered 404 on every page
    card = client.get("/", params={"id": "u2001"}).text
    for shown in ("CLIMBING", "BRONZE above 200.00: 125.72 to go", "4 more coffee purchases, then one free"):
        assert shown in card
    assert '<p class="points">37</p>' in card and "16 expire 2025-06-03 00:00:00" in card
    assert card.count("<tr>") == (1 + 15) + (1 + 1) + (1 + 2) + (1 + 3) + (1 + 10)  # the five tables, with headers
    assert client.get("/", params={"id": "nobody"}).status_code == 404


def test_with_a_token_every_request_needs_it(copy_file):
    client = TestClient(create_app(copy_file, token="s3cret"))
    assert client.get("/api/customers/kris").status_code == 401
    assert client.get("/api/customers/kris", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/customers/kris", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert 'name="token"' in client.get("/").text  # the login form
    assert client.post("/login", data={"token": "wrong"}).status_code == 401
    client.post("/login", data={"token": "s3cret"})  # sets the cookie
    assert client.get("/api/customers/kris").status_code == 200


def test_without_a_token_only_loopback_is_served(capsys, monkeypatch):
    monkeypatch.delenv("LOYALTY_APP_TOKEN", raising=False)
    assert run("0.0.0.0", 8050) == 2
    assert "set LOYALTY_APP_TOKEN" in capsys.readouterr().err


def test_logs_name_routes_not_people(client, caplog):
    with caplog.at_level(logging.INFO, logger="loyalty_pipeline.serve.app"):
        client.get("/api/customers/kris@example.com")
        client.get("/api/customers", params={"q": "kris"})
    assert [record.getMessage().rsplit(" ", 2)[0] for record in caplog.records] == [
        "GET /api/customers/{identifier:path} 200",
        "GET /api/customers 200",
    ]
    assert "kris" not in caplog.text


def test_the_cli_profile_prints_the_card(demo, capsys):
    from loyalty_pipeline.cli import main

    assert main(["profile", "kris", "--warehouse", str(demo.warehouse)]) == 0
    assert json.loads(capsys.readouterr().out)["points"]["balance"] == 37


def tampered(copy_file: Path, tmp_path: Path, *statements: str) -> Path:
    """A copy of the demo's serving store with `statements` run on it."""
    path = copy_store(copy_file, tmp_path / "warehouse.serving.sqlite")
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()
    return path


def asgi_post(app, path: str, chunks: int, chunk: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
    """POSTs `chunks` pieces of `chunk` as a client would stream them; returns the status and how many were read."""
    pulled, sent = [], []

    async def receive() -> dict:
        if len(pulled) == chunks:
            return {"type": "http.disconnect"}
        pulled.append(chunk)
        return {"type": "http.request", "body": chunk, "more_body": len(pulled) < chunks}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/x-www-form-urlencoded"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), len(pulled)


@pytest.mark.parametrize("token", ["s3cret", None])
def test_a_body_over_the_limit_is_413_before_it_is_read(copy_file, token):
    app = create_app(copy_file, token=token)
    client = TestClient(app)
    answer = client.post("/login", content=b"token=" + b"x" * MAX_BODY)
    assert answer.status_code == 413
    assert answer.text.count(f"request body over {MAX_BODY} bytes") == 1
    assert client.post("/api/customers", content=b"x" * (MAX_BODY + 1)).json() == {
        "error": f"request body over {MAX_BODY} bytes"
    }
    # a Content-Length over the limit: refused before one byte is read
    assert asgi_post(app, "/login", 400, b"x" * 1024, [(b"content-length", b"409600")]) == (413, 0)
    # streamed without a length (chunked): reading stops at the limit, not at the end of 400 MB
    assert asgi_post(app, "/login", 400_000, b"x" * 1024, []) == (413, MAX_BODY // 1024 + 1)
    # a body within the limit is read as before
    assert client.post("/login", data={"token": "wrong"}).status_code == 401


def test_non_ascii_tokens_are_a_401_or_work_never_a_500(copy_file):
    client = TestClient(create_app(copy_file, token="s3cret"))
    assert client.get("/api/customers/kris", headers={"Authorization": "Bearer pässwort".encode()}).status_code == 401
    assert client.get("/api/customers/kris", headers={"Cookie": f"{COOKIE}=pässwort".encode()}).status_code == 401
    assert client.get("/", headers={"Cookie": f'{COOKIE}="p\\344ss"'}).status_code == 401  # an escaped byte
    assert client.post("/login", data={"token": "pässwort"}).status_code == 401
    assert client.post("/login", content=b"token=p%FF%FEss\xff").status_code == 401  # not UTF-8 at all

    secret = "pässwört €"  # a configured token beyond ASCII works by header, form and cookie
    client = TestClient(create_app(copy_file, token=secret))
    assert client.get("/api/customers/kris").status_code == 401
    assert client.get("/api/customers/kris", headers={"Authorization": "Bearer s3cret"}).status_code == 401
    authorization = ("Bearer " + secret).encode()
    assert client.get("/api/customers/kris", headers={"Authorization": authorization}).status_code == 200
    assert client.post("/login", data={"token": secret}, follow_redirects=False).status_code == 303
    assert client.get("/api/customers/kris").status_code == 200  # by the cookie the form set
    assert client.cookies[COOKIE].isascii()


def test_links_encode_the_id_so_it_cannot_add_parameters(copy_file, tmp_path):
    odd = 'zz&id=u2001 "<b>'
    path = tampered(
        copy_file,
        tmp_path,
        f"INSERT INTO identifiers VALUES ('user_id', '{odd}', '{odd}')",
        f"""INSERT INTO cards SELECT '{odd}', 'zz', NULL, NULL, NULL, json_set(card, '$.user_id', '{odd}', '$.name', 'zz')
            FROM cards WHERE user_id = 'u2001'""",
    )
    client = TestClient(create_app(path))
    results = client.get("/", params={"q": "zz"}).text
    href = re.search(r'<a href="([^"]*)">', results).group(1)
    assert href == "/?id=zz%26id%3Du2001%20%22%3Cb%3E"
    assert "<b>" not in results and "zz&amp;id=u2001 &quot;&lt;b&gt;</a>" in results
    card = client.get(html.unescape(href)).text  # following the link opens zz's card, not u2001's
    assert f'data-user="{html.escape(odd)}"' in card and 'data-user="u2001"' not in card


NOT_A_COPY = "(not a serving copy, or one an older version published)"


@pytest.mark.parametrize(
    "statements",
    [
        (),  # an empty database
        ("CREATE TABLE notes (x INTEGER)",),  # someone else's
        ("CREATE TABLE cards (user_id TEXT)",),  # half of one
        # one an older version published
        (
            "CREATE TABLE cards (x)",
            "CREATE TABLE identifiers (x)",
            "CREATE TABLE names (x)",
            "CREATE TABLE info (shape INTEGER)",
            "INSERT INTO info VALUES (0)",
        ),
    ],
)
def test_a_database_without_the_copys_tables_is_503_naming_what_to_run(tmp_path, statements):
    path = tmp_path / "warehouse.serving.sqlite"
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()
    client = TestClient(create_app(path))
    for url in ("/api/customers/kris", "/api/customers?q=kr", "/api/version"):
        answer = client.get(url)
        assert answer.status_code == 503
        assert NOT_A_COPY in answer.json()["error"]
        assert answer.json()["error"].endswith("run `loyalty-pipeline materialize` to publish it again")
    for params in ({"id": "kris"}, {"q": "kr"}):
        answer = client.get("/", params=params)
        assert answer.status_code == 503 and NOT_A_COPY in answer.text


def test_a_copy_with_a_table_of_another_shape_is_503(copy_file, tmp_path):
    path = tampered(
        copy_file,
        tmp_path,
        "DROP TABLE identifiers",
        "CREATE TABLE identifiers (id_type TEXT, value TEXT, user_id TEXT)",
    )
    answer = TestClient(create_app(path)).get("/api/customers/kris")
    assert answer.status_code == 503
    assert answer.json()["error"].startswith(f"the serving copy {path} cannot be read (")


def test_a_name_several_people_carry_lists_them_instead_of_one_card(copy_file, tmp_path):
    path = tampered(
        copy_file,
        tmp_path,
        """INSERT INTO cards SELECT 'u9999', ' Kris', 'other.kris@example.com', NULL, NULL,
           json_set(card, '$.user_id', 'u9999', '$.name', ' Kris') FROM cards WHERE user_id = 'u2001'""",
        "INSERT INTO identifiers VALUES ('user_id', 'u9999', 'u9999')",
        "INSERT INTO cards VALUES ('u9997', NULL, 'N/A', NULL, NULL, '{}'), ('u9998', NULL, ' n/a', NULL, NULL, '{}')",
        "INSERT INTO identifiers VALUES ('email', 'n/a', 'u9998')",  # the graph lists one
        # as a publish writes them (trimmed, lower-case)
        "INSERT INTO names VALUES ('kris', 'u9999'), ('other.kris@example.com', 'u9999'), ('n/a', 'u9997'), "
        "('n/a', 'u9998')",
    )
    client = TestClient(create_app(path))
    answer = client.get("/api/customers/KRIS")
    assert answer.status_code == 409
    assert answer.json() == {
        "error": "'KRIS' finds 2 customers: look one up by id",
        "candidates": [
            {"user_id": "u2001", "name": "kris", "email": "kris@example.com", "reward_level": "CLIMBING"},
            {"user_id": "u9999", "name": " Kris", "email": "other.kris@example.com", "reward_level": None},
        ],
    }
    page = client.get("/", params={"id": "kris"})
    assert page.status_code == 409
    assert '<a href="/?id=u2001">u2001</a>' in page.text and '<a href="/?id=u9999">u9999</a>' in page.text
    # so does an email several profiles carry
    answer = client.get("/api/customers/N%2FA")
    assert answer.status_code == 409 and [c["user_id"] for c in answer.json()["candidates"]] == ["u9997", "u9998"]
    # an id, or an identifier only one person has, still finds one card
    assert client.get("/api/customers/u9999").json()["user_id"] == "u9999"
    assert client.get("/api/customers/kris@example.com").json()["user_id"] == "u2001"


@pytest.fixture(scope="module")
def namesakes(tmp_path_factory):
    """22 profiles named "Aiko Dübois" (one of them the only buyer: a 195 cake), a "Zoë" without an email, an
    account closed by a users tombstone, and a profile with neither name nor email."""
    inputs = Inputs(tmp_path_factory.mktemp("namesakes"))
    at = "2024-06-01T08:00:00.123"
    inputs.kafka("products", [("cake", {"category": "c", "price": 195}, at)], file="products.jsonl")
    users(
        inputs,
        *[(f"a{n:02}", {"name": "Aiko Dübois", "email": f"aiko.{n}@example.com"}, at) for n in range(22)],
        ("z1", {"name": "Zoë"}, at),
        ("c1", {"name": "Cleo", "email": "cleo@example.com"}, at),
        ("c1", None, "2024-06-01T09:00:00"),
        ("n1", {"email": None}, at),
    )
    buy(inputs, ("a00", "cake", "2024-06-01T10:00:00.250"), ("n1", "cake", "2024-06-01T11:00:00"))
    inputs.materialize("2024-06-01")
    return TestClient(create_app(serving_path(str(inputs.warehouse))))


def test_search_finds_everyone_who_shares_a_name_in_any_case_or_accent_with_a_hint_past_the_page(namesakes):
    for query in ("Aiko Dübois", "aiko d", "AIKO DUBOIS", "aiko.1"):
        answer = namesakes.get("/api/customers", params={"q": query}).json()
        expected = [f"a{n:02}" for n in range(22) if query != "aiko.1" or str(n).startswith("1")]
        assert [person["user_id"] for person in answer["results"]] == expected[:20], query
        assert answer.get("more", False) == (len(expected) > 20), query
    assert namesakes.get("/api/customers", params={"q": "zoe"}).json() == {
        "results": [{"user_id": "z1", "name": "Zoë", "email": None, "reward_level": "CLIMBING"}]
    }
    page = namesakes.get("/", params={"q": "aiko"}).text
    assert page.count("<tr><td><a href=") == 20 and "More than 20 match" in page
    assert "More than" not in namesakes.get("/", params={"q": "aiko.1"}).text


def test_an_exact_id_or_email_opens_the_card_and_a_shared_name_lists_the_people(namesakes):
    for query in ("a07", " AIKO.7@example.com "):
        page = namesakes.get("/", params={"q": query}).text
        assert '<section class="card" data-user="a07">' in page and '<table class="results">' not in page, query
    assert '<table class="results">' in namesakes.get("/", params={"q": "Aiko Dübois"}).text
    assert namesakes.get("/api/customers/aiko dubois").status_code == 409  # a name: one of several, by id


def test_the_card_says_closed_labels_every_list_and_shows_prices_and_utc_times(namesakes):
    closed = namesakes.get("/", params={"id": "c1"}).text
    assert '<p class="closed">Account closed</p>' in closed
    assert "Account closed" not in namesakes.get("/", params={"id": "a00"}).text
    buyer = namesakes.get("/", params={"id": "a00"}).text
    assert "<td>2024-06-01 10:00:00 UTC</td><td>purchase</td><td>cake</td><td>195.00</td>" in buyer
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", buyer)  # no fraction of a second anywhere
    assert re.search(r"published \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</p>", buyer)
    for label in ("<h3>Promotions</h3>", "<h3>Journeys</h3>", "<h3>Activations</h3>", "in no journey", "no promotion"):
        assert label in buyer, label
    assert ">none<" not in buyer
    nameless = namesakes.get("/", params={"id": "n1"}).text
    assert "<h2>n1</h2>" in nameless  # neither name nor email: the id alone, no dangling separator
    assert "<h2>Zoë <small>z1</small></h2>" in namesakes.get("/", params={"id": "z1"}).text
