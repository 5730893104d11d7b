"""SPEC §5.2: the point ledger's rules, its edges, day order, and agreement with the plain reference replay."""

import random
from datetime import datetime, timedelta

import pytest

from loyalty_pipeline.domain.points.ledger_reference import replay
from loyalty_pipeline_tests.scenarios import POINTS, buy, priced, redeem

LEDGER = "SELECT txn_id, user_id, occurred_at::VARCHAR, kind, points, expires_at::VARCHAR, source_ref FROM points.point_transactions ORDER BY occurred_at, CASE kind WHEN 'expire' THEN 0 WHEN 'earn' THEN 1 ELSE 2 END, txn_id"


def ledger_tables(inputs) -> list[list[tuple]]:
    """Every row of the tables the ledger writes, for before/after comparisons."""
    tables = ("points.point_transactions", "points.lot_allocations", "raw.rejected_records", "points.point_balances")
    return [inputs.query(f"SELECT * FROM {table} ORDER BY ALL") for table in tables]


def seven_days(inputs):
    inputs.rules("points: {validity_days: 7}\n")


def test_worked_example_of_the_seed(inputs):
    """+5 on 10-01 14:00, +10 on 10-02 16:00, -5 expire at 10-09 00:00, -10 use at 10-09 18:00, balance 0."""
    seven_days(inputs)
    priced(inputs, five=5.99, ten=10)
    buy(inputs, ("u", "five", "2022-10-01T14:00:00"), ("u", "ten", "2022-10-02T16:00:00"))
    redeem(inputs, ("u", "r1", 10, "2022-10-09T18:00:00"))
    inputs.materialize("2022-10-01", "2022-10-10", assets=POINTS)
    assert inputs.query(LEDGER) == [
        ("earn:purchases:0:0", "u", "2022-10-01 14:00:00", "earn", 5, "2022-10-09 00:00:00", "purchases:0:0"),
        ("earn:purchases:0:1", "u", "2022-10-02 16:00:00", "earn", 10, "2022-10-10 00:00:00", "purchases:0:1"),
        ("expire:earn:purchases:0:0", "u", "2022-10-09 00:00:00", "expire", -5, None, "earn:purchases:0:0"),
        ("use:r1", "u", "2022-10-09 18:00:00", "use", -10, None, "r1"),
    ]
    assert inputs.query("SELECT * FROM points.point_balances") == [("u", 0, None, None, 0, 0, 0)]


def test_balances_as_of_the_last_day_with_next_expiry(inputs):
    seven_days(inputs)
    priced(inputs, five=5, ten=10)
    buy(
        inputs,
        ("u", "five", "2022-10-01T14:00:00"),
        ("u", "ten", "2022-10-01T15:00:00"),
        ("u", "ten", "2022-10-02T16:00:00"),
    )
    redeem(inputs, ("u", "r1", 7, "2022-10-03T09:00:00"))
    inputs.materialize("2022-10-01", "2022-10-08", assets=POINTS)
    # lots 5 and 10 expire at 10-09 00:00 (still open at the end of 10-08): 8 of them remain after the use of 7
    assert inputs.query(
        "SELECT user_id, balance, next_expiry_at::VARCHAR, next_expiry_points FROM points.point_balances"
    ) == [("u", 18, "2022-10-09 00:00:00", 8)]


@pytest.mark.parametrize("asked, accepted", [(16, False), (15, True)])
def test_redemption_one_point_above_the_balance_is_refused_and_exactly_at_it_accepted(inputs, asked, accepted):
    priced(inputs, five=5, ten=10)
    buy(inputs, ("u", "five", "2022-10-01T14:00:00"), ("u", "ten", "2022-10-01T15:00:00"))
    redeem(inputs, ("u", "r1", asked, "2022-10-01T16:00:00"))
    inputs.materialize("2022-10-01", assets=POINTS)
    uses = inputs.query("SELECT txn_id, points FROM points.point_transactions WHERE kind = 'use'")
    refused = inputs.query("SELECT source, reason FROM raw.rejected_records")
    assert uses == ([("use:r1", -asked)] if accepted else [])
    assert refused == ([] if accepted else [("points:redemptions", "insufficient_points")])
    assert inputs.query("SELECT balance FROM points.point_balances") == [(15 - asked if accepted else 15,)]


