"""SPEC §5.3: profiles, recommendations, and the profile command reading a serving copy while runs write."""

import json
import sqlite3
import subprocess
import sys
from decimal import Decimal as D
from pathlib import Path

import duckdb
import pytest

from loyalty_pipeline.defs.customer_checks import baskets_match_purchases, serving_copy_is_complete
from loyalty_pipeline.defs.resources import Warehouse
from loyalty_pipeline.serve.serving import ServingCopy, serving_path
from loyalty_pipeline_tests.scenarios import clicks

CUSTOMER = ("customer/serving_snapshot",)  # the 360 tables and what they read


DAY = "2024-06-01"


CLI = str(Path(sys.executable).parent / "loyalty-pipeline")


def orders(inputs, day, *rows):
    body = "".join(f"{order},{user},{pid},{price},{day}T{time}Z\n" for order, user, pid, price, time in rows)
    inputs.csv(f"historical_purchases/{day}.csv", "order_id,user_id,product_id,price,purchased_at\n" + body)


def test_activity_counts_views_and_carts_strictly_after_the_last_purchase(inputs):
    inputs.kafka("purchases", [("ann", {"product_id": "tea"}, f"{DAY}T10:00:00")])
    clicks(
        inputs,
        ("ann", "view", "cake", f"{DAY}T09:00:00"),
        ("ann", "view", "same_instant", f"{DAY}T10:00:00"),
        ("ann", "add_to_cart", "honey", f"{DAY}T10:00:00.001"),
        ("ann", "remove_from_cart", "scone", f"{DAY}T11:00:00"),
        ("ann", "view", "jam", f"{DAY}T12:00:00"),
        ("ann", "view", "jam", f"{DAY}T12:30:00"),
        ("bob", "view", "cake", f"{DAY}T09:00:00"),
        ("bob", "remove_from_cart", "pie", f"{DAY}T09:00:00"),
    )
    inputs.kafka("users", [("bob", {"name": "Bob"}, f"{DAY}T08:00:00")])
    inputs.materialize(DAY, assets=CUSTOMER)
    assert inputs.query("SELECT user_id, activity_since_last_purchase FROM customer.profile_360 ORDER BY user_id") == [
        ("ann", ["honey", "jam"]),
        ("bob", ["cake"]),  # never purchased: all views and carts count
    ]


def test_identity_kafka_newest_wins_over_the_export_field_by_field(inputs):
    inputs.kafka(
        "users",
        [
            ("u1", {"name": "Old", "email": "old@x"}, f"{DAY}T08:00:00"),
            ("u1", {"name": "New"}, f"{DAY}T09:00:00"),
            ("u2", {"name": "Closed"}, f"{DAY}T08:00:00"),
            ("u2", None, f"{DAY}T09:00:00"),
        ],
    )
    inputs.csv(
        "customers/a-2024.csv", "user_id,name,email,signup_date\nu1,Csv1,csv1@x,2020-01-01\nu3,Old3,old3@x,2020-01-01\n"
    )
    inputs.csv("customers/b-2025.csv", "user_id,name,email,signup_date\nu3,New3,new3@x,2021-02-02\nu2,Csv2,csv2@x,\n")
    inputs.materialize(DAY, assets=CUSTOMER)
    assert inputs.query(
        "SELECT user_id, name, email, signup_date::VARCHAR, account_closed FROM customer.profile_360 ORDER BY user_id"
    ) == [
        ("u1", "New", "csv1@x", "2020-01-01", False),
        ("u2", "Csv2", "csv2@x", None, True),
        ("u3", "New3", "new3@x", "2021-02-02", False),
    ]


def test_spend_columns_join_kafka_and_s3(inputs):
    inputs.kafka("products", [("tea", {"category": "b", "price": 2.5}, f"{DAY}T00:00:00")])
    inputs.kafka(
        "purchases",
        [("ann", {"product_id": "tea"}, f"{DAY}T10:00:00"), ("ann", {"product_id": "ghost"}, f"{DAY}T11:00:00")],
    )
    orders(inputs, DAY, ("o1", "ann", "cake", "4.00", "08:00:00"))
    inputs.materialize(DAY, "2024-06-03", assets=CUSTOMER)
    assert inputs.query(
        "SELECT total_spend, purchase_count, avg_purchase_price, first_purchase_at::VARCHAR, last_purchase_at::VARCHAR, "
        "days_since_last_purchase, points_balance, products_purchased FROM customer.profile_360"
    ) == [(D("6.50"), 3, D("3.25"), "2024-06-01 08:00:00", "2024-06-01 11:00:00", 2, 6, ["cake", "ghost", "tea"])]


