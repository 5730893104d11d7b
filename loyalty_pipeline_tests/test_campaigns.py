"""Earning campaigns in the ledger: when they apply, caps cut exactly, stacking both ways, awards clawed back with
their purchase. 2022-10-01 is a Saturday."""

import duckdb
import pytest

from loyalty_pipeline.defs.points_checks import campaign_caps_hold, returned_awards_clawed_back
from loyalty_pipeline.defs.resources import RulesResource, Warehouse
from loyalty_pipeline_tests.scenarios import POINTS, buy, give_back, priced, refused

BONUSES = "SELECT txn_id, points, source_ref FROM points.point_transactions WHERE txn_id LIKE 'bonus:%' ORDER BY occurred_at, txn_id"


def test_a_weekend_campaign_pays_on_its_days_and_hours_up_to_its_daily_cap_exactly(inputs):
    inputs.rules(
        """campaigns:
  - {id: weekend, award: {multiplier: 2}, when: {days: [sat, sun], hours: [10, 18]}, cap: {points: 25, per: day}}
"""
    )
    priced(inputs, ten=10)
    buy(
        inputs,
        ("u", "ten", "2022-10-01T09:59:59"),  # before 10:00
        ("u", "ten", "2022-10-01T10:00:00"),  # 10
        ("u", "ten", "2022-10-01T12:00:00"),  # 10: 20 so far
        ("u", "ten", "2022-10-01T17:59:59"),  # cut to the 5 left
        ("u", "ten", "2022-10-01T17:59:59.500"),  # 0: writes nothing
        ("u", "ten", "2022-10-01T18:00:00"),  # after the hours
        ("u", "ten", "2022-10-02T11:00:00"),  # Sunday: a new day's cap
        ("u", "ten", "2022-10-03T11:00:00"),  # Monday
    )
    inputs.materialize("2022-10-01", "2022-10-03", assets=POINTS)
    assert inputs.query(BONUSES) == [
        ("bonus:weekend:purchases:0:1", 10, "purchases:0:1"),
        ("bonus:weekend:purchases:0:2", 10, "purchases:0:2"),
        ("bonus:weekend:purchases:0:3", 5, "purchases:0:3"),
        ("bonus:weekend:purchases:0:6", 10, "purchases:0:6"),
    ]
    assert inputs.query("SELECT balance FROM points.point_balances") == [(80 + 35,)]


def test_a_campaign_cap_counts_earlier_days(inputs):
    inputs.rules("campaigns: [{id: welcome, award: {bonus_points: 30}, cap: {points: 50}}]\n")
    priced(inputs, one=1)
    buy(
        inputs,
        ("u", "one", "2022-10-01T10:00:00"),
        ("u", "one", "2022-10-02T10:00:00"),
        ("u", "one", "2022-10-03T10:00:00"),
    )
    inputs.materialize("2022-10-01", "2022-10-03", assets=POINTS)
    assert [points for _, points, _ in inputs.query(BONUSES)] == [30, 20]


@pytest.mark.parametrize("stacking, expected", [("sum", [("a", 10), ("b", 50)]), ("highest", [("b", 50)])])
def test_two_campaigns_stack_by_sum_or_pay_the_highest(inputs, stacking, expected):
    inputs.rules(
        f"""campaigns:
  - {{id: a, award: {{multiplier: 2}}, stacking: {stacking}}}
  - {{id: b, award: {{bonus_points: 50}}, stacking: {stacking}, applies_to: {{products: [ten]}}}}
"""
    )
    priced(inputs, ten=10)
    buy(inputs, ("u", "ten", "2022-10-01T10:00:00"))
    inputs.materialize("2022-10-01", assets=POINTS)
    assert [(txn.split(":")[1], points) for txn, points, _ in inputs.query(BONUSES)] == expected


def test_an_award_is_clawed_back_with_its_purchase(inputs):
    inputs.rules("campaigns: [{id: double, award: {multiplier: 2}, applies_to: {categories: [c]}}]\n")
    priced(inputs, ten=10)
    buy(inputs, ("u", "ten", "2022-10-01T10:00:00"), ("u", "ten", "2022-10-01T11:00:00"))
    give_back(inputs, ("u", {"purchase_id": "purchases:0:0"}, "2022-10-02T09:00:00"))
    inputs.materialize("2022-10-01", "2022-10-02", assets=POINTS)
    assert inputs.query(
        "SELECT txn_id, points, source_ref FROM points.point_transactions WHERE kind = 'clawback' ORDER BY txn_id"
    ) == [
        ("clawback:bonus:double:purchases:0:0", -10, "purchases:0:0"),
        ("clawback:purchases:0:0", -10, "purchases:0:0"),
    ]
    assert inputs.query("SELECT balance FROM points.point_balances") == [(20,)]


def test_a_campaign_for_a_tier_pays_its_holders_only(inputs):
    inputs.rules(
        """tiers: [{name: GOLD, above: 100}]
campaigns: [{id: gold_bonus, award: {bonus_points: 7}, applies_to: {tiers: [GOLD]}}]
"""
    )
    priced(inputs, big=101, one=1)
    buy(
        inputs,
        ("u", "big", "2022-10-01T10:00:00"),
        ("u", "one", "2022-10-01T10:00:01"),
        ("v", "one", "2022-10-01T10:00:02"),
    )
    inputs.materialize("2022-10-01", assets=POINTS)
    assert inputs.query(BONUSES) == [("bonus:gold_bonus:purchases:0:1", 7, "purchases:0:1")]


