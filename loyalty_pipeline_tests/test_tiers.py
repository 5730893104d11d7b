"""Tier periods and downgrades (tiers.sql) on an in-memory DuckDB: each period kind at its boundaries, upgrades,
downgrades, grace, returns; then through Dagster: multipliers in the ledger, the tier tables and a late purchase."""

import random
from datetime import datetime, timedelta
from decimal import Decimal
from decimal import Decimal as D

import duckdb
import pytest
from starlette.testclient import TestClient

from loyalty_pipeline.defs.resources import RulesResource, Warehouse
from loyalty_pipeline.defs.tiers import one_tier_at_a_time, sampled_member_replays, status_follows_history
from loyalty_pipeline.domain.config import Rules, load_rules
from loyalty_pipeline.domain.loyalty import tier_reference, tiers
from loyalty_pipeline.serve.app import create_app
from loyalty_pipeline.serve.serving import serving_path
from loyalty_pipeline_tests.scenarios import POINTS, buy, priced, refused

LEVELS = [{"name": "GOLD", "above": 300, "earn_multiplier": 2}, {"name": "SILVER", "above": 100}]


def run(purchases: list[tuple], as_of: str, levels: list = LEVELS, **policy) -> tuple[list, list]:
    """(history rows (user, tier, from, reason, value), status rows) of `purchases` (user, price, at[, returned_at])
    under `tiers: {levels: levels, **policy}` at `as_of`."""
    rules = Rules.model_validate({"tiers": {"levels": levels, **policy}})
    conn = duckdb.connect()
    conn.execute(
        """CREATE SCHEMA loyalty; CREATE SCHEMA identity;
           CREATE TABLE identity.current_ids (id_value VARCHAR, customer_id VARCHAR);
           CREATE TABLE loyalty.enriched_purchases (purchase_id VARCHAR, order_id VARCHAR, user_id VARCHAR,
               product_id VARCHAR, category VARCHAR, price DECIMAL(18,2), purchased_at TIMESTAMP, source VARCHAR,
               store_id VARCHAR, day DATE, customer_key VARCHAR, returned_at TIMESTAMP)"""
    )
    for i, (user, price, at, *returned) in enumerate(purchases):
        conn.execute(
            "INSERT INTO loyalty.enriched_purchases VALUES ($1, $1, $2, 'x', 'c', $3, $4, 'kafka', NULL, "
            "CAST($4 AS DATE), $2, $5)",
            [f"p{i}", user, D(str(price)), at, returned[0] if returned else None],
        )
    values = tiers.fold(conn, rules, datetime.fromisoformat(as_of))
    history = conn.execute(
        f"SELECT user_id, tier, strftime(valid_from, '%Y-%m-%d %H:%M:%S'), reason, qualifying_value "
        f"FROM ({tiers.HISTORY}) ORDER BY user_id, valid_from"
    ).fetchall()
    status = conn.execute(
        f"SELECT user_id, tier, strftime(tier_expires_at, '%Y-%m-%d'), period_value, to_next_tier, to_keep_tier "
        f"FROM ({tiers.STATUS}) ORDER BY user_id",
        {key: values[key] for key in ("as_of", "unit", "months", "days")},
    ).fetchall()
    return history, status


MONTHLY = {"period": "calendar", "every": "month"}


def test_calendar_month_last_second_counts_in_its_month_and_midnight_in_the_next():
    history, status = run(
        [
            ("ann", 150, "2024-01-10 10:00:00"),
            ("ann", 200, "2024-01-31 23:59:59.999"),  # January: 350, GOLD
            ("ann", 120, "2024-02-01 00:00:00"),  # February's: SILVER kept, GOLD lost at its end
        ],
        "2024-03-15",
        **MONTHLY,
    )
    assert history == [
        ("ann", "SILVER", "2024-01-10 10:00:00", "upgrade", D("150.00")),
        ("ann", "GOLD", "2024-01-31 23:59:59", "upgrade", D("350.00")),
        ("ann", "SILVER", "2024-03-01 00:00:00", "period_end", D("120.00")),
    ]
    # March so far: nothing; SILVER is evaluated on 1 April and needs more than 100
    assert status == [("ann", "SILVER", "2024-04-01", D("0.00"), D("300.01"), D("100.01"))]