def test_recommendation_score_counts_other_customers_distinct_orders(inputs):
    orders(
        inputs,
        DAY,
        ("o1", "bob", "tea", "1", "08:00:00"),
        ("o1", "bob", "honey", "1", "08:00:00"),
        ("o1", "bob", "jam", "1", "08:00:00"),
        ("o2", "cid", "tea", "1", "09:00:00"),
        ("o2", "cid", "cake", "1", "09:00:00"),
        ("o2", "cid", "honey", "1", "09:00:00"),
        ("o3", "dan", "cake", "1", "09:00:00"),
        ("o3", "dan", "pie", "1", "09:00:00"),
        ("o3", "dan", "honey", "1", "09:00:00"),
        ("o4", "ann", "tea", "1", "07:00:00"),
        ("o4", "ann", "mustard", "1", "07:00:00"),
        ("o5", "eve", "tea", "1", "09:00:00"),
        ("o5", "eve", "apple", "1", "09:00:00"),
        ("o5", "eve", "bread", "1", "09:00:00"),
        ("o5", "eve", "corn", "1", "09:00:00"),
        ("o5", "eve", "dill", "1", "09:00:00"),
    )
    clicks(inputs, ("ann", "view", "tea", f"{DAY}T12:00:00"), ("ann", "add_to_cart", "cake", f"{DAY}T12:00:00"))
    inputs.materialize(DAY, assets=CUSTOMER)
    # orders with tea or cake by others: o1, o2, o3, o5 (o2 has both: counted once); ann's own o4 never counts,
    # tea and cake (her interests) are never candidates; ties by product_id; top 5 only
    assert inputs.query(
        "SELECT product_id, score, rank FROM customer.recommendations WHERE user_id = 'ann' ORDER BY rank"
    ) == [
        ("honey", 3, 1),
        ("apple", 1, 2),
        ("bread", 1, 3),
        ("corn", 1, 4),
        ("dill", 1, 5),
    ]
    # the card computes the same list when it is looked up
    card = json.loads(ServingCopy(serving_path(str(inputs.warehouse))).card("ann"))
    assert [(r["product_id"], r["score"], r["rank"]) for r in card["recommendations"]] == inputs.query(
        "SELECT product_id, score, rank FROM customer.recommendations WHERE user_id = 'ann' ORDER BY rank"
    )


def test_baskets_check_warns_when_an_update_missed_someone(inputs):
    orders(inputs, DAY, ("o1", "bob", "tea", "1", "08:00:00"), ("o1", "bob", "honey", "1", "08:00:00"))
    orders(inputs, "2024-06-02", ("o2", "ann", "tea", "1", "07:00:00"), ("o2", "ann", "jam", "1", "07:00:00"))
    clicks(inputs, ("ann", "view", "honey", "2024-06-02T12:00:00"))
    inputs.materialize(DAY, "2024-06-02", assets=CUSTOMER)
    with duckdb.connect(str(inputs.warehouse)) as conn:
        conn.execute("CREATE TEMP TABLE rec_checked_people AS SELECT 'ann' AS person")
        assert baskets_match_purchases.evaluate(conn, None, None) == (True, {"rows_differing": 0})
        conn.execute("DELETE FROM customer.rec_baskets WHERE user_id = 'ann'")  # as if her purchase was not logged
        assert baskets_match_purchases.evaluate(conn, None, None) == (False, {"rows_differing": 1})


@pytest.mark.e2e
def test_profile_command_prints_json_and_fails_clearly_for_an_unknown_id(inputs):
    inputs.kafka("purchases", [("ann", {"product_id": "tea"}, f"{DAY}T10:00:00")])
    inputs.materialize(DAY, assets=CUSTOMER)
    shown = subprocess.run(
        [CLI, "profile", "ann", "--warehouse", str(inputs.warehouse)], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["profile"]["user_id"] == "ann" and document["profile"]["products_purchased"] == ["tea"]
    assert document["recommendations"] == []
    missing = subprocess.run(
        [CLI, "profile", "nobody", "--warehouse", str(inputs.warehouse)], capture_output=True, text=True
    )
    assert missing.returncode == 1 and "nobody" in missing.stderr and missing.stdout == ""


@pytest.mark.e2e
def test_profile_lookup_works_while_a_writer_holds_the_warehouse_and_sees_whole_runs(inputs):
    inputs.kafka("purchases", [("ann", {"product_id": "tea"}, f"{DAY}T10:00:00")])
    inputs.materialize(DAY, assets=CUSTOMER)
    serving = inputs.warehouse.with_name("warehouse.serving.sqlite")
    old_reader = sqlite3.connect(serving.as_uri() + "?mode=ro", uri=True, isolation_level=None)
    count = "SELECT json_extract(card, '$.profile.purchase_count') FROM cards"
    old_reader.execute("BEGIN")  # a read transaction that began before the run
    assert old_reader.execute(count).fetchall() == [(1,)]
    inputs.kafka("purchases", [("ann", {"product_id": "cake"}, f"{DAY}T11:00:00")], file="more.jsonl")
    inputs.materialize(DAY, assets=CUSTOMER)
    # it keeps the state it began with; a new one sees the whole new run
    assert old_reader.execute(count).fetchall() == [(1,)]
    old_reader.execute("COMMIT")
    assert old_reader.execute(count).fetchall() == [(2,)]
    old_reader.close()
    writer = duckdb.connect(str(inputs.warehouse))  # another process would be blocked on this file, not on the copy
    try:
        shown = subprocess.run(
            [CLI, "profile", "ann", "--warehouse", str(inputs.warehouse)], capture_output=True, text=True, timeout=60
        )
    finally:
        writer.close()
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["profile"]["purchase_count"] == 2


def test_serving_check_fails_when_the_copy_misses_a_row(inputs):
    inputs.kafka(
        "purchases",
        [("ann", {"product_id": "tea"}, f"{DAY}T10:00:00"), ("bob", {"product_id": "tea"}, f"{DAY}T10:00:00")],
    )
    inputs.materialize(DAY, assets=CUSTOMER)
    warehouse = Warehouse(database=str(inputs.warehouse))
    assert serving_copy_is_complete(warehouse).passed
    with sqlite3.connect(warehouse.serving_path()) as copy:
        copy.execute("UPDATE cards SET card = json_set(card, '$.points.balance', 99) WHERE user_id = 'ann'")
    copy.close()
    result = serving_copy_is_complete(warehouse)  # as many rows, one of them another card
    assert not result.passed and result.metadata["tables_differing"].value == "cards"
    with sqlite3.connect(warehouse.serving_path()) as copy:
        copy.execute("DELETE FROM cards WHERE user_id = 'bob'")
        copy.execute("DELETE FROM names")
    copy.close()
    result = serving_copy_is_complete(warehouse)
    assert not result.passed and result.metadata["tables_differing"].value == "cards"
