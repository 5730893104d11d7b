"""The article's mock data (data/), loaded as Kafka snapshots, gives the article's result and hand-computed tables."""

import re
from decimal import Decimal as D

from loyalty_pipeline_tests.scenarios import SEED_DATA


def test_loose_leaf_is_kris_with_coffee(demo):
    # purchases are keyed by name, accounts by id: kris is account u2001 (the users topic names it kris)
    assert demo.query("SELECT user_id, products FROM loyalty.promotions WHERE promotion_name = 'loose_leaf'") == [
        ("u2001", ["coffee"])
    ]


def test_nobody_bought_both_dog_and_beret(demo):
    assert demo.query("SELECT * FROM loyalty.promotions WHERE promotion_name = 'french_poodle'") == []


def test_sales_totals_by_hand(demo):
    # kris: 6 coffees at 2.99 + 7 at 3.05 (the first in the same millisecond as the rise) + beret 34.99
    # yeva: beret 34.99 + cat 195 + 3 x 2.99 + 2 x 3.05 + handbag 126; rick: tea 2.55 + 2 x 3.05 + dog + cat;
    # mona returned her handbag (the demo's returns topic), so she has no net purchase
    assert demo.query("SELECT * FROM loyalty.sales_totals ORDER BY user_id") == [
        ("ana", D("19.99"), "CLIMBING"),  # S3 orders h-1 (tea, honey, scone) and h-4 (coffee, cake) at their own prices
        ("ben", D("9.05"), "CLIMBING"),  # h-2; h-5 is rejected (its purchased_at is not on its file's date)
        ("cleo", D("10.29"), "CLIMBING"),
        ("u2001", D("74.28"), "CLIMBING"),  # kris
        ("u2002", D("252.98"), "BRONZE"),  # dave
        ("u2003", D("371.06"), "SILVER"),  # yeva
        ("u2004", D("453.64"), "GOLD"),  # rick
    ]


def test_caffeine_index_by_hand(demo):
    assert demo.query("SELECT * FROM loyalty.caffeine_index ORDER BY user_id") == [
        ("ana", 1, 1, False),
        ("cleo", 1, 1, False),
        ("u2001", 13, 1, False),
        ("u2002", 1, 1, False),
        ("u2003", 5, 5, True),
        ("u2004", 2, 2, False),
    ]


def test_coffee_price_rise_applies_from_its_instant(demo):
    prices = demo.query(
        "SELECT price, count(*) FROM loyalty.enriched_purchases WHERE product_id = 'coffee' AND source = 'kafka' GROUP BY ALL ORDER BY ALL"
    )
    assert prices == [(D("2.99"), 10), (D("3.05"), 11)]
    assert demo.query("SELECT * FROM loyalty.all_products WHERE product_id = 'coffee'") == [
        ("coffee", "beverages", D("3.05"))
    ]


def test_redelivered_messages_count_once_and_corrupt_line_is_quarantined(demo):
    assert demo.query("SELECT count(*) FROM raw.purchases") == [(30,)]
    assert demo.query("SELECT source, location, reason FROM raw.rejected_records WHERE source LIKE 'kafka:%'") == [
        ("kafka:purchases", f"{SEED_DATA}/kafka/purchases/purchases-export-2.jsonl.gz:18", "not a JSON object")
    ]


