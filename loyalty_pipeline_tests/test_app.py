"""Issue 16: the customer 360 app's API and page, on the demo's serving copy (Starlette's TestClient)."""

import json
import logging
import os
import shutil
from decimal import Decimal

import duckdb
import pytest
from starlette.testclient import TestClient

from loyalty_pipeline.app import create_app, run
from loyalty_pipeline.serving import serving_path


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
    answer = TestClient(create_app(tmp_path / "warehouse.serving.duckdb")).get("/api/customers/kris")
    assert answer.status_code == 503
    assert "run `loyalty-pipeline materialize` first" in answer.json()["error"]


def test_a_new_copy_is_read_without_a_restart(copy_file, tmp_path):
    path = tmp_path / "warehouse.serving.duckdb"
    shutil.copy(copy_file, path)
    client = TestClient(create_app(path))
    assert client.get("/api/customers/kris").json()["points"]["balance"] == 37
    staging = tmp_path / "next.duckdb"
    shutil.copy(copy_file, staging)
    with duckdb.connect(str(staging)) as conn:
        conn.execute(
            """UPDATE customer.cards SET card = json_merge_patch(card, '{"points": {"balance": 40}}')
               WHERE user_id = 'u2001'"""
        )
        conn.execute("UPDATE customer.copy_info SET published_at = published_at + INTERVAL 1 MINUTE")
    before = client.get("/api/version").json()["published_at"]
    os.replace(staging, path)  # what a publish does
    assert client.get("/api/customers/kris").json()["points"]["balance"] == 40
    assert client.get("/api/version").json()["published_at"] != before


def test_the_page_searches_then_shows_the_card(client):
    results = client.get("/", params={"q": "kris"}).text
    assert '<a href="/?id=u2001">u2001</a>' in results
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
    with caplog.at_level(logging.INFO, logger="loyalty_pipeline.app"):
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
