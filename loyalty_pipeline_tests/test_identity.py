"""Identity resolution: one person, one profile, across event keys, account ids, emails, cards and names."""

from datetime import date

import duckdb
import pytest

from loyalty_pipeline_tests.scenarios import Inputs, bench_module, buy_as, priced, users

JOURNEY = """
journeys:
  - id: welcome
    audience: "purchase_count > 0"
    goal: "total_spend > 1000"
    stages:
      - id: hello
        steps: [{activation: hi}, {wait_days: 10}]
"""


def test_each_rule_links_to_the_account(inputs):
    priced(inputs, ten=10)
    users(inputs, ("u1", {"name": "Ann", "email": "Ann@X.com ", "card_id": "C1"}, "2022-10-01T07:00:00"))
    buy_as(
        inputs,
        ("ann@x.com", {"product_id": "ten"}, "2022-10-01T08:00:00"),  # keyed by the email (normalised)
        ("C1", {"product_id": "ten"}, "2022-10-01T09:00:00"),  # keyed by the card
        ("ann", {"product_id": "ten"}, "2022-10-01T10:00:00"),  # keyed by the name only the account carries
        ("guest-7", {"product_id": "ten", "email": "ann@x.com"}, "2022-10-01T11:00:00"),  # the order names her
        ("u1", {"product_id": "ten"}, "2022-10-01T12:00:00"),  # keyed by the account id
    )
    inputs.materialize("2022-10-01", assets=("loyalty/sales_totals", "customer/profile_360"))
    assert inputs.query("SELECT user_id, total FROM loyalty.sales_totals") == [("u1", 50)]
    assert inputs.query("SELECT user_id, name, email, purchase_count FROM customer.profile_360") == [
        ("u1", "Ann", "Ann@X.com ", 5)
    ]
    assert inputs.query("SELECT id_type, id_value, customer_id, rule FROM identity.id_graph ORDER BY ALL") == [
        ("card_id", "C1", "u1", "link_on:card_id"),
        ("customer_key", "C1", "u1", "key"),
        ("customer_key", "ann", "u1", "link_if_unique"),
        ("customer_key", "ann@x.com", "u1", "key"),
        ("customer_key", "guest-7", "u1", "key"),
        ("customer_key", "u1", "u1", "key"),
        ("email", "ann@x.com", "u1", "link_on:email"),
        ("name", "ann", "u1", "link_if_unique:name"),
        ("user_id", "u1", "u1", "account"),
    ]
    # the raw key stays beside the person
    assert inputs.query("SELECT DISTINCT customer_key FROM loyalty.enriched_purchases ORDER BY 1") == [
        ("C1",),
        ("ann",),
        ("ann@x.com",),
        ("guest-7",),
        ("u1",),
    ]


def test_a_name_two_accounts_carry_links_nothing_and_is_listed(inputs):
    priced(inputs, ten=10)
    users(
        inputs,
        ("u1", {"name": "Sam"}, "2022-10-01T07:00:00"),
        ("u2", {"name": "sam"}, "2022-10-01T07:30:00"),
        ("u3", {"name": "Kim"}, "2022-10-01T07:40:00"),
        ("u4", {"name": "SAM "}, "2022-10-02T07:00:00"),  # a third one, another day
    )
    buy_as(
        inputs,
        ("sam", {"product_id": "ten"}, "2022-10-01T08:00:00"),
        ("kim", {"product_id": "ten"}, "2022-10-01T09:00:00"),
        ("sam", {"product_id": "ten"}, "2022-10-02T08:00:00"),
    )
    result = inputs.materialize("2022-10-01", "2022-10-02", assets=("loyalty/sales_totals", "customer/profile_360"))
    assert inputs.query("SELECT user_id, total FROM loyalty.sales_totals ORDER BY 1") == [("sam", 20), ("u3", 10)]
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "ambiguous_weak_values")
    assert not check.passed and check.metadata["values"].value == [
        {"type": "name", "value": "sam", "accounts": ["u1", "u2", "u4"]}
    ]
    assert inputs.query("SELECT id_value, customer_id FROM identity.id_graph WHERE id_type = 'name' ORDER BY 1") == [
        ("kim", "u3")
    ]
    # the account-less purchaser keeps its own profile
    assert ("sam",) in inputs.query("SELECT user_id FROM customer.profile_360")