def test_point_balances_by_hand(demo):
    # one point per whole unit of price: coffee 2 before the rise, 3 after; kris redeemed 30 of 67; rick's 500 and
    # yeva's 371 (above her 367) are refused; mona spent 100 of her handbag's 126, then returned it: the clawback
    # takes the 26 left and 100 become debt (her account was closed later with nothing left to expire)
    assert demo.query(
        "SELECT user_id, balance, next_expiry_at::VARCHAR, next_expiry_points FROM points.point_balances ORDER BY user_id"
    ) == [
        ("ana", 17, "2025-06-02 00:00:00", 11),
        ("ben", 8, "2025-06-02 00:00:00", 8),
        ("cleo", 8, "2025-06-03 00:00:00", 8),
        ("mona", -100, None, None),
        ("u2001", 37, "2025-06-03 00:00:00", 16),
        ("u2002", 251, "2025-06-03 00:00:00", 251),
        ("u2003", 367, "2025-06-02 00:00:00", 231),
        ("u2004", 452, "2025-06-02 00:00:00", 2),
    ]
    assert demo.query(
        "SELECT location, reason FROM raw.rejected_records WHERE source = 'points:redemptions' ORDER BY location"
    ) == [
        (f"{SEED_DATA}/kafka/redemptions/redemptions-2024-06-04.jsonl:2", "insufficient_points"),
        (f"{SEED_DATA}/kafka/redemptions/redemptions-2024-06-04.jsonl:3", "insufficient_points"),
    ]
    assert demo.query(
        "SELECT txn_id, occurred_at::VARCHAR, points FROM points.point_transactions WHERE kind <> 'earn' ORDER BY occurred_at"
    ) == [
        ("use:rd-0999", "2024-06-02 18:00:00", -100),
        ("clawback:purchases:1:0", "2024-06-03 09:00:00", -126),
        ("use:rd-1001", "2024-06-04 12:00:00", -30),
    ]
    assert demo.query(
        "SELECT user_id, balance, available, pending, debt FROM points.point_balances WHERE debt > 0 OR pending > 0"
    ) == [("mona", -100, 0, 0, 100)]
    assert demo.query(
        "SELECT txn_id, lot_txn_id, points FROM points.lot_allocations WHERE user_id = 'mona' ORDER BY ALL"
    ) == [("clawback:purchases:1:0", "earn:purchases:1:0", 26), ("use:rd-0999", "earn:purchases:1:0", 100)]


def test_s3_row_off_its_files_date_is_quarantined(demo):
    assert demo.query("SELECT location, reason FROM raw.rejected_records WHERE source LIKE 's3:%'") == [
        ("historical_purchases/2024-06-02.csv:7", "purchased_at is not on the file's date 2024-06-02")
    ]


def test_profiles_by_hand(demo):
    columns = "user_id, name, email, total_spend, purchase_count, days_since_last_purchase, reward_level, points_balance, products_purchased, activity_since_last_purchase, promotions"
    rows = {row[0]: row for row in demo.query(f"SELECT {columns} FROM customer.profile_360")}
    # purchases are keyed by name, users by u2001: one person each, by the account id (identity resolution)
    assert sorted(rows) == ["ana", "ben", "cleo", "mona", "u2001", "u2002", "u2003", "u2004"]
    # Kafka's name wins over the export's; the export fills the email Kafka does not have
    assert rows["u2001"] == (
        "u2001",
        "kris",
        "kris@example.com",
        D("74.28"),
        14,
        1,
        "CLIMBING",
        37,
        ["beret", "coffee"],
        ["scone", "tea"],
        ["loose_leaf"],
    )
    assert rows["ana"] == (
        "ana",
        "Ana",
        "ana@example.com",
        D("19.99"),
        5,
        3,
        "CLIMBING",
        17,
        ["cake", "coffee", "honey", "scone", "tea"],
        ["honey"],
        [],
    )
    assert rows["cleo"][1:3] == ("Cleo", None)
    assert rows["u2002"][1:3] == ("dave", "dave@example.com")
    assert demo.query("SELECT account_closed FROM customer.profile_360 WHERE user_id = 'mona'") == [(True,)]
    assert "eli" not in rows  # clicks alone do not make a known customer


def test_recommendations_by_hand(demo):
    # kris looked at scone and tea: others' orders with either are h-1 (tea, honey, scone), h-2 (tea, honey),
    # h-3 (coffee, tea, cake) and rick's tea; honey is in two of them, cake and coffee in one
    assert demo.query(
        "SELECT user_id, product_id, score, rank FROM customer.recommendations ORDER BY user_id, rank"
    ) == [
        ("ana", "tea", 1, 1),
        ("u2001", "honey", 2, 1),
        ("u2001", "cake", 1, 2),
        ("u2001", "coffee", 1, 3),
        ("u2002", "coffee", 2, 1),
        ("u2002", "tea", 1, 2),
        ("u2003", "tea", 2, 1),
        ("u2003", "scone", 1, 2),
    ]