def test_a_refused_redemption_does_not_block_a_later_smaller_one(inputs):
    priced(inputs, ten=10)
    buy(inputs, ("u", "ten", "2022-10-01T10:00:00"))
    redeem(
        inputs,
        ("u", "big", 11, "2022-10-01T11:00:00"),
        ("u", "small", 4, "2022-10-01T12:00:00"),
        ("u", "again", 7, "2022-10-01T13:00:00"),
    )
    inputs.materialize("2022-10-01", assets=POINTS)
    assert inputs.query("SELECT txn_id FROM points.point_transactions WHERE kind = 'use'") == [("use:small",)]
    assert inputs.query(
        "SELECT location LIKE '%redemptions.jsonl:1', location LIKE '%redemptions.jsonl:3' FROM raw.rejected_records ORDER BY location"
    ) == [(True, False), (False, True)]


def test_lot_expiring_at_midnight_goes_before_a_use_at_that_instant(inputs):
    seven_days(inputs)
    priced(inputs, ten=10)
    buy(inputs, ("u", "ten", "2022-10-01T23:59:59.999"))
    redeem(inputs, ("u", "r1", 10, "2022-10-09T00:00:00"), ("u", "r0", 10, "2022-10-08T23:59:59.999"))
    inputs.materialize("2022-10-01", "2022-10-09", assets=POINTS)
    assert inputs.query(
        "SELECT txn_id, occurred_at::VARCHAR, points FROM points.point_transactions ORDER BY occurred_at"
    ) == [
        ("earn:purchases:0:0", "2022-10-01 23:59:59.999", 10),
        ("use:r0", "2022-10-08 23:59:59.999", -10),
    ]
    # r1 came at the instant the (already empty) lot expired: nothing left
    assert inputs.query("SELECT reason FROM raw.rejected_records") == [("insufficient_points",)]


def test_midnight_expiry_then_use_of_a_newer_lot(inputs):
    seven_days(inputs)
    priced(inputs, ten=10, three=3)
    buy(inputs, ("u", "ten", "2022-10-01T08:00:00"), ("u", "three", "2022-10-02T08:00:00"))
    redeem(inputs, ("u", "r1", 3, "2022-10-09T00:00:00"))
    inputs.materialize("2022-10-01", "2022-10-09", assets=POINTS)
    assert inputs.query(
        "SELECT kind, occurred_at::VARCHAR, points FROM points.point_transactions WHERE day = '2022-10-09' ORDER BY kind"
    ) == [
        ("expire", "2022-10-09 00:00:00", -10),
        ("use", "2022-10-09 00:00:00", -3),
    ]


def test_earn_and_use_in_the_same_millisecond_earn_first(inputs):
    priced(inputs, ten=10)
    buy(inputs, ("u", "ten", "2022-10-01T10:00:00.123"))
    redeem(inputs, ("u", "r1", 10, "2022-10-01T10:00:00.123"))
    inputs.materialize("2022-10-01", assets=POINTS)
    assert inputs.query("SELECT kind, points FROM points.point_transactions ORDER BY points DESC") == [
        ("earn", 10),
        ("use", -10),
    ]


def test_uses_take_the_earliest_expiry_first(inputs):
    seven_days(inputs)
    priced(inputs, ten=10, four=4)
    buy(inputs, ("u", "ten", "2022-10-01T08:00:00"), ("u", "four", "2022-10-02T08:00:00"))
    redeem(inputs, ("u", "r1", 12, "2022-10-03T08:00:00"))
    inputs.materialize("2022-10-01", "2022-10-10", assets=POINTS)
    # 10 from the first lot, 2 from the second; the second's 2 left expire on 10-10
    assert inputs.query("SELECT txn_id, lot_txn_id, points FROM points.lot_allocations ORDER BY day, lot_txn_id") == [
        ("use:r1", "earn:purchases:0:0", 10),
        ("use:r1", "earn:purchases:0:1", 2),
        ("expire:earn:purchases:0:1", "earn:purchases:0:1", 2),
    ]