def test_weak_links_need_the_option_and_strong_ones_can_be_turned_off(inputs):
    priced(inputs, ten=10)
    users(inputs, ("u1", {"name": "Ann", "email": "a@x"}, "2022-10-01T07:00:00"))
    buy_as(
        inputs,
        ("ann", {"product_id": "ten"}, "2022-10-01T08:00:00"),
        ("a@x", {"product_id": "ten"}, "2022-10-01T09:00:00"),
    )
    inputs.rules("identity: {link_on: [user_id], link_if_unique: []}\n")
    inputs.materialize("2022-10-01", assets=("loyalty/sales_totals",))
    assert inputs.query("SELECT user_id FROM loyalty.sales_totals ORDER BY 1") == [("a@x",), ("ann",)]


def _merge_story(inputs: Inputs) -> None:
    """K1 (a till's card key, no account) buys on day 1; account u9 buys on day 2; on day 3 an order keyed K1
    carries u9's email: one person from day 3 on."""
    priced(inputs, ten=10, twenty=20)
    inputs.rules(JOURNEY)
    users(inputs, ("u9", {"name": "Zoe", "email": "z@x.com"}, "2022-10-01T07:00:00"))
    buy_as(
        inputs,
        ("K1", {"product_id": "ten"}, "2022-10-01T08:00:00"),
        ("u9", {"product_id": "twenty"}, "2022-10-02T08:00:00"),
        ("K1", {"product_id": "ten", "email": "z@x.com"}, "2022-10-03T08:00:00"),
    )


def test_a_late_link_merges_two_profiles_keeping_points_expiry_and_journey_dates(inputs):
    _merge_story(inputs)
    inputs.materialize("2022-10-01", "2022-10-02")
    before = inputs.query("SELECT customer_id, node, entered_at FROM journey.journey_state ORDER BY ALL")
    assert {row[0] for row in before} == {"K1", "u9"}
    inputs.materialize("2022-10-03")

    assert inputs.query("SELECT day::VARCHAR, merged_id, into_id, cause FROM identity.merges") == [
        ("2022-10-03", "K1", "u9", "linked by purchases:0:2")
    ]
    # the ledger moves K1's lot to u9 with its expiry: a merge pair, insert-only
    assert inputs.query(
        "SELECT txn_id, user_id, kind, points, expires_at::VARCHAR FROM points.point_transactions ORDER BY day, txn_id"
    ) == [
        ("earn:purchases:0:0", "K1", "earn", 10, "2023-10-02 00:00:00"),
        ("earn:purchases:0:1", "u9", "earn", 20, "2023-10-03 00:00:00"),
        ("earn:purchases:0:2", "u9", "earn", 10, "2023-10-04 00:00:00"),
        ("merge-out:earn:purchases:0:0", "K1", "merge", -10, None),
        ("merge:earn:purchases:0:0", "u9", "merge", 10, "2023-10-02 00:00:00"),
    ]
    assert inputs.query(
        "SELECT user_id, balance, next_expiry_at::VARCHAR, next_expiry_points FROM points.point_balances"
    ) == [("u9", 40, "2023-10-02 00:00:00", 10)]
    # one profile, all of both histories
    assert inputs.query(
        "SELECT user_id, name, total_spend, purchase_count, points_balance FROM customer.profile_360"
    ) == [("u9", "Zoe", 40, 3, 40)]
    assert inputs.query("SELECT user_id, total FROM loyalty.sales_totals") == [("u9", 40)]
    # journeys: u9 holds every node either reached, at the earlier date; entered once
    earliest = {}
    for _, node, entered in before:
        earliest[node] = min(entered, earliest.get(node, entered))
    after = inputs.query(
        "SELECT node, entered_at FROM journey.journey_state WHERE customer_id = 'u9' AND entered_at < '2022-10-03'"
    )
    assert dict(after) == earliest and len(after) == len(earliest)
    assert inputs.query(
        "SELECT count(*) FROM journey.journey_state WHERE customer_id = 'u9' AND node = 'stage:hello'"
    ) == [(1,)]
    # any identifier still finds the person
    assert inputs.query(
        "SELECT id_value, customer_id FROM identity.current_ids WHERE id_value IN ('K1', 'z@x.com', 'u9') ORDER BY 1"
    ) == [("K1", "u9"), ("u9", "u9"), ("z@x.com", "u9")]