def test_a_threshold_hit_exactly_does_not_qualify():
    history, status = run([("bob", 100, "2024-01-10 10:00:00")], "2024-01-20", **MONTHLY)
    assert history == []
    assert status == [("bob", "CLIMBING", "2024-02-01", D("100.00"), D("0.01"), None)]


@pytest.mark.parametrize(
    "downgrade, expected",
    [
        (
            "one_down",
            [("SILVER", "2024-03-01 00:00:00", "period_end"), ("CLIMBING", "2024-04-01 00:00:00", "period_end")],
        ),
        ("to_qualified", [("CLIMBING", "2024-03-01 00:00:00", "period_end")]),
    ],
)
def test_one_down_drops_a_tier_per_period_to_qualified_to_what_the_period_earned(downgrade, expected):
    history, _ = run([("cy", 400, "2024-01-05 09:00:00")], "2024-05-01", **MONTHLY, downgrade=downgrade)
    assert [(tier, at, reason) for _, tier, at, reason, _ in history[1:]] == expected
    assert history[0][1:4] == ("GOLD", "2024-01-05 09:00:00", "upgrade")


def test_grace_delays_the_downgrade_and_a_purchase_in_grace_keeps_the_tier():
    history, status = run(
        [
            ("dee", 400, "2024-01-05 09:00:00"),  # GOLD; February empty: would fall on 1 March
            ("eve", 400, "2024-01-05 09:00:00"),
            ("eve", 301, "2024-03-05 23:59:59"),  # within March's grace: qualifies for GOLD again
        ],
        "2024-03-20",
        **MONTHLY,
        grace_days=5,
    )
    assert history == [
        ("dee", "GOLD", "2024-01-05 09:00:00", "upgrade", D("400.00")),
        ("dee", "CLIMBING", "2024-03-06 00:00:00", "grace_end", D("0.00")),
        ("eve", "GOLD", "2024-01-05 09:00:00", "upgrade", D("400.00")),
    ]
    assert [row[:3] for row in status] == [("dee", "CLIMBING", "2024-04-01"), ("eve", "GOLD", "2024-04-01")]


def test_a_return_moves_the_tier_down_on_its_day_only_when_asked():
    bought = [("fay", 350, "2024-01-05 09:00:00", "2024-01-07 12:00:00"), ("fay", 150, "2024-01-06 09:00:00")]
    history, _ = run(bought, "2024-01-20", **MONTHLY, downgrade_on_return=True)
    assert history == [
        ("fay", "GOLD", "2024-01-05 09:00:00", "upgrade", D("350.00")),
        ("fay", "SILVER", "2024-01-07 12:00:00", "return", D("150.00")),
    ]
    history, _ = run(bought, "2024-02-20", **MONTHLY)  # kept until the period's end, which the return counts in
    assert [row[1:4] for row in history] == [
        ("GOLD", "2024-01-05 09:00:00", "upgrade"),
        ("SILVER", "2024-02-01 00:00:00", "period_end"),
    ]


def test_a_return_of_last_periods_purchase_changes_nothing_evaluated():
    history, _ = run(
        [("gus", 350, "2024-01-31 12:00:00", "2024-02-02 00:00:00"), ("gus", 350, "2024-02-01 12:00:00")],
        "2024-03-10",
        **MONTHLY,
        downgrade_on_return=True,
    )
    assert [row[1:4] for row in history] == [("GOLD", "2024-01-31 12:00:00", "upgrade")]


def test_anniversary_of_a_leap_day_is_28_february_then_29_february_again():
    history, status = run(
        [("hal", 400, "2024-02-29 10:00:00"), ("hal", 301, "2025-01-01 10:00:00"), ("hal", 301, "2027-06-01 10:00:00")],
        "2028-03-01",
        period="anniversary",
        downgrade="one_down",
    )
    assert [row[1:4] for row in history] == [
        ("GOLD", "2024-02-29 10:00:00", "upgrade"),
        ("SILVER", "2026-02-28 00:00:00", "period_end"),  # year 2 (from 2025-02-28) had nothing
        ("CLIMBING", "2027-02-28 00:00:00", "period_end"),  # nor year 3: one tier a period
        ("GOLD", "2027-06-01 10:00:00", "upgrade"),
    ]
    assert status[0][:3] == ("hal", "GOLD", "2029-02-28")  # 2028-02-29 was evaluated: 2027's year kept it


