"""Issue 15: returns take a purchase back; unknown, repeated, others', early and late returns are quarantined; the
lifetime tables count net purchases."""

import logging
from datetime import date

import dagster as dg
import pytest

from loyalty_pipeline.definitions import build_defs
from loyalty_pipeline.defs.automation import planning
from loyalty_pipeline.defs.runs import materialize_days
from loyalty_pipeline_tests.scenarios import buy, give_back, ms, priced

LOYALTY = ("loyalty/sales_totals", "loyalty/caffeine_index")


def returned(inputs) -> list[tuple]:
    return inputs.query(
        "SELECT purchase_id, returned_at::VARCHAR FROM loyalty.enriched_purchases WHERE returned_at IS NOT NULL "
        "ORDER BY ALL"
    )


def quarantined(inputs) -> list[tuple]:
    return inputs.query(
        "SELECT regexp_replace(location, '^.*/', ''), reason FROM raw.rejected_records WHERE source IN ('loyalty:returns', 'kafka:returns') "
        "ORDER BY ALL"
    )


def test_a_return_by_purchase_id_on_the_purchase_day_nets_totals_tier_and_stamps(inputs):
    priced(inputs, coffee=5, cake=100)
    buy(inputs, ("u", "coffee", "2022-10-01T08:00:00"), ("u", "cake", "2022-10-01T09:00:00"))
    give_back(inputs, ("u", {"purchase_id": "purchases:0:1"}, "2022-10-01T09:00:00"))  # the same instant
    inputs.materialize("2022-10-01", assets=LOYALTY)
    assert returned(inputs) == [("purchases:0:1", "2022-10-01 09:00:00")]
    assert inputs.query("SELECT user_id, total FROM loyalty.sales_totals") == [("u", 5)]
    assert inputs.query("SELECT user_id, total FROM loyalty.caffeine_index") == [("u", 1)]
    assert quarantined(inputs) == []


def test_a_return_by_order_takes_the_most_recent_purchase_not_yet_returned(inputs):
    priced(inputs, coffee=5)
    buy(inputs, *[("u", "coffee", f"2022-10-01T0{hour}:00:00") for hour in (7, 8, 9)])
    order = {"order_id": "purchases:0:0", "product_id": "coffee"}  # a purchase without order_id is its own order
    inputs.kafka(
        "purchases",
        [("u", {"product_id": "coffee", "order_id": "o1"}, f"2022-10-02T0{hour}:00:00") for hour in (7, 8)],
        file="orders.jsonl",
    )
    give_back(
        inputs,
        ("u", {"order_id": "o1", "product_id": "coffee"}, "2022-10-02T10:00:00"),
        (
            "u",
            {"order_id": "o1", "product_id": "coffee", "returned_at": ms("2022-10-02T11:00:00")},
            "2022-10-02T12:00:00",
        ),
        ("u", {"order_id": "o1", "product_id": "coffee"}, "2022-10-02T13:00:00"),  # nothing left to return
        ("u", order, "2022-10-02T14:00:00"),
    )
    inputs.materialize("2022-10-01", "2022-10-02", assets=LOYALTY)
    assert returned(inputs) == [
        ("purchases:0:0", "2022-10-02 14:00:00"),
        ("purchases:0:3", "2022-10-02 11:00:00"),
        ("purchases:0:4", "2022-10-02 10:00:00"),
    ]
    assert quarantined(inputs) == [
        ("returns.jsonl:3", "already returned: every purchase of order o1 product coffee"),
    ]
    assert inputs.query("SELECT total FROM loyalty.caffeine_index") == [(2,)]


def test_bad_returns_are_quarantined_with_a_reason_and_the_good_one_counts(inputs):
    inputs.rules("returns: {window_days: 30}\n")
    priced(inputs, coffee=5)
    buy(inputs, ("u", "coffee", "2022-10-01T08:00:00"), ("v", "coffee", "2022-10-01T08:00:00"))
    give_back(
        inputs,
        ("u", {"purchase_id": "purchases:0:9"}, "2022-10-01T09:00:00"),
        ("u", {"purchase_id": "purchases:0:1"}, "2022-10-01T09:00:00"),  # v's purchase
        ("u", {"purchase_id": "purchases:0:0", "returned_at": ms("2022-10-01T07:59:59")}, "2022-10-01T09:00:00"),
        ("u", {"order_id": "nope", "product_id": "coffee"}, "2022-10-01T09:00:00"),
        ("u", {"product_id": "coffee"}, "2022-10-01T09:00:00"),
        ("u", {"purchase_id": "purchases:0:0"}, "2022-10-31T08:00:00"),  # 30 days exactly: accepted
        ("u", {"purchase_id": "purchases:0:0"}, "2022-10-31T08:00:00"),  # a second return, the same instant
        ("v", {"purchase_id": "purchases:0:1"}, "2022-10-31T08:00:01"),  # past the window
    )
    inputs.materialize("2022-10-01", "2022-10-31", assets=LOYALTY)
    assert returned(inputs) == [("purchases:0:0", "2022-10-31 08:00:00")]
    assert quarantined(inputs) == [
        ("returns.jsonl:1", "unknown purchase purchases:0:9"),
        ("returns.jsonl:2", "purchase purchases:0:1 is another customer's"),
        ("returns.jsonl:3", "return older than purchase purchases:0:0"),
        ("returns.jsonl:4", "unknown purchase: order nope product coffee"),
        ("returns.jsonl:5", "a return names purchase_id, or order_id and product_id"),
        ("returns.jsonl:7", "already returned: purchases:0:0"),
        ("returns.jsonl:8", "return after the 30-day window of purchase purchases:0:1"),
    ]
    # net purchases: a customer who returned everything has no row, as one who never bought
    assert inputs.query("SELECT user_id, total FROM loyalty.sales_totals ORDER BY ALL") == [("v", 5)]


