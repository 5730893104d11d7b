"""Issue 15 in the ledger: a return claws its purchase's points back (own lot, then the other lots earliest expiry
first, then debt the next earns pay), and pending lots are usable only from their `available_at`."""

from loyalty_pipeline_tests.scenarios import POINTS, buy, give_back, priced, redeem

ROWS = """SELECT txn_id, occurred_at::VARCHAR, kind, points FROM points.point_transactions
          ORDER BY occurred_at, CASE kind WHEN 'expire' THEN 0 WHEN 'earn' THEN 1 WHEN 'clawback' THEN 2 ELSE 3 END"""
BALANCES = "SELECT user_id, balance, available, pending, debt FROM points.point_balances ORDER BY user_id"
PIECES = "SELECT txn_id, lot_txn_id, points, day::VARCHAR FROM points.lot_allocations ORDER BY day, txn_id, lot_txn_id"


def refused(inputs) -> list[tuple]:
    return inputs.query(
        "SELECT regexp_replace(location, '^.*/', ''), reason FROM raw.rejected_records "
        "WHERE source = 'points:redemptions' ORDER BY ALL"
    )


def test_a_same_day_return_takes_its_points_from_its_own_pending_lot(inputs):
    inputs.rules("points: {pending_days: 1}\n")
    priced(inputs, coffee=5, cake=100)
    buy(inputs, ("u", "coffee", "2022-10-01T08:00:00"), ("u", "cake", "2022-10-01T09:00:00"))
    give_back(inputs, ("u", {"purchase_id": "purchases:0:1"}, "2022-10-01T12:00:00"))
    inputs.materialize("2022-10-01", assets=POINTS)
    assert inputs.query(ROWS) == [
        ("earn:purchases:0:0", "2022-10-01 08:00:00", "earn", 5),
        ("earn:purchases:0:1", "2022-10-01 09:00:00", "earn", 100),
        ("clawback:purchases:0:1", "2022-10-01 12:00:00", "clawback", -100),
    ]
    assert inputs.query(PIECES) == [("clawback:purchases:0:1", "earn:purchases:0:1", 100, "2022-10-01")]
    assert inputs.query(BALANCES) == [("u", 5, 0, 5, 0)]  # the coffee's 5 are usable from 10-02 08:00
    assert inputs.query(
        "SELECT available_at::VARCHAR, expires_at::VARCHAR, source_ref FROM points.point_transactions WHERE kind = 'earn'"
    ) == [
        ("2022-10-02 08:00:00", "2023-10-02 00:00:00", "purchases:0:0"),
        ("2022-10-02 09:00:00", "2023-10-02 00:00:00", "purchases:0:1"),
    ]


def test_a_return_after_the_points_were_spent_leaves_debt_that_the_next_earn_pays_first(inputs):
    priced(inputs, cake=100)
    buy(inputs, ("u", "cake", "2022-10-01T09:00:00"))
    redeem(inputs, ("u", "r1", 80, "2022-10-01T10:00:00"), ("u", "r2", 30, "2022-10-03T10:00:00"))
    give_back(inputs, ("u", {"purchase_id": "purchases:0:0"}, "2022-10-02T09:00:00"))
    inputs.materialize("2022-10-01", "2022-10-02", assets=POINTS)
    assert inputs.query(BALANCES) == [("u", -80, 0, 0, 80)]
    buy(inputs, ("u", "cake", "2022-10-03T09:00:00"), file="later.jsonl")
    inputs.materialize("2022-10-03", assets=POINTS)
    assert inputs.query(ROWS) == [
        ("earn:purchases:0:0", "2022-10-01 09:00:00", "earn", 100),
        ("use:r1", "2022-10-01 10:00:00", "use", -80),
        ("clawback:purchases:0:0", "2022-10-02 09:00:00", "clawback", -100),
        ("earn:purchases:0:1", "2022-10-03 09:00:00", "earn", 100),
    ]
    assert inputs.query(PIECES) == [
        ("use:r1", "earn:purchases:0:0", 80, "2022-10-01"),
        ("clawback:purchases:0:0", "earn:purchases:0:0", 20, "2022-10-02"),  # what was left of its own lot
        ("clawback:purchases:0:0", "earn:purchases:0:1", 80, "2022-10-03"),  # the debt, paid by the next earn
    ]
    assert refused(inputs) == [("redemptions.jsonl:2", "insufficient_points")]  # 30 asked, 20 left after the debt
    assert inputs.query(BALANCES) == [("u", 20, 20, 0, 0)]


def test_a_return_after_its_lot_expired_takes_from_the_other_lots_earliest_expiry_first(inputs):
    inputs.rules("points: {validity_days: 1}\n")
    priced(inputs, cake=6, coffee=5, tea=4)
    buy(
        inputs,
        ("u", "cake", "2022-10-01T09:00:00"),  # expires 10-03 00:00
        ("u", "tea", "2022-10-03T08:00:00"),  # expires 10-05 00:00
        ("u", "coffee", "2022-10-02T10:00:00"),  # expires 10-04 00:00
    )
    give_back(inputs, ("u", {"purchase_id": "purchases:0:0"}, "2022-10-03T12:00:00"))
    inputs.materialize("2022-10-01", "2022-10-03", assets=POINTS)
    assert inputs.query(ROWS)[-1] == ("clawback:purchases:0:0", "2022-10-03 12:00:00", "clawback", -6)
    assert inputs.query(PIECES)[-3:] == [
        ("clawback:purchases:0:0", "earn:purchases:0:1", 1, "2022-10-03"),  # tea, expiring 10-05: the rest
        ("clawback:purchases:0:0", "earn:purchases:0:2", 5, "2022-10-03"),  # coffee, expiring 10-04: first
        ("expire:earn:purchases:0:0", "earn:purchases:0:0", 6, "2022-10-03"),
    ]
    assert inputs.query(BALANCES) == [("u", 3, 3, 0, 0)]