@pytest.mark.e2e  # four runs
def test_the_graph_rebuilt_from_scratch_equals_the_one_built_day_by_day(inputs, tmp_path):
    _merge_story(inputs)
    for day in ("2022-10-01", "2022-10-02", "2022-10-03"):
        inputs.materialize(day)
    at_once = tmp_path / "at_once.duckdb"
    inputs.materialize("2022-10-01", "2022-10-03", LOYALTY_WAREHOUSE=str(at_once))
    tables = ["identity.id_graph", "identity.merges", "points.point_transactions", "journey.journey_state"]
    with duckdb.connect() as conn:
        conn.execute(f"ATTACH '{inputs.warehouse}' AS daily (READ_ONLY); ATTACH '{at_once}' AS once (READ_ONLY)")
        for table in tables:
            daily = conn.execute(f"SELECT * FROM daily.{table} ORDER BY ALL").fetchall()
            assert daily == conn.execute(f"SELECT * FROM once.{table} ORDER BY ALL").fetchall(), table
            assert daily


def test_the_lookup_finds_the_person_by_any_identifier(demo, capsys):
    import json

    from loyalty_pipeline.cli import main

    found = {}
    for identifier in ("kris", "u2001", " KRIS@example.com", "Kris K."):
        assert main(["profile", identifier, "--warehouse", str(demo.warehouse)]) == 0
        found[identifier] = json.loads(capsys.readouterr().out)["profile"]
    assert {(p["user_id"], p["name"], p["email"], p["total_spend"]) for p in found.values()} == {
        ("u2001", "kris", "kris@example.com", 74.28)
    }
    assert main(["profile", "nobody", "--warehouse", str(demo.warehouse)]) == 1


def test_an_email_keyed_in_capitals_resolves_to_the_account_from_every_source(inputs):
    priced(inputs, ten=10)
    users(inputs, ("u1", {"name": "Ann", "email": "some.one@mail.example"}, "2022-10-01T07:00:00"))
    users(inputs, ("Kim@Mail.Example", {"name": "Kim"}, "2022-10-01T07:00:00"), file="keyed_by_email.jsonl")
    inputs.csv("customers/export.csv", "user_id,name,email,signup_date\nu2,Bo,  BO@Mail.Example ,2020-01-01\n")
    buy_as(
        inputs,
        ("Some.One@Mail.Example", {"product_id": "ten"}, "2022-10-01T08:00:00"),
        ("bo@mail.example", {"product_id": "ten"}, "2022-10-01T09:00:00"),
        ("kim@mail.example", {"product_id": "ten"}, "2022-10-01T09:30:00"),
        ("u3", {"product_id": "ten", "email": "ZED@Mail.Example"}, "2022-10-01T09:40:00"),
        ("Zed@mail.example", {"product_id": "ten"}, "2022-10-01T09:50:00"),  # links to u3's profile
    )
    inputs.kafka(
        "user_activity", [("SOME.ONE@MAIL.EXAMPLE", {"event_type": "view", "product_id": "ten"}, "2022-10-01T10:00:00")]
    )
    inputs.kafka(
        "redemptions", [("some.one@MAIL.example", {"redemption_id": "r1", "points": 5}, "2022-10-01T11:00:00")]
    )
    inputs.kafka("returns", [("Some.ONE@mail.example", {"purchase_id": "purchases:0:0"}, "2022-10-01T12:00:00")])
    inputs.csv(
        "historical_purchases/2022-10-01.csv",
        "order_id,user_id,product_id,price,purchased_at\nh1,BO@MAIL.EXAMPLE,ten,10.00,2022-10-01T06:00:00Z\n",
    )
    inputs.materialize("2022-10-01", assets=("loyalty/sales_totals", "points/point_balances", "raw/user_activity"))
    assert inputs.query("SELECT customer_key, user_id FROM loyalty.enriched_purchases ORDER BY ALL") == [
        ("BO@MAIL.EXAMPLE", "u2"),
        ("Some.One@Mail.Example", "u1"),
        ("Zed@mail.example", "u3"),
        ("bo@mail.example", "u2"),
        ("kim@mail.example", "Kim@Mail.Example"),
        ("u3", "u3"),
    ]
    assert inputs.query("SELECT purchase_id FROM loyalty.returns") == [("purchases:0:0",)]  # hers, not a stranger's
    assert inputs.query("SELECT user_id, total FROM loyalty.sales_totals ORDER BY 1") == [
        ("Kim@Mail.Example", 10),
        ("u2", 20),
        ("u3", 20),
    ]
    # the click and the redemption land on u1 (the redemption is refused for lack of points, but is hers)
    assert inputs.query(
        "SELECT DISTINCT ids.customer_id FROM raw.user_activity AS a JOIN identity.current_ids AS ids "
        "ON ids.id_value = a.user_id UNION ALL SELECT DISTINCT ids.customer_id FROM raw.redemptions AS r "
        "JOIN identity.current_ids AS ids ON ids.id_value = r.user_id"
    ) == [("u1",), ("u1",)]
    # the raw key stays in the graph beside its lower-case form
    assert inputs.query(
        "SELECT id_type, id_value, customer_id FROM identity.id_graph WHERE id_value ILIKE 'some.one@%' ORDER BY ALL"
    ) == [
        ("customer_key", "SOME.ONE@MAIL.EXAMPLE", "u1"),
        ("customer_key", "Some.One@Mail.Example", "u1"),
        ("customer_key", "some.one@MAIL.example", "u1"),
        ("customer_key", "some.one@mail.example", "u1"),
        ("email", "some.one@mail.example", "u1"),
    ]
    assert inputs.query("SELECT count(*) FROM identity.merges") == [(0,)]