def test_rolling_periods_of_n_days_from_the_first_purchase_day():
    history, status = run(
        [("ida", 150, "2024-01-10 18:00:00"), ("ida", 50, "2024-02-08 23:59:59")],  # day 0 and day 29: one period
        "2024-03-15",
        period="rolling",
        days=30,
    )
    assert [row[1:5] for row in history] == [
        ("SILVER", "2024-01-10 18:00:00", "upgrade", D("150.00")),
        ("CLIMBING", "2024-03-10 00:00:00", "period_end", D("0.00")),  # 9 Feb - 10 Mar: nothing
    ]
    assert status[0][:3] == ("ida", "CLIMBING", "2024-04-09")


def test_purchase_count_and_points_earned_qualify():
    levels = [{"name": "GOLD", "above": 2}, {"name": "SILVER", "above": 1}]
    bought = [("jo", price, f"2024-01-0{day} 10:00:00") for day, price in ((1, 1.99), (2, 0.5), (3, 2.5))]
    history, _ = run(bought, "2024-01-20", levels=levels, qualify_on="purchase_count")
    assert [row[1:5] for row in history] == [
        ("SILVER", "2024-01-02 10:00:00", "upgrade", D(2)),
        ("GOLD", "2024-01-03 10:00:00", "upgrade", D(3)),
    ]
    history, _ = run(bought, "2024-01-20", levels=levels, qualify_on="points_earned")  # 1, 0 and 2 points
    assert [row[1:5] for row in history] == [("GOLD", "2024-01-03 10:00:00", "upgrade", D(3))]


def test_lifetime_list_form_is_todays_rule():
    rules = load_rules(None)
    assert rules.tier_policy.period == "lifetime" and rules.tier_policy.downgrade_on_return


@pytest.mark.parametrize(
    "policy, message",
    [
        ("{period: calendar}", "tiers.every"),
        ("{period: rolling}", "tiers.days"),
        ("{period: calendar, every: month, grace_days: 28}", "grace_days 28 must be shorter"),
        ("{period: weekly}", "period"),
        ("{levels: [{name: A, above: 1, earn_multiplier: -1}]}", "earn_multiplier"),
    ],
)
def test_bad_tier_policies_are_refused_naming_the_key(tmp_path, policy, message):
    assert message in refused(tmp_path, f"tiers: {policy}\n")


PROGRAM = """
tiers:
  levels: [{name: GOLD, above: 300, earn_multiplier: 2}, {name: SILVER, above: 100, earn_multiplier: 1.5}]
  period: calendar
  every: month
"""


def test_the_tier_held_before_a_purchase_multiplies_its_points(inputs):
    inputs.rules(PROGRAM)
    priced(inputs, big=301, small=10)
    buy(
        inputs,
        ("u", "big", "2022-10-01T10:00:00"),  # crosses into GOLD: earns at CLIMBING's 1x
        ("u", "small", "2022-10-01T10:00:00"),  # the same instant: still before the change
        ("u", "small", "2022-10-01T10:00:01"),  # after it: 2x
        ("u", "small", "2022-11-01T00:00:00"),  # November: October's 321 kept GOLD
    )
    inputs.materialize("2022-10-01", "2022-11-01", assets=(*POINTS, "loyalty/sales_totals"))
    assert inputs.query("SELECT source_ref, points FROM points.point_transactions ORDER BY occurred_at, txn_id") == [
        ("purchases:0:0", 301),
        ("purchases:0:1", 10),
        ("purchases:0:2", 20),
        ("purchases:0:3", 20),
    ]
    assert inputs.query("SELECT tier, reason, qualifying_value FROM loyalty.tier_history") == [
        ("GOLD", "upgrade", D("301.00"))
    ]
    assert inputs.query("SELECT reward_level FROM loyalty.sales_totals") == [("GOLD",)]
    assert inputs.query(
        "SELECT tier, tier_expires_at::VARCHAR, period_value, to_keep_tier FROM loyalty.tier_status"
    ) == [("GOLD", "2022-12-01 00:00:00", D("10.00"), D("290.01"))]