@pytest.mark.parametrize(
    "campaign, message",
    [
        ("{id: x, award: {}}", "either multiplier"),
        ("{id: x, award: {multiplier: 2, bonus_points: 3}}", "either multiplier"),
        ("{id: x, award: {multiplier: 1}}", "multiplier"),
        ("{id: x, award: {bonus_points: 1}, when: {days: [someday]}}", "days"),
        ("{id: x, award: {bonus_points: 1}, when: {hours: [18, 10]}}", "hours"),
        ("{id: x, award: {bonus_points: 1}, applies_to: {tiers: [PLATINUM]}}", "PLATINUM"),
        ("{id: 'a:b', award: {bonus_points: 1}}", "id"),
    ],
)
def test_bad_campaigns_are_refused_naming_the_key(tmp_path, campaign, message):
    assert message in refused(tmp_path, f"campaigns: [{campaign}]\n")


def test_the_campaign_checks_fail_when_a_cap_is_exceeded_or_an_award_left_after_a_return(inputs):
    rules_path = inputs.rules("campaigns: [{id: double, award: {multiplier: 2}, cap: {points: 15, per: week}}]\n")
    priced(inputs, ten=10)
    buy(inputs, ("u", "ten", "2022-10-01T10:00:00"), ("u", "ten", "2022-10-02T10:00:00"))
    give_back(inputs, ("u", {"purchase_id": "purchases:0:0"}, "2022-10-02T09:00:00"))
    inputs.materialize("2022-10-01", "2022-10-02", assets=POINTS)
    assert [points for _, points, _ in inputs.query(BONUSES)] == [10, 5]  # the return frees no room
    warehouse, rules = Warehouse(database=str(inputs.warehouse)), RulesResource(path=str(rules_path))
    assert campaign_caps_hold(warehouse, rules).passed and returned_awards_clawed_back(warehouse, rules).passed
    with duckdb.connect(str(inputs.warehouse)) as conn:
        conn.execute("UPDATE points.point_transactions SET points = 6 WHERE txn_id = 'bonus:double:purchases:0:1'")
        conn.execute("DELETE FROM points.point_transactions WHERE txn_id = 'clawback:bonus:double:purchases:0:0'")
    assert campaign_caps_hold(warehouse, rules).metadata["caps_exceeded"].value == 1
    assert returned_awards_clawed_back(warehouse, rules).metadata["awards_left"].value == 1


def test_criteria_judge_the_members_profile_at_the_start_of_the_day(inputs):
    inputs.rules(
        """tiers: [{name: GOLD, above: 100}]
campaigns: [{id: loyal, award: {bonus_points: 5}, criteria: "purchase_count >= 2 AND points_balance > 0"}]
event_rules: [{type: review, points: 9, criteria: "reward_level = 'GOLD'"}]
"""
    )
    priced(inputs, one=1, big=150)
    buy(
        inputs,
        ("u", "one", "2022-10-01T10:00:00"),
        ("u", "big", "2022-10-01T11:00:00"),  # u: GOLD from here; 2 purchases by the end of the day
        ("u", "one", "2022-10-01T12:00:00"),  # the day's own purchases do not count: no award
        ("u", "one", "2022-10-02T10:00:00"),  # 3 purchases before the day: awarded
        ("v", "one", "2022-10-02T10:00:00"),
    )
    inputs.kafka(
        "events",
        [
            ("u", {"type": "review"}, "2022-10-01T11:30:00"),  # GOLD, but not at the start of the day
            ("u", {"type": "review"}, "2022-10-02T09:00:00"),  # GOLD since yesterday: paid
            ("v", {"type": "review"}, "2022-10-02T09:00:00"),
        ],
    )
    inputs.materialize("2022-10-01", "2022-10-02", assets=POINTS)
    assert inputs.query(
        "SELECT txn_id, points FROM points.point_transactions WHERE txn_id LIKE 'bonus:%' OR txn_id LIKE 'event:%' "
        "ORDER BY txn_id"
    ) == [("bonus:loyal:purchases:0:3", 5), ("event:review:0:1", 9)]


def test_a_criterion_that_is_not_a_safe_expression_is_refused_naming_the_campaign(tmp_path):
    rules = 'campaigns: [{id: x, award: {bonus_points: 1}, criteria: "1; DROP TABLE points.point_transactions"}]\n'
    assert "campaign x, criteria" in refused(tmp_path, rules)


def test_a_yearly_cap_starts_again_on_1_january(inputs):
    inputs.rules("campaigns: [{id: double, award: {multiplier: 2}, cap: {points: 15, per: year}}]\n")
    inputs.kafka("products", [("ten", {"category": "c", "price": 10}, "2022-12-30T00:00:00")])
    buy(
        inputs,
        ("u", "ten", "2022-12-30T10:00:00"),
        ("u", "ten", "2022-12-31T23:59:59"),
        ("u", "ten", "2023-01-01T00:00:00"),
    )
    inputs.materialize("2022-12-30", "2023-01-01", assets=POINTS)
    assert [points for _, points, _ in inputs.query(BONUSES)] == [10, 5, 10]