def test_placeholder_values_are_no_identifiers(inputs):
    priced(inputs, ten=10)
    inputs.rules("identity: {ignore_values: ['NoReply@Shop.Example']}\n")
    day = "2022-10-01T07:00:00"
    users(
        inputs,
        ("u1", {"name": "Ann", "email": "N/A", "phone": "0", "card_id": "C1"}, day),
        ("u2", {"name": "Bo", "email": "n/a", "phone": "null", "card_id": "null"}, day),
        ("u3", {"name": "Cy", "email": " - ", "phone": "000-000 00", "card_id": "Unknown"}, day),
        ("u4", {"name": "Di", "email": "noreply@shop.example ", "phone": "+00 0", "card_id": "N.A."}, day),
        ("u5", {"name": "Nil", "email": "none", "phone": "0", "card_id": "?"}, day),  # a name, though a word
    )
    buy_as(
        inputs,
        ("u1", {"product_id": "ten"}, "2022-10-01T08:00:00"),
        ("u2", {"product_id": "ten"}, "2022-10-01T08:00:00"),
        ("null", {"product_id": "ten", "card_id": "C1"}, "2022-10-01T09:00:00"),  # a placeholder key links nothing
    )
    inputs.materialize("2022-10-01", assets=("loyalty/sales_totals",))
    assert inputs.query("SELECT user_id, total FROM loyalty.sales_totals ORDER BY 1") == [
        ("null", 10),
        ("u1", 10),
        ("u2", 10),
    ]
    assert inputs.query(
        "SELECT id_type, id_value FROM identity.id_graph WHERE id_type IN ('email', 'phone', 'card_id')"
    ) == [("card_id", "C1")]
    assert inputs.query("SELECT id_value FROM identity.id_graph WHERE id_type = 'name' ORDER BY 1") == [
        ("ann",),
        ("bo",),
        ("cy",),
        ("di",),
        ("nil",),
    ]
    assert inputs.query("SELECT count(*) FROM identity.merges") == [(0,)]