def test_a_late_purchase_changes_last_periods_tier_and_the_change_is_kept(inputs):
    inputs.rules(PROGRAM)
    priced(inputs, big=250, small=60)
    buy(inputs, ("u", "big", "2022-10-05T10:00:00"))
    inputs.materialize("2022-10-01", "2022-11-02", assets=("loyalty/tier_status",))
    assert inputs.query("SELECT tier, valid_from::VARCHAR, reason FROM loyalty.tier_history") == [
        ("SILVER", "2022-10-05 10:00:00", "upgrade")
    ]
    buy(inputs, ("u", "small", "2022-10-31T23:00:00"), file="late.jsonl")  # October: 310, GOLD; November empty
    inputs.materialize("2022-10-31", assets=("loyalty/tier_status",))
    history = "SELECT tier, valid_from::VARCHAR, reason FROM loyalty.tier_history ORDER BY valid_from"
    assert inputs.query(history) == [
        ("SILVER", "2022-10-05 10:00:00", "upgrade"),
        ("GOLD", "2022-10-31 23:00:00", "upgrade"),
    ]
    assert inputs.query("SELECT change, tier, valid_from::VARCHAR FROM loyalty.tier_revisions") == [
        ("added", "GOLD", "2022-10-31 23:00:00")
    ]
    inputs.materialize(
        "2022-11-03", "2022-12-01", assets=("loyalty/tier_status",)
    )  # November's end passes: no spend, no tier
    assert inputs.query(history)[-1] == ("CLIMBING", "2022-12-01 00:00:00", "period_end")
    assert inputs.query("SELECT tier, tier_expires_at::VARCHAR FROM loyalty.tier_status") == [
        ("CLIMBING", "2023-01-01 00:00:00")
    ]


def test_journeys_read_the_tier_held_and_the_days_to_its_evaluation(inputs):
    inputs.rules(
        PROGRAM
        + """journeys:
  - id: keep_gold
    audience: "reward_level = 'GOLD' AND tier_expires_in_days <= 26"
    stages: [{id: remind, steps: [{activation: keep_gold_mail}]}]
"""
    )
    priced(inputs, big=301)
    buy(inputs, ("u", "big", "2022-10-05T10:00:00"))  # GOLD, evaluated on 1 November: 27 days after 5 October
    inputs.materialize("2022-10-01", "2022-10-07", assets=("journey/activations",))
    assert inputs.query("SELECT activated_on::VARCHAR, customer_id, activation FROM journey.activations") == [
        ("2022-10-06", "u", "keep_gold_mail")
    ]


POLICIES = [
    {"downgrade_on_return": True},  # the list form's rule
    {},
    {"period": "calendar", "every": "month", "downgrade": "one_down", "grace_days": 10},
    {"period": "calendar", "every": "quarter", "downgrade_on_return": True},
    {"period": "calendar", "every": "year", "qualify_on": "points_earned", "grace_days": 30},
    {"period": "anniversary", "downgrade": "one_down", "downgrade_on_return": True},
    {"period": "rolling", "days": 45, "qualify_on": "purchase_count", "grace_days": 7},
]


@pytest.mark.parametrize("seed", range(14))
def test_the_sql_fold_agrees_with_the_plain_replay_on_random_histories(seed):
    rng = random.Random(seed)
    policy = POLICIES[seed % len(POLICIES)]
    levels = [{"name": "GOLD", "above": 300}, {"name": "SILVER", "above": 100}, {"name": "BRONZE", "above": 5}]
    start = datetime(2023, 12, 1)
    bought = []
    for user in ("a", "b", "c"):
        for _ in range(rng.randint(0, 25)):
            at = start + timedelta(days=rng.randint(0, 500), seconds=rng.choice([0, 1, 43_200, 86_399]))
            returned = at + timedelta(days=rng.randint(0, 40)) if rng.random() < 0.2 else None
            bought.append((user, rng.choice([0, 5, 19.99, 60, 100, 150.01, 250]), at.isoformat(" "), returned))
    as_of = "2025-06-01"
    history, _ = run([row if row[3] else row[:3] for row in bought], as_of, levels=levels, **policy)
    rules = Rules.model_validate({"tiers": {"levels": levels, **policy}})
    expected = []
    for user in ("a", "b", "c"):
        mine = [
            (f"p{i}", datetime.fromisoformat(at), Decimal(str(price)), returned)
            for i, (who, price, at, returned) in enumerate(bought)
            if who == user
        ]
        expected += [
            (user, tier, at.strftime("%Y-%m-%d %H:%M:%S"), reason, value)
            for tier, at, reason, value in tier_reference.replay(rules, mine, datetime.fromisoformat(as_of))
        ]
    assert history == sorted(expected, key=lambda row: (row[0], row[2]))