def test_a_return_judged_in_an_earlier_run_stays_when_the_purchase_day_is_run_again(inputs):
    priced(inputs, coffee=5)
    buy(inputs, ("u", "coffee", "2022-10-01T08:00:00"))
    give_back(inputs, ("u", {"purchase_id": "purchases:0:0"}, "2022-10-02T08:00:00"))
    inputs.materialize("2022-10-01", "2022-10-02", assets=LOYALTY)
    inputs.materialize("2022-10-01", assets=LOYALTY)
    assert returned(inputs) == [("purchases:0:0", "2022-10-02 08:00:00")]
    inputs.materialize("2022-10-02", assets=LOYALTY)  # and judging its day again gives the same
    assert returned(inputs) == [("purchases:0:0", "2022-10-02 08:00:00")]
    assert quarantined(inputs) == []


NET_JOURNEY = """
journeys:
  - id: cake
    audience: "list_contains(products_purchased, 'cake')"
    stages:
      - id: fans
        steps: [{wait_days: 10}]
        exit_criteria: [{name: gave_back, when: "purchase_count = 0"}]
"""


def test_journeys_and_the_profile_see_net_purchases_from_the_return_on(inputs):
    inputs.rules(NET_JOURNEY)
    priced(inputs, cake=100, tea=2)
    buy(
        inputs,
        ("u", "cake", "2022-10-01T08:00:00"),  # returned the next day: in the journey on day 1, out on day 2
        ("w", "cake", "2022-10-01T08:00:00"),  # returned the same day: never in it
        ("w", "tea", "2022-10-01T09:00:00"),
    )
    give_back(
        inputs,
        ("u", {"purchase_id": "purchases:0:0"}, "2022-10-02T00:00:00"),  # midnight: day 2
        ("w", {"purchase_id": "purchases:0:1"}, "2022-10-01T23:59:59"),
    )
    inputs.materialize("2022-10-01", "2022-10-02", assets=("journey/activations", "customer/profile_360"))
    assert inputs.query("SELECT customer_id, node, entered_at::VARCHAR FROM journey.journey_state ORDER BY ALL") == [
        ("u", "stage:fans", "2022-10-01"),
        ("u", "stage:fans:exit:gave_back", "2022-10-02"),
        ("u", "stage:fans:step:1", "2022-10-01"),
    ]
    assert inputs.query(
        "SELECT user_id, total_spend, purchase_count, products_purchased FROM customer.profile_360 ORDER BY ALL"
    ) == [("u", 0, 0, []), ("w", 2, 1, ["tea"])]


def test_returns_and_pending_rules_are_validated(tmp_path):
    from loyalty_pipeline.domain.config import RulesError, load_rules

    for text, field in (
        ("returns: {window_days: -1}", "returns.window_days"),
        ("points: {pending_days: x}", "points.pending_days"),
    ):
        (tmp_path / "loyalty.yaml").write_text(text + "\n")
        with pytest.raises(RulesError, match=field):
            load_rules(tmp_path / "loyalty.yaml")


def test_returns_in_the_s3_export_take_purchases_back_or_are_quarantined(inputs):
    priced(inputs, coffee=5)
    buy(inputs, ("u", "coffee", "2022-10-01T08:00:00"), ("u", "coffee", "2022-10-01T09:00:00"))
    inputs.csv("returns/2022-10-02.csv", "purchase_id,returned_at\npurchases:0:0,2022-10-02T10:00:00Z\nnope,x\n")
    inputs.csv(
        "returns/2022-10-03.csv",
        "order_id,product_id,returned_at\npurchases:0:1,coffee,1664791200000\npurchases:0:1,coffee,2022-10-02T10:00:00Z\n",
    )
    inputs.materialize("2022-10-01", "2022-10-03", assets=LOYALTY)
    assert returned(inputs) == [("purchases:0:0", "2022-10-02 10:00:00"), ("purchases:0:1", "2022-10-03 10:00:00")]
    assert inputs.query(
        "SELECT source, regexp_replace(location, '^.*/', ''), reason FROM raw.rejected_records ORDER BY ALL"
    ) == [
        ("s3:returns", "2022-10-02.csv:3", "returned_at is not an ISO-8601 time or ms"),
        ("s3:returns", "2022-10-03.csv:3", "returned_at is not on the file's date 2022-10-03"),
    ]