def test_tombstone_expires_every_open_lot_at_its_time(inputs):
    priced(inputs, ten=10, four=4, one=1)
    buy(
        inputs,
        ("u", "ten", "2022-10-01T08:00:00"),
        ("u", "four", "2022-10-02T08:00:00"),
        ("u", "one", "2022-10-02T12:00:00"),
        ("v", "ten", "2022-10-02T08:00:00"),
    )
    redeem(inputs, ("u", "r1", 12, "2022-10-02T09:00:00"))
    inputs.kafka("users", [("u", {"name": "Ann"}, "2022-09-30T00:00:00"), ("u", None, "2022-10-02T12:00:00")])
    inputs.materialize("2022-09-30", "2022-10-03", assets=POINTS)
    assert inputs.query(
        "SELECT txn_id, occurred_at::VARCHAR, points FROM points.point_transactions WHERE kind = 'expire' ORDER BY txn_id"
    ) == [
        ("expire:earn:purchases:0:1", "2022-10-02 12:00:00", -2),
    ]
    # the lot earned at the tombstone's instant comes after the expiry and stays
    assert inputs.query("SELECT user_id, balance FROM points.point_balances ORDER BY user_id") == [("u", 1), ("v", 10)]


def test_tombstone_with_several_open_lots_writes_one_expire_row_per_lot(inputs):
    priced(inputs, ten=10, four=4)
    buy(
        inputs,
        ("u", "ten", "2022-10-01T08:00:00"),
        ("u", "four", "2022-10-02T08:00:00"),
        ("u", "ten", "2022-10-03T08:00:00"),
    )
    inputs.kafka("users", [("u", None, "2022-10-03T09:00:00")])
    inputs.materialize("2022-10-01", "2022-10-03", assets=POINTS)
    assert inputs.query(
        "SELECT txn_id, points FROM points.point_transactions WHERE kind = 'expire' ORDER BY txn_id"
    ) == [
        ("expire:earn:purchases:0:0", -10),
        ("expire:earn:purchases:0:1", -4),
        ("expire:earn:purchases:0:2", -10),
    ]
    assert inputs.query("SELECT balance, next_expiry_at FROM points.point_balances") == [(0, None)]


def test_zero_point_and_unpriced_purchases_write_no_row_and_earn_rate_floors(inputs):
    inputs.rules("points: {earn_rate: 1.5}\n")
    priced(inputs, cheap=0.5, odd=3.99)
    buy(
        inputs,
        ("u", "cheap", "2022-10-01T08:00:00"),
        ("u", "unknown", "2022-10-01T08:00:00"),
        ("u", "odd", "2022-10-01T09:00:00"),
    )
    inputs.materialize("2022-10-01", assets=POINTS)
    assert inputs.query("SELECT source_ref, points FROM points.point_transactions") == [("purchases:0:2", 5)]


def test_duplicate_redemption_id_counts_once(inputs):
    priced(inputs, ten=10)
    buy(inputs, ("u", "ten", "2022-10-01T08:00:00"))
    redeem(inputs, ("u", "r1", 3, "2022-10-01T09:00:00"), ("u", "r1", 3, "2022-10-02T09:00:00"))
    inputs.materialize("2022-10-01", "2022-10-02", assets=POINTS)
    assert inputs.query("SELECT txn_id, points FROM points.point_transactions WHERE kind = 'use'") == [("use:r1", -3)]
    assert inputs.query("SELECT reason, day::VARCHAR FROM raw.rejected_records") == [
        ("duplicate redemption_id", "2022-10-02")
    ]