def test_the_card_shows_when_the_tier_is_evaluated_and_what_keeps_it(inputs):
    inputs.rules(PROGRAM)
    priced(inputs, big=301)
    buy(inputs, ("u", "big", "2022-10-05T10:00:00"))  # GOLD, kept on 1 November by October's 301
    inputs.materialize("2022-10-01", "2022-11-01")
    client = TestClient(create_app(serving_path(str(inputs.warehouse))))
    card = client.get("/api/customers/u").json()
    assert card["tier"]["level"] == "GOLD" and card["tier"]["next"] is None
    assert card["tier_period"] == {"expires_at": "2022-12-01 00:00:00", "period_value": 0.0, "to_keep": 300.01}
    assert (
        "evaluated 2022-12-01 00:00:00 UTC: 300.01 more this period keeps GOLD"
        in client.get("/", params={"id": "u"}).text
    )


def test_the_tier_checks_fail_when_the_history_is_broken(inputs):
    rules_path = inputs.rules(PROGRAM)
    priced(inputs, big=150, more=200)
    buy(inputs, ("u", "big", "2022-10-05T10:00:00"), ("u", "more", "2022-10-06T10:00:00"))  # SILVER, then GOLD
    inputs.materialize("2022-10-01", "2022-10-07", assets=("loyalty/tier_status",))
    warehouse, rules = Warehouse(database=str(inputs.warehouse)), RulesResource(path=str(rules_path))
    checks = (one_tier_at_a_time, status_follows_history, sampled_member_replays)
    assert [check(warehouse, rules).passed for check in checks] == [True, True, True]
    with duckdb.connect(str(inputs.warehouse)) as conn:
        conn.execute("UPDATE loyalty.tier_history SET valid_until = NULL WHERE tier = 'SILVER'")  # two current
    assert [check(warehouse, rules).passed for check in checks] == [False, False, True]
    with duckdb.connect(str(inputs.warehouse)) as conn:
        conn.execute("UPDATE loyalty.tier_history SET tier = 'SILVER', valid_until = valid_from")  # not what happened
        conn.execute("UPDATE loyalty.tier_history SET valid_until = NULL WHERE valid_from > '2022-10-06'")
    assert [check(warehouse, rules).passed for check in checks] == [False, False, False]


def test_journeys_read_what_the_next_tier_takes_in_the_current_period(inputs):
    inputs.rules(
        PROGRAM
        + """journeys:
  - id: almost_gold
    audience: "reward_level = 'SILVER' AND to_next_tier <= 50"
    stages: [{id: nudge, steps: [{activation: almost_gold_mail}]}]
"""
    )
    inputs.kafka(
        "products",
        [(p, {"category": "c", "price": n}, "2022-09-30T00:00:00") for p, n in (("mid", 200), ("small", 60))],
    )
    # SILVER on 30 September with 260 (40.01 to GOLD) but September ends: October starts from nothing (300.01 to go)
    buy(inputs, ("u", "mid", "2022-09-30T10:00:00"), ("u", "small", "2022-09-30T11:00:00"))
    buy(inputs, ("v", "mid", "2022-10-02T10:00:00"), ("v", "small", "2022-10-03T10:00:00"), file="v.jsonl")  # 260
    inputs.materialize("2022-09-30", "2022-10-04", assets=("journey/activations",))
    assert inputs.query("SELECT activated_on::VARCHAR, customer_id FROM journey.activations ORDER BY ALL") == [
        ("2022-09-30", "u"),
        ("2022-10-03", "v"),
    ]


def test_without_levels_everyone_holds_the_default_tier():
    history, status = run([("ann", 500, "2024-01-10 10:00:00")], "2024-02-15", levels=[], **MONTHLY)
    assert history == [] and status == [("ann", "CLIMBING", "2024-03-01", D("0.00"), None, None)]
    history, status = run([("ann", 500, "2024-01-10 10:00:00")], "2024-02-15", levels=[])
    assert history == [] and status == [("ann", "CLIMBING", None, D("500.00"), None, None)]