def order(inputs, *purchases):
    """(customer key, ts) purchases of coffee in order o1."""
    priced(inputs, coffee=5)
    inputs.kafka("purchases", [(user, {"product_id": "coffee", "order_id": "o1"}, ts) for user, ts in purchases])


O1 = {"order_id": "o1", "product_id": "coffee"}


def test_returns_are_judged_in_time_order_whatever_form_they_take(inputs):
    order(inputs, ("u", "2022-10-01T07:00:00"), ("u", "2022-10-01T08:00:00"))
    give_back(
        inputs,
        ("u", O1, "2022-10-01T10:00:00"),  # the most recent: purchases:0:1
        ("u", {"purchase_id": "purchases:0:1"}, "2022-10-01T12:00:00"),  # taken already, by the order's return
    )
    inputs.materialize("2022-10-01", assets=LOYALTY)
    assert returned(inputs) == [("purchases:0:1", "2022-10-01 10:00:00")]
    assert quarantined(inputs) == [("returns.jsonl:2", "already returned: purchases:0:1")]


@pytest.mark.parametrize("payload", [{"purchase_id": "purchases:0:0"}, O1])
def test_another_customers_quarantined_return_takes_nothing_back(inputs, payload):
    order(inputs, ("u", "2022-10-01T07:00:00"))
    give_back(inputs, ("v", payload, "2022-10-01T09:00:00"), ("u", O1, "2022-10-01T10:00:00"))
    inputs.materialize("2022-10-01", assets=LOYALTY)
    assert returned(inputs) == [("purchases:0:0", "2022-10-01 10:00:00")]
    assert quarantined(inputs) == [("returns.jsonl:1", "purchase purchases:0:0 is another customer's")]


def test_an_orders_return_takes_the_latest_purchase_made_by_then(inputs):
    order(inputs, ("u", "2022-10-01T07:00:00"), ("u", "2022-10-01T12:00:00"))
    give_back(inputs, ("u", O1, "2022-10-01T10:00:00"), ("u", O1, "2022-10-01T06:00:00"))
    inputs.materialize("2022-10-01", assets=LOYALTY)
    assert returned(inputs) == [("purchases:0:0", "2022-10-01 10:00:00")]
    assert quarantined(inputs) == [("returns.jsonl:2", "return older than purchase purchases:0:0")]


def test_returns_at_one_instant_go_in_offset_order_not_text_order(inputs):
    order(inputs, ("u", "2022-10-01T07:00:00"))
    unknown = [("u", {"purchase_id": f"nope-{n}"}, "2022-10-01T09:00:00") for n in range(9)]
    same = [("u", {"purchase_id": "purchases:0:0"}, "2022-10-01T10:00:00")] * 2  # offsets 9 and 10
    give_back(inputs, *unknown, *same)
    inputs.materialize("2022-10-01", assets=LOYALTY)
    assert inputs.query("SELECT return_id FROM loyalty.returns") == [("returns:0:9",)]
    assert ("returns.jsonl:11", "already returned: purchases:0:0") in quarantined(inputs)
    assert len(quarantined(inputs)) == 10  # the nine unknown ones and line 11


def test_a_return_dated_after_every_files_days_sets_the_default_range_and_is_never_dropped_silently(inputs):
    priced(inputs, coffee=5)
    buy(inputs, ("u", "coffee", "2022-10-01T08:00:00"))
    later = {"purchase_id": "purchases:0:0", "returned_at": ms("2022-10-03T09:00:00")}
    give_back(inputs, ("u", later, "2022-10-01T10:00:00"))  # sent on the 1st, dated the 3rd
    defs = build_defs(inputs.env())
    assert planning.input_days(defs.resources["sources"], defs.resources["rules"]) == (
        date(2022, 10, 1),
        date(2022, 10, 3),
    )
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_days(defs, "2022-10-01", "2022-10-01", instance, assets=("raw/returns",))
    warnings = [entry.user_message for entry in instance.all_logs(result.run_id) if entry.level == logging.WARNING]
    assert (
        "1 message(s) of returns in the files read are on days outside this run (2022-10-03..2022-10-03), not "
        "loaded yet: materialize those days"
    ) in warnings
    inputs.materialize("2022-10-01", "2022-10-03", assets=LOYALTY)
    assert returned(inputs) == [("purchases:0:0", "2022-10-03 09:00:00")]
