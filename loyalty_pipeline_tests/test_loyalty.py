"""SPEC §4 and §5.1 rules on small hand-made inputs: event-time prices, strict thresholds, stamp cards, promotions."""

from decimal import Decimal as D

import pytest

from loyalty_pipeline.domain.config import RulesError, load_rules

LOYALTY = (
    "loyalty/sales_totals",
    "loyalty/caffeine_index",
    "loyalty/promotions",
    "loyalty/all_products",
)  # the loyalty tables and what they read

DAY = "2024-06-01"


def products(inputs, *messages):
    inputs.kafka("products", [(pid, {"category": cat, "price": price}, ts) for pid, cat, price, ts in messages])


def purchases(inputs, *messages, file="part-0.jsonl"):
    inputs.kafka("purchases", [(user, {"product_id": pid}, ts) for user, pid, ts in messages], file=file)


def test_price_as_of_event_time_and_same_millisecond_takes_the_new_price(inputs):
    """A price change between two purchases gives them different prices; at the same ms the new one."""
    inputs.kafka(
        "products",
        [
            ("coffee", {"category": "beverages", "price": 2.99}, f"{DAY}T08:00:00.000"),
            ("coffee", {"category": "drinks", "price": 3.05}, f"{DAY}T12:00:00.000"),
        ],
    )
    purchases(
        inputs,
        ("ann", "coffee", f"{DAY}T11:59:59.999"),
        ("ann", "coffee", f"{DAY}T12:00:00.000"),
        ("ann", "coffee", f"{DAY}T07:59:59.999"),
    )
    inputs.materialize(DAY, assets=LOYALTY)
    assert inputs.query(
        "SELECT purchase_id, category, price, source FROM loyalty.enriched_purchases ORDER BY purchased_at"
    ) == [
        ("purchases:0:2", None, None, "kafka"),
        ("purchases:0:0", "beverages", D("2.99"), "kafka"),
        ("purchases:0:1", "drinks", D("3.05"), "kafka"),
    ]


def test_price_set_on_an_earlier_day_applies_and_later_messages_do_not(inputs):
    products(
        inputs, ("tea", "beverages", 2.55, "2024-05-30T10:00:00"), ("tea", "beverages", 9.99, "2024-06-02T10:00:00")
    )
    purchases(inputs, ("ann", "tea", f"{DAY}T10:00:00"))
    inputs.materialize("2024-05-30", "2024-06-02", assets=LOYALTY)
    assert inputs.query("SELECT price FROM loyalty.enriched_purchases") == [(D("2.55"),)]


def test_equal_timestamps_greatest_offset_wins(inputs):
    products(inputs, ("tea", "beverages", 1.00, f"{DAY}T10:00:00"), ("tea", "beverages", 2.00, f"{DAY}T10:00:00"))
    purchases(inputs, ("ann", "tea", f"{DAY}T10:00:00"))
    inputs.materialize(DAY, assets=LOYALTY)
    assert inputs.query("SELECT price FROM loyalty.enriched_purchases") == [(D("2.00"),)]
    assert inputs.query("SELECT * FROM loyalty.all_products") == [("tea", "beverages", D("2.00"))]


def test_unknown_product_keeps_null_price_and_total_is_zero(inputs):
    purchases(inputs, ("ann", "unicorn", f"{DAY}T10:00:00"))
    inputs.materialize(DAY, assets=LOYALTY)
    assert inputs.query("SELECT product_id, category, price FROM loyalty.enriched_purchases") == [
        ("unicorn", None, None)
    ]
    assert inputs.query("SELECT * FROM loyalty.sales_totals") == [("ann", D("0.00"), "CLIMBING")]


def test_product_tombstone_removes_it_from_the_catalogue_and_unprices_later_purchases(inputs):
    inputs.kafka(
        "products",
        [("dog", {"category": "pets", "price": 10}, f"{DAY}T08:00:00"), ("dog", None, f"{DAY}T09:00:00")],
    )
    purchases(inputs, ("ann", "dog", f"{DAY}T08:30:00"), ("ann", "dog", f"{DAY}T09:30:00"))
    inputs.materialize(DAY, assets=LOYALTY)
    assert inputs.query("SELECT price FROM loyalty.enriched_purchases ORDER BY purchased_at") == [
        (D("10.00"),),
        (None,),
    ]
    assert inputs.query("SELECT * FROM loyalty.all_products") == []


@pytest.mark.parametrize(
    "price, tier",
    [
        ("200.00", "CLIMBING"),
        ("200.01", "BRONZE"),
        ("300.00", "BRONZE"),
        ("300.01", "SILVER"),
        ("400.00", "SILVER"),
        ("400.01", "GOLD"),
    ],
)
def test_tier_thresholds_are_strict(inputs, price, tier):
    products(inputs, ("thing", "stuff", float(price), f"{DAY}T08:00:00"))
    purchases(inputs, ("ann", "thing", f"{DAY}T10:00:00"))
    inputs.materialize(DAY, assets=LOYALTY)
    assert inputs.query("SELECT total, reward_level FROM loyalty.sales_totals") == [(D(price), tier)]