def test_demo_journeys_by_hand(demo):
    # tea_trial: coffee buyers without tea (kris, yeva from day 1, dave from day 2) get the coupon, wait 3 days,
    # and move on to the reward the day their spend is above 50; spend_your_points: rick turns GOLD on day 4,
    # yeva SILVER on day 5, and a day after the thank-you mail comes the reminder
    assert demo.query(
        "SELECT journey_id, customer_id, activation, activated_on::VARCHAR FROM journey.activations "
        "WHERE journey_id <> 'coffee_offer' ORDER BY ALL"
    ) == [
        ("spend_your_points", "u2003", "thank_you_mail", "2024-06-05"),
        ("spend_your_points", "u2004", "points_reminder", "2024-06-05"),
        ("spend_your_points", "u2004", "thank_you_mail", "2024-06-04"),
        ("tea_trial", "u2001", "double_points", "2024-06-04"),
        ("tea_trial", "u2001", "tea_coupon", "2024-06-01"),
        ("tea_trial", "u2002", "double_points", "2024-06-05"),
        ("tea_trial", "u2002", "tea_coupon", "2024-06-02"),
        ("tea_trial", "u2003", "double_points", "2024-06-04"),
        ("tea_trial", "u2003", "tea_coupon", "2024-06-01"),
    ]
    assert demo.query(
        "SELECT journey_id, node, count(*) FROM journey.journey_state WHERE node IN ('end', 'goal') GROUP BY ALL ORDER BY ALL"
    ) == [
        ("coffee_offer", "goal", 1),
        ("spend_your_points", "end", 1),
        ("tea_trial", "end", 3),
    ]


def test_demo_offer_decides_by_spend_and_tests_by_hash(demo):
    """coffee_offer: customers with one or two purchases (three is its goal) enter the day of their first; the
    decision sends 100 or more spent to big_spender, the rest to else; the A/B arm is md5(journey|step|person|salt)'s
    first 4 hex digits against 40/40/20 of 65536. u2004's third purchase on day 4 is the goal; the rest wait."""
    import hashlib

    def arm(person: str) -> str:
        bucket = int(hashlib.md5(f"coffee_offer|stage:offer:step:2|{person}|june".encode()).hexdigest()[:4], 16)
        return "coupon" if bucket < 26214 else "points" if bucket < 52428 else "control"

    entered = {"ben": ("2024-06-01", "else"), "mona": ("2024-06-02", "big_spender"),
               "u2002": ("2024-06-02", "big_spender"), "u2004": ("2024-06-01", "else")}  # fmt: skip
    branch_activation = {"else": "starter_offer", "big_spender": "premium_offer"}
    arm_activation = {"coupon": "coupon_10", "points": "bonus_points", "control": None}
    assert demo.query(
        "SELECT customer_id, activation, activated_on::VARCHAR FROM journey.activations "
        "WHERE journey_id = 'coffee_offer' ORDER BY ALL"
    ) == sorted(
        (person, activation, day)
        for person, (day, branch) in entered.items()
        for activation in (branch_activation[branch], arm_activation[arm(person)])
        if activation
    )
    assert demo.query(
        "SELECT customer_id, node FROM journey.journey_state WHERE journey_id = 'coffee_offer' AND node LIKE '%variant:%' "
        "AND node NOT LIKE '%:step:_' ORDER BY ALL"
    ) == [(person, f"stage:offer:step:2:variant:{arm(person)}") for person in sorted(entered)]
    report = demo.query(
        "SELECT step, arm, entered, reached_goal FROM journey.goal_report WHERE journey_id = 'coffee_offer' ORDER BY ALL"
    )
    assert report[0] == ("", "entered", 4, 1)


def test_every_column_of_every_table_is_described_in_the_catalog(demo):
    from loyalty_pipeline.defs.columns import DESCRIPTIONS

    columns = {name for (name,) in demo.query("SELECT DISTINCT column_name FROM duckdb_columns() WHERE NOT internal")}
    assert columns - set(DESCRIPTIONS) == set()
    # the UI renders descriptions as Markdown, where a bare <placeholder> is an HTML tag and disappears
    outside_code = [re.sub(r"`[^`]*`", "", text) for text in DESCRIPTIONS.values()]
    assert [text for text in outside_code if re.search(r"<\w", text)] == []


def test_previews_read_like_the_table_nulls_blank_and_lists_with_commas():
    import duckdb

    from loyalty_pipeline.defs.metadata import bar_table, preview

    conn = duckdb.connect()
    table = preview(
        conn, "SELECT 'kris' AS user_id, ['honey', 'cake'] AS products, NULL::TIMESTAMP AS last_at, 'a|b' AS raw"
    ).value
    assert table.splitlines() == [
        "| user_id | products | last_at | raw |",
        "| --- | --- | --- | --- |",
        "| kris | honey, cake |  | a\\|b |",
    ]
    assert bar_table(("kind", "points"), [("earn", 40), ("use", -30), ("none", 0)], width=4).splitlines()[2:] == [
        "| earn | 40 | ████ |",
        "| use | -30 | −░░░ |",
        "| none | 0 |  |",
    ]