def test_a_value_too_many_accounts_carry_links_nothing_and_is_listed(inputs):
    priced(inputs, ten=10)
    inputs.rules("identity: {max_accounts_per_value: 2}\n")
    users(
        inputs,
        ("u1", {"name": "A", "email": "desk@x", "card_id": "C1"}, "2022-10-01T07:00:00"),
        ("u2", {"name": "B", "email": "desk@x"}, "2022-10-01T07:10:00"),  # two accounts: one person
        ("u3", {"name": "C", "email": "desk@x"}, "2022-10-02T07:00:00"),  # a third: desk@x links nothing from now on
        ("u4", {"name": "D", "email": "desk@x"}, "2022-10-03T07:00:00"),
        ("u5", {"name": "E", "card_id": "C1"}, "2022-10-03T07:00:00"),  # would make u1's person three accounts
    )
    buy_as(
        inputs,
        ("k8", {"product_id": "ten"}, "2022-10-01T08:00:00"),
        ("desk@x", {"product_id": "ten"}, "2022-10-02T08:00:00"),  # keyed by it: the person it found before
        ("k8", {"product_id": "ten", "card_id": "C1"}, "2022-10-02T09:00:00"),  # joins u1 and adds no account
        ("k9", {"product_id": "ten", "email": "desk@x"}, "2022-10-03T08:00:00"),  # links nothing: k9 its own
    )
    result = inputs.materialize("2022-10-01", "2022-10-03", assets=("loyalty/sales_totals",))
    assert inputs.query("SELECT day::VARCHAR, merged_id, into_id FROM identity.merges ORDER BY ALL") == [
        ("2022-10-02", "k8", "u1")
    ]
    assert inputs.query(
        "SELECT id_value, customer_id FROM identity.current_ids WHERE id_value LIKE 'u%' ORDER BY 1"
    ) == [("u1", "u1"), ("u2", "u1"), ("u3", "u3"), ("u4", "u4"), ("u5", "u5")]
    assert inputs.query("SELECT user_id, total FROM loyalty.sales_totals ORDER BY 1") == [("k9", 10), ("u1", 30)]
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "crowded_values")
    assert not check.passed and check.metadata["values"].value == [
        {"value": "desk@x", "accounts": 3, "since": "2022-10-02"},
        {"value": "C1", "accounts": 3, "since": "2022-10-03"},
    ]


def test_three_thousand_accounts_sharing_one_email_stay_apart_quickly(inputs):
    import time

    priced(inputs, ten=10)
    users(
        inputs, *[(f"u{i}", {"name": f"N{i}", "email": "Same@X.example"}, "2022-10-01T07:00:00") for i in range(3000)]
    )
    buy_as(inputs, ("same@x.example", {"product_id": "ten"}, "2022-10-01T08:00:00"))
    started = time.monotonic()
    inputs.materialize("2022-10-01", assets=("identity/id_graph",))
    assert time.monotonic() - started < 30
    assert inputs.query("SELECT count(DISTINCT customer_id), count(*) FROM identity.current_ids") == [(3000, 3000)]
    assert inputs.query("SELECT * FROM identity.crowded_values") == [("same@x.example", 3000, date(2022, 10, 1))]
    assert inputs.query("SELECT count(*) FROM identity.merges") == [(0,)]


def test_a_customers_row_edited_in_place_is_applied_and_converges_to_a_batch_run(inputs, tmp_path):
    priced(inputs, ten=10)
    header = "user_id,name,email,signup_date\n"
    inputs.csv("customers/export.csv", header + "u1,Ann,old@x,2020-01-01\nu2,Bo,bo@x,2020-01-01\n")
    buy_as(
        inputs,
        ("old@x", {"product_id": "ten"}, "2022-10-01T08:00:00"),
        ("New@X", {"product_id": "ten"}, "2022-10-02T08:00:00"),
    )
    assets = ("loyalty/sales_totals", "customer/profile_360")
    inputs.materialize("2022-10-01", assets=assets)
    inputs.csv("customers/export.csv", header + "u1,Ann,new@x,2020-01-01\nu2,Bo,bo@x,2020-01-01\n")  # in place
    inputs.materialize("2022-10-02", assets=assets)
    assert inputs.query("SELECT customer_key, user_id FROM loyalty.enriched_purchases ORDER BY ALL") == [
        ("New@X", "u1"),
        ("old@x", "u1"),
    ]
    inputs.materialize("2022-10-01", "2022-10-02", assets=assets)  # what the sensor runs for a customers change
    at_once = tmp_path / "at_once.duckdb"
    inputs.materialize("2022-10-01", "2022-10-02", assets=assets, LOYALTY_WAREHOUSE=str(at_once))
    with duckdb.connect() as conn:
        conn.execute(f"ATTACH '{inputs.warehouse}' AS daily (READ_ONLY); ATTACH '{at_once}' AS once (READ_ONLY)")
        for schema, table in conn.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'once' "
            "AND schema_name IN ('identity', 'loyalty', 'customer')"
        ).fetchall():
            query = f"SELECT * FROM {{}}.{schema}.{table} ORDER BY ALL"
            assert conn.execute(query.format("daily")).fetchall() == conn.execute(query.format("once")).fetchall()