@pytest.mark.e2e  # three runs
def test_rematerializing_a_day_and_a_range_gives_identical_rows(inputs):
    seven_days(inputs)
    priced(inputs, ten=10, four=4)
    buy(
        inputs,
        ("u", "ten", "2022-10-01T08:00:00"),
        ("u", "four", "2022-10-03T08:00:00"),
        ("v", "ten", "2022-10-05T08:00:00"),
    )
    redeem(inputs, ("u", "r1", 5, "2022-10-04T09:00:00"), ("v", "r2", 50, "2022-10-05T09:00:00"))
    inputs.materialize("2022-10-01", "2022-10-12", assets=POINTS)
    snapshot = ledger_tables(inputs)
    inputs.materialize("2022-10-04", assets=POINTS)
    inputs.materialize("2022-10-03", "2022-10-09", assets=POINTS)
    inputs.materialize("2022-10-12", assets=POINTS)
    again = ledger_tables(inputs)
    assert again == snapshot


def test_a_day_whose_previous_day_is_missing_is_refused(inputs):
    priced(inputs, ten=10)
    buy(inputs, ("u", "ten", "2022-10-01T08:00:00"), ("u", "ten", "2022-10-03T08:00:00"))
    from loyalty_pipeline.definitions import build_defs
    from loyalty_pipeline.defs.runs import materialize_days

    inputs.materialize("2022-10-01", assets=POINTS)
    inputs.materialize("2022-10-02", assets=("identity/id_graph",))  # the ledger alone lacks day 2
    result = materialize_days(build_defs(inputs.env()), "2022-10-03", "2022-10-03")
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure).event_specific_data
    # a Failure: the run's failure event carries the line and the range to run, which the UI shows first
    assert failure.user_failure_data.description == (
        "point ledger: 2022-10-03 needs the ledger at the end of 2022-10-02, which is not materialized; "
        "materialize 2022-10-02..2022-10-03 as one run"
    )
    assert {key: value.value for key, value in failure.user_failure_data.metadata.items()} == {
        "run_instead_from": "2022-10-02",
        "run_instead_to": "2022-10-03",
    }
    assert inputs.query("SELECT count(*) FROM points.point_transactions") == [(1,)]


def test_rebuilding_an_earlier_day_with_changed_inputs_under_later_days_is_refused(inputs):
    priced(inputs, ten=10)
    buy(inputs, ("u", "ten", "2022-10-01T08:00:00"))
    redeem(inputs, ("u", "r1", 10, "2022-10-02T08:00:00"))
    inputs.materialize("2022-10-01", "2022-10-02", assets=POINTS)
    buy(inputs, ("u", "ten", "2022-10-01T09:00:00"), file="late.jsonl")
    from loyalty_pipeline.definitions import build_defs
    from loyalty_pipeline.defs.runs import materialize_days

    result = materialize_days(build_defs(inputs.env()), "2022-10-01", "2022-10-01")
    assert not result.success
    # the whole range in one run is the way: both days rebuilt in order
    inputs.materialize("2022-10-01", "2022-10-02", assets=POINTS)
    assert inputs.query("SELECT balance FROM points.point_balances") == [(10,)]