def test_an_expired_return_with_no_other_lot_is_all_debt(inputs):
    inputs.rules("points: {validity_days: 1}\n")
    priced(inputs, cake=6)
    buy(inputs, ("u", "cake", "2022-10-01T09:00:00"))
    give_back(inputs, ("u", {"purchase_id": "purchases:0:0"}, "2022-10-03T00:00:00"))  # the instant it expired
    inputs.materialize("2022-10-01", "2022-10-03", assets=POINTS)
    assert inputs.query(ROWS)[1:] == [
        ("expire:earn:purchases:0:0", "2022-10-03 00:00:00", "expire", -6),
        ("clawback:purchases:0:0", "2022-10-03 00:00:00", "clawback", -6),
    ]
    assert inputs.query(BALANCES) == [("u", -6, 0, 0, 6)]


def test_at_one_instant_the_return_comes_before_the_use(inputs):
    priced(inputs, coffee=5, cake=100)
    buy(inputs, ("u", "coffee", "2022-10-01T08:00:00"), ("u", "cake", "2022-10-01T09:00:00"))
    give_back(inputs, ("u", {"purchase_id": "purchases:0:1"}, "2022-10-01T12:00:00"))
    redeem(inputs, ("u", "r1", 10, "2022-10-01T12:00:00"), ("u", "r2", 5, "2022-10-01T12:00:00"))
    inputs.materialize("2022-10-01", assets=POINTS)
    assert refused(inputs) == [("redemptions.jsonl:1", "insufficient_points")]  # only the coffee's 5 were left
    assert inputs.query(ROWS)[2:] == [
        ("clawback:purchases:0:1", "2022-10-01 12:00:00", "clawback", -100),
        ("use:r2", "2022-10-01 12:00:00", "use", -5),
    ]


def test_pending_lots_become_usable_at_their_instant_from_midnight_or_mid_day(inputs):
    inputs.rules("points: {pending_days: 2}\n")
    priced(inputs, coffee=5, cake=10)
    buy(inputs, ("u", "coffee", "2022-10-01T00:00:00"), ("u", "cake", "2022-10-01T14:00:00"))
    redeem(
        inputs,
        ("u", "r1", 5, "2022-10-02T23:59:59"),  # refused: both lots pending
        ("u", "r2", 5, "2022-10-03T00:00:00"),  # the coffee's lot is usable from this midnight
        ("u", "r3", 1, "2022-10-03T13:59:59"),  # refused: the cake's lot is pending until 14:00
        ("u", "r4", 10, "2022-10-03T14:00:00"),
    )
    inputs.materialize("2022-10-01", "2022-10-02", assets=POINTS)
    assert inputs.query(BALANCES) == [("u", 15, 0, 15, 0)]
    inputs.materialize("2022-10-03", assets=POINTS)
    assert refused(inputs) == [
        ("redemptions.jsonl:1", "insufficient_points"),
        ("redemptions.jsonl:3", "insufficient_points"),
    ]
    assert inputs.query(PIECES) == [
        ("use:r2", "earn:purchases:0:0", 5, "2022-10-03"),
        ("use:r4", "earn:purchases:0:1", 10, "2022-10-03"),
    ]
    assert inputs.query(BALANCES) == [("u", 0, 0, 0, 0)]


def test_a_merged_profiles_debt_moves_to_the_person_and_is_taken_from_their_lots(inputs):
    """K1 (a till key) earns 10, spends them and returns the purchase: 10 owed. On 10-03 K1 turns out to be u9 (an
    order keyed K1 carries u9's email): the debt moves with the merge and u9's open lot covers it at 00:00."""
    priced(inputs, ten=10, twenty=20)
    inputs.kafka("users", [("u9", {"name": "Zoe", "email": "z@x.com"}, "2022-10-01T07:00:00")])
    inputs.kafka(
        "purchases",
        [
            ("K1", {"product_id": "ten"}, "2022-10-01T08:00:00"),
            ("u9", {"product_id": "twenty"}, "2022-10-02T08:00:00"),
            ("K1", {"product_id": "ten", "email": "z@x.com"}, "2022-10-03T08:00:00"),
        ],
    )
    redeem(inputs, ("K1", "r1", 10, "2022-10-01T09:00:00"))
    give_back(inputs, ("K1", {"purchase_id": "purchases:0:0"}, "2022-10-02T09:00:00"))
    inputs.materialize("2022-10-01", "2022-10-03", assets=POINTS)
    assert inputs.query(
        "SELECT txn_id, user_id, points FROM points.point_transactions WHERE kind = 'merge' ORDER BY ALL"
    ) == [
        ("merge-out:clawback:purchases:0:0", "K1", 10),
        ("merge:clawback:purchases:0:0", "u9", -10),
    ]
    assert [piece for piece in inputs.query(PIECES) if piece[3] == "2022-10-03"] == [
        ("clawback:purchases:0:0", "merge-out:clawback:purchases:0:0", 10, "2022-10-03"),  # settled on K1
        ("merge:clawback:purchases:0:0", "earn:purchases:0:1", 10, "2022-10-03"),  # u9's lot covers it
    ]
    assert inputs.query(BALANCES) == [("u9", 20, 20, 0, 0)]  # 20 + 10 earned, 10 owed by K1