@pytest.mark.parametrize(
    "identity, message",
    [
        ("{max_accounts_per_value: 0}", "identity.max_accounts_per_value: Input should be greater than or equal to 1"),
        ("{max_accounts_per_value: true}", "identity.max_accounts_per_value: Input should be a valid integer"),
        ("{ignore_values: ['  ']}", "identity.ignore_values.0: String should have at least 1 character"),
        ("{ignore_values: [3]}", "identity.ignore_values.0: Input should be a valid string"),
    ],
)
def test_identity_settings_are_checked_at_load(tmp_path, identity, message):
    from loyalty_pipeline.domain.config import RulesError, load_rules

    path = tmp_path / "loyalty.yaml"
    path.write_text(f"identity: {identity}\n")
    with pytest.raises(RulesError, match=message):
        load_rules(path)
    path.write_text("identity: {ignore_values: [' NoReply@Shop ', noreply@shop]}\n")
    assert load_rules(path).identity.ignore_values == ["noreply@shop"]


@pytest.mark.e2e  # two engines, one a Spark session
def test_mixed_case_placeholder_and_crowded_identifiers_give_the_same_graph_on_spark(tmp_path):
    from dagster_pyspark.resources import spark_session_from_config

    from loyalty_pipeline.spark.spark import spark_config

    spark_session_from_config(spark_config("local[2]"))
    story = Inputs(tmp_path)
    priced(story, ten=10)
    story.rules("identity: {max_accounts_per_value: 2, ignore_values: [Till@Shop]}\n")
    users(
        story,
        ("u1", {"name": "Ann", "email": "Ann@X", "phone": "0", "card_id": "C1"}, "2022-10-01T07:00:00"),
        ("u2", {"name": "Bo", "email": "desk@x", "phone": "null", "card_id": "N/A"}, "2022-10-01T07:00:00"),
        ("u3", {"name": "Cy", "email": "DESK@x", "card_id": "n/a"}, "2022-10-01T08:00:00"),
        ("u4", {"name": "Di", "email": "desk@X", "card_id": "till@shop"}, "2022-10-02T08:00:00"),
        ("Eve@X", {"name": "Eve", "card_id": "C5"}, "2022-10-01T08:30:00"),
    )
    buy_as(
        story,
        ("ANN@x", {"product_id": "ten"}, "2022-10-01T09:00:00"),
        ("eve@x", {"product_id": "ten", "card_id": "C1"}, "2022-10-02T09:00:00"),
        ("-", {"product_id": "ten", "card_id": "C5"}, "2022-10-02T10:00:00"),
        ("Desk@X", {"product_id": "ten"}, "2022-10-03T09:00:00"),
    )
    runs = {}
    for engine in ("duckdb", "spark"):
        runs[engine] = Inputs(tmp_path)
        runs[engine].warehouse = tmp_path / f"{engine}.duckdb"
        runs[engine].materialize("2022-10-01", "2022-10-03", assets=("identity/id_graph",), LOYALTY_ENGINE=engine)
    assert bench_module("engines").differences(runs["duckdb"].warehouse, runs["spark"].warehouse) == {}
    assert runs["spark"].query("SELECT day::VARCHAR, merged_id, into_id FROM identity.merges") == [
        ("2022-10-02", "Eve@X", "u1")
    ]
    assert runs["spark"].query("SELECT id_value, accounts FROM identity.crowded_values") == [("desk@x", 3)]
    assert runs["spark"].query(
        "SELECT id_value, customer_id FROM identity.current_ids WHERE id_value ILIKE 'a%' ORDER BY 1"
    ) == [
        ("ANN@x", "u1"),
        ("ann@x", "u1"),
    ]