@pytest.mark.parametrize("pending_days", [0, 1])
def test_random_histories_agree_with_the_reference_replay(inputs, pending_days):
    """Many customers, random purchases, redemptions (some above balance), returns, closures, a campaign's awards
    (each purchase of an odd price) and event points over 20 days."""
    rng = random.Random(7 + pending_days)
    inputs.rules(
        f"points: {{validity_days: 3, pending_days: {pending_days}}}\n"
        "campaigns: [{id: odd, award: {bonus_points: 2}, applies_to: {products: [p1, p3, p5, p7]}}]\n"
        "event_rules: [{type: review, points: 4}]\n"
    )
    prices = {f"p{n}": n for n in range(1, 8)}
    priced(inputs, **prices)
    start = datetime(2022, 10, 1)
    purchases, redemptions, closures, reviews = [], [], [], []
    for n in range(400):
        at = start + timedelta(minutes=rng.randrange(20 * 24 * 60) // 30 * 30)  # coarse times: many ties
        user = f"u{rng.randrange(12)}"
        kind = rng.random()
        if kind < 0.6:
            purchases.append((user, rng.choice(list(prices)), at.isoformat()))
        elif kind < 0.9:
            redemptions.append((user, f"r{n}", rng.randrange(1, 15), at.isoformat()))
        elif kind < 0.97:
            reviews.append((user, {"type": "review"}, at.isoformat()))
        else:
            closures.append((user, None, at.isoformat()))
    returns = []  # a fifth of the purchases come back, from the same instant to 5 days later (after expiry too)
    for i, (user, _, at) in enumerate(purchases):
        if rng.random() < 0.2:
            back = datetime.fromisoformat(at) + timedelta(minutes=rng.randrange(5 * 24 * 60) // 30 * 30)
            returns.append((user, {"purchase_id": f"purchases:0:{i}"}, back.isoformat()))
    buy(inputs, *purchases)
    redeem(inputs, *redemptions)
    inputs.kafka("users", closures)
    inputs.kafka("returns", returns)
    inputs.kafka("events", reviews)
    inputs.materialize("2022-10-01", "2022-10-20", assets=POINTS)
    until = datetime(2022, 10, 21)
    for user in sorted({p[0] for p in purchases + redemptions + reviews}):
        earns = [
            (
                f"earn:purchases:0:{i}",
                datetime.fromisoformat(at),
                prices[pid],
                datetime.fromisoformat(at[:10]) + timedelta(days=4),
            )
            for i, (who, pid, at) in enumerate(purchases)
            if who == user
        ]
        earns += [  # the campaign's awards: lots of their own beside their purchase's, with its expiry
            (f"bonus:odd:{txn.removeprefix('earn:')}", at, 2, expires) for txn, at, price, expires in earns if price % 2
        ]
        earns += [
            (f"event:review:0:{i}", datetime.fromisoformat(at), 4, datetime.fromisoformat(at[:10]) + timedelta(days=4))
            for i, (who, _, at) in enumerate(reviews)
            if who == user
        ]
        uses = [(rid, datetime.fromisoformat(at), points) for who, rid, points, at in redemptions if who == user]
        shut = [datetime.fromisoformat(at) for who, _, at in closures if who == user]
        back = [
            (f"{lot}:{payload['purchase_id']}", datetime.fromisoformat(at))
            for who, payload, at in returns
            if who == user
            for lot in ("earn", "bonus:odd")
            if lot == "earn" or prices[purchases[int(payload["purchase_id"].split(":")[2])][1]] % 2
        ]
        expected, refused = replay(earns, uses, shut, until, back, timedelta(days=pending_days))
        actual = inputs.query(
            "SELECT txn_id, occurred_at, kind, points FROM points.point_transactions WHERE user_id = $1", [user]
        )
        assert sorted(actual) == sorted(expected), user
        refused_here = inputs.query(
            "SELECT count(*) FROM raw.rejected_records WHERE reason = 'insufficient_points' AND raw LIKE $1",
            [f'%"user_id":"{user}"%'],
        )
        assert refused_here == [(len(refused),)]
    debts_paid_by_later_earns = """SELECT count(*) FROM points.lot_allocations AS piece
        JOIN points.point_transactions AS claw ON claw.txn_id = piece.txn_id AND claw.kind = 'clawback'
        JOIN points.point_transactions AS lot ON lot.txn_id = piece.lot_txn_id AND lot.occurred_at > claw.occurred_at"""
    assert inputs.query(debts_paid_by_later_earns)[0][0] > 0  # the histories reach every rule, debt included


def test_a_late_purchase_that_changes_a_used_lot_writes_revisions(inputs):
    """A purchase synced late into day 1 is taken first by a day-2 use, so the lot that use drew from before has
    more left at its expiry on day 3: the rebuilt days' changed rows are kept, with the reason and balance moves."""
    import dagster as dg

    from loyalty_pipeline.definitions import build_defs
    from loyalty_pipeline_tests.scenarios import settle

    inputs.rules("points: {validity_days: 1}\n")
    priced(inputs, ten=10)
    buy(inputs, ("u", "ten", "2022-10-01T08:00:00"))
    redeem(inputs, ("u", "r1", 6, "2022-10-02T08:00:00"))
    defs, instance, cursors = build_defs(inputs.env()), dg.DagsterInstance.ephemeral(), {}
    inputs.materialize("2022-10-01", "2022-10-03", assets=POINTS)
    settle(defs, instance, cursors)  # the sensors' first tick: the files are built already, nothing changes
    assert inputs.query("SELECT count(*) FROM points.ledger_revisions") == [(0,)]
    buy(inputs, ("u", "ten", "2022-10-01T07:00:00"), file="till-7-offline.jsonl")
    assert settle(defs, instance, cursors) == 1
    assert inputs.query(
        "SELECT change, txn_id, kind, points, day::VARCHAR, balance_change, reason FROM points.ledger_revisions ORDER BY day, txn_id, change"
    ) == [
        (
            "added",
            "earn:purchases:0:1",
            "earn",
            10,
            "2022-10-01",
            10,
            "kafka/purchases/till-7-offline.jsonl (new)",
        ),
        (
            "added",
            "expire:earn:purchases:0:0",
            "expire",
            -10,
            "2022-10-03",
            -10,
            "kafka/purchases/till-7-offline.jsonl (new)",
        ),
        (
            "withdrawn",
            "expire:earn:purchases:0:0",
            "expire",
            -4,
            "2022-10-03",
            -10,
            "kafka/purchases/till-7-offline.jsonl (new)",
        ),
        (
            "added",
            "expire:earn:purchases:0:1",
            "expire",
            -4,
            "2022-10-03",
            -10,
            "kafka/purchases/till-7-offline.jsonl (new)",
        ),
    ]
    assert inputs.query("SELECT lot_txn_id, points FROM points.lot_allocations WHERE txn_id = 'use:r1'") == [
        ("earn:purchases:0:1", 6)
    ]
    assert inputs.query("SELECT balance FROM points.point_balances") == [(0,)]
    rerun = settle(defs, instance, cursors)
    assert rerun == 0 and inputs.query("SELECT count(*) FROM points.ledger_revisions") == [(4,)]


def test_a_moved_in_lot_usable_before_an_own_lot_ahead_of_it_in_the_queue(inputs):
    """Uses take the earliest expiry first among the usable lots. u9's own lot and K1's (moved to u9 by their merge
    on 10-02) expire together; u9's is first in the queue (earned first there) but usable an hour after K1's: a use
    in that hour takes K1's lot, a later one u9's."""
    inputs.rules("points: {validity_days: 30, pending_days: 2}\n")
    priced(inputs, ten=10, twenty=20)
    inputs.kafka("users", [("u9", {"name": "Zoe", "email": "z@x.com"}, "2022-10-01T07:00:00")])
    inputs.kafka(
        "purchases",
        [
            ("K1", {"product_id": "twenty"}, "2022-10-01T09:00:00"),
            ("u9", {"product_id": "ten"}, "2022-10-01T10:00:00"),
            ("K1", {"product_id": "ten", "email": "z@x.com"}, "2022-10-02T08:00:00"),
        ],
    )
    redeem(inputs, ("u9", "r1", 20, "2022-10-03T09:30:00"), ("u9", "r2", 10, "2022-10-03T10:30:00"))
    inputs.materialize("2022-10-01", "2022-10-03", assets=POINTS)
    assert inputs.query("SELECT txn_id, lot_txn_id, points FROM points.lot_allocations WHERE day = '2022-10-03'") == [
        ("use:r1", "merge:earn:purchases:0:0", 20),
        ("use:r2", "earn:purchases:0:1", 10),
    ]
    assert inputs.query("SELECT count(*) FROM raw.rejected_records") == [(0,)]


def test_a_shortened_validity_puts_the_days_lots_ahead_of_the_open_ones(inputs):
    """A lot earned after points.validity_days went from 30 to 2 expires before the older lot: a use takes it first
    once it is earned, and the older lot before."""
    inputs.rules("points: {validity_days: 30}\n")
    priced(inputs, ten=10, four=4)
    buy(inputs, ("u", "ten", "2022-10-01T08:00:00"), ("u", "four", "2022-10-02T08:00:00"))
    redeem(inputs, ("u", "r0", 3, "2022-10-02T07:00:00"), ("u", "r1", 6, "2022-10-02T09:00:00"))
    inputs.materialize("2022-10-01", assets=POINTS)
    shorter = inputs.root / "shorter.yaml"
    shorter.write_text("points: {validity_days: 2}\n")
    inputs.materialize("2022-10-02", assets=POINTS, LOYALTY_CONFIG=str(shorter))
    assert inputs.query("SELECT txn_id, lot_txn_id, points FROM points.lot_allocations ORDER BY ALL") == [
        ("use:r0", "earn:purchases:0:0", 3),
        ("use:r1", "earn:purchases:0:0", 2),
        ("use:r1", "earn:purchases:0:1", 4),
    ]


@pytest.mark.parametrize("pending_days", [0, 1])
def test_the_queue_fold_and_the_list_fold_write_the_same_ledger(inputs, monkeypatch, pending_days):
    """A day's fold keeps a small state (the queue model) unless a customer's lots break its premises; the fold over
    the whole list of lots, run for every customer instead, writes the same rows on random histories with a busy key,
    merges, pending lots, expiries inside the window, returns (debts), refusals and closures."""
    from loyalty_pipeline.domain.points import ledger

    rng = random.Random(11 + pending_days)
    inputs.rules(f"points: {{validity_days: 2, pending_days: {pending_days}}}\n")
    prices = {f"p{n}": n for n in range(1, 8)}
    priced(inputs, **prices)
    inputs.kafka("users", [(f"u{n}", {"name": "N", "email": f"e{n}@x.com"}, "2022-10-01T00:00:00") for n in range(3)])
    start = datetime(2022, 10, 1)
    purchases, redemptions, closures = [], [], []
    for n in range(700):
        day = 2 if n < 300 else rng.randrange(6)  # 300 events of u0 on 10-03
        at = (start + timedelta(days=day, minutes=rng.randrange(24 * 60) // 20 * 20)).isoformat()
        user = "u0" if n < 300 else rng.choice(["u0", "u1", "u2", "K1", "K2", "K3"])
        kind = rng.random() * (0.7 if n < 300 else 1)  # the busy key buys more: its lots pile up ahead of its uses
        if kind < 0.55:
            payload = {"product_id": rng.choice(list(prices))}
            if user.startswith("K") and rng.random() < 0.1:  # an order that ties the key to an account
                payload["email"] = f"e{rng.randrange(3)}@x.com"
            purchases.append((user, payload, at))
        elif kind < 0.98:
            redemptions.append((user, f"r{n}", rng.randrange(1, 40 if n < 300 else 12), at))
        else:
            closures.append((user, None, at))
    returns = [
        (
            user,
            {"purchase_id": f"purchases:0:{i}"},
            (datetime.fromisoformat(at) + timedelta(hours=rng.randrange(60))).isoformat(),
        )
        for i, (user, _, at) in enumerate(purchases)
        if rng.random() < 0.2
    ]
    inputs.kafka("purchases", purchases)
    redeem(inputs, *redemptions)
    inputs.kafka("users", closures, file="closures.jsonl")
    inputs.kafka("returns", returns)
    inputs.materialize("2022-10-01", "2022-10-06", assets=POINTS)
    queue_fold = ledger_tables(inputs)
    inputs.warehouse = inputs.root / "list_fold.duckdb"
    everyone = "CREATE OR REPLACE TEMP TABLE day_list_folded AS SELECT DISTINCT user_id FROM day_queue"
    monkeypatch.setattr(ledger, "DAY_LIST_FOLDED", everyone)
    inputs.materialize("2022-10-01", "2022-10-06", assets=POINTS)
    assert ledger_tables(inputs) == queue_fold
    kinds = {kind for (kind,) in inputs.query("SELECT DISTINCT kind FROM points.point_transactions")}
    assert kinds == {"earn", "use", "expire", "clawback", "merge"}
    assert inputs.query("SELECT count(*) > 20 FROM raw.rejected_records WHERE reason = 'insufficient_points'") == [
        (True,)
    ]