def test_s3_purchases_keep_their_own_price_and_count_for_tiers_and_stamps(inputs):
    products(inputs, ("coffee", "beverages", 3.00, f"{DAY}T08:00:00"))
    purchases(inputs, ("ann", "coffee", f"{DAY}T09:00:00"))
    inputs.csv(
        f"historical_purchases/{DAY}.csv",
        "order_id,user_id,product_id,price,purchased_at\n"
        f"o1,ann,coffee,2.50,{DAY}T08:30:00Z\no1,ann,gold_bar,250.00,{DAY}T08:30:00Z\n",
    )
    inputs.materialize(DAY, assets=LOYALTY)
    assert inputs.query(
        "SELECT purchase_id, order_id, category, price, source FROM loyalty.enriched_purchases ORDER BY purchased_at, purchase_id"
    ) == [
        ("s3:o1:coffee:1", "o1", "beverages", D("2.50"), "s3"),
        ("s3:o1:gold_bar:2", "o1", None, D("250.00"), "s3"),
        ("purchases:0:0", "purchases:0:0", "beverages", D("3.00"), "kafka"),
    ]
    assert inputs.query("SELECT * FROM loyalty.sales_totals") == [("ann", D("255.50"), "BRONZE")]
    assert inputs.query("SELECT * FROM loyalty.caffeine_index") == [("ann", 2, 2, False)]


@pytest.mark.parametrize("coffees, sequence, free", [(4, 4, False), (5, 5, True), (6, 0, False), (11, 5, True)])
def test_stamp_card_cycle(inputs, coffees, sequence, free):
    purchases(inputs, *[("ann", "coffee", f"{DAY}T10:00:{second:02d}") for second in range(coffees)])
    inputs.materialize(DAY, assets=LOYALTY)
    assert inputs.query("SELECT * FROM loyalty.caffeine_index") == [("ann", coffees, sequence, free)]


@pytest.mark.parametrize("coffee_price, eligible", [(20.00, False), (20.01, True)])
def test_loose_leaf_min_spend_is_strict(inputs, coffee_price, eligible):
    products(inputs, ("coffee", "beverages", coffee_price, f"{DAY}T08:00:00"), ("cake", "food", 100, f"{DAY}T08:00:00"))
    purchases(inputs, ("ann", "coffee", f"{DAY}T10:00:00"), ("ann", "cake", f"{DAY}T10:00:00"))
    inputs.materialize(DAY, assets=LOYALTY)
    expected = [("ann", "loose_leaf", ["coffee"])] if eligible else []
    assert inputs.query("SELECT * FROM loyalty.promotions") == expected


def test_promotion_excluded_product_and_require_all(inputs):
    products(inputs, ("coffee", "b", 30, f"{DAY}T08:00:00"), ("tea", "b", 1, f"{DAY}T08:00:00"))
    products(inputs, ("dog", "pets", 1, f"{DAY}T08:00:00"), ("beret", "fashion", 1, f"{DAY}T08:00:00"))
    purchases(
        inputs,
        ("ann", "coffee", f"{DAY}T10:00:00"),
        ("ann", "tea", f"{DAY}T10:00:00"),
        ("bob", "beret", f"{DAY}T10:00:00"),
        ("bob", "dog", f"{DAY}T10:00:00"),
        ("bob", "beret", f"{DAY}T11:00:00"),
    )
    inputs.materialize(DAY, assets=LOYALTY)
    assert inputs.query("SELECT * FROM loyalty.promotions") == [("bob", "french_poodle", ["beret", "dog"])]


def test_rules_file_changes_tiers_stamp_card_and_promotions(inputs):
    inputs.rules(
        """
tiers: [{name: SILVER, above: 5}, {name: PLATINUM, above: 10}]
default_tier: NEW
stamp_card: {product_id: tea, cycle: 3}
promotions:
  - {name: "tea'; DROP TABLE loyalty.sales_totals; --", considers: [tea], require_all: [tea]}
"""
    )
    products(inputs, ("tea", "b", 4, f"{DAY}T08:00:00"))
    purchases(inputs, *[(user, "tea", f"{DAY}T10:00:0{i}") for i, user in enumerate(["ann", "ann", "bob", "ann"])])
    inputs.materialize(DAY, assets=LOYALTY)
    assert inputs.query("SELECT * FROM loyalty.sales_totals ORDER BY user_id") == [
        ("ann", D("12.00"), "PLATINUM"),
        ("bob", D("4.00"), "NEW"),
    ]
    assert inputs.query("SELECT * FROM loyalty.caffeine_index ORDER BY user_id") == [
        ("ann", 3, 0, False),
        ("bob", 1, 1, False),
    ]
    assert (
        inputs.query("SELECT promotion_name FROM loyalty.promotions ORDER BY user_id")
        == [("tea'; DROP TABLE loyalty.sales_totals; --",)] * 2
    )


@pytest.mark.parametrize(
    "text, named",
    [
        ("tierz: []", "tierz"),
        ("tiers: [{name: GOLD, above: lots}]", "tiers.0.above"),
        ("stamp_card: {product_id: coffee, cycle: 0}", "stamp_card.cycle"),
        ("promotions: [{name: x, considers: [a], min_spend: [1]}]", "promotions.0.min_spend"),
        ("points: {earn_rate: -1}", "points.earn_rate"),
        ("- just a list", "mapping"),
    ],
)
def test_bad_rules_name_the_key(tmp_path, text, named):
    path = tmp_path / "loyalty.yaml"
    path.write_text(text)
    with pytest.raises(RulesError, match=named.replace(".", r"\.")) as error:
        load_rules(path)
    assert str(path) in str(error.value)


def test_defaults_are_the_spec(tmp_path):
    rules = load_rules(None)
    assert [(tier.name, tier.above) for tier in rules.tiers] == [("GOLD", 400), ("SILVER", 300), ("BRONZE", 200)]
    assert (rules.stamp_card.product_id, rules.stamp_card.cycle, rules.default_tier) == ("coffee", 6, "CLIMBING")
    assert (rules.points.earn_rate, rules.points.validity_days) == (1, 365)
    assert [promotion.name for promotion in rules.promotions] == ["french_poodle", "loose_leaf"]
