"""The point ledger on Spark (LOYALTY_ENGINE=spark) gives DuckDB's tables where order decides: lots that expire while
uses draw on them (short validity), several lots with one expiry, a use and an expiry at the same instant, refused
redemptions, returns that leave debts, merges and pending lots."""

import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from loyalty_pipeline_tests.scenarios import POINTS, Inputs, differences, priced, redeem

DAYS = ("2022-10-01", "2022-10-04")


def tied_short_lived_points(root: Path, seed: int) -> Inputs:
    """Four days of random events on a few hours (many at one instant; every day's lots expire together, two days
    later, at a midnight when uses come too), a fifth of the purchases returned, and an order on 10-03 that ties card
    K1 to account u1, whose pending lots then move to u1."""
    rng = random.Random(seed)
    inputs = Inputs(root)
    inputs.rules("points: {validity_days: 1, pending_days: 1}\n")
    prices = {f"p{n}": n for n in (3, 5, 8, 13)}
    priced(inputs, **prices)
    inputs.kafka("users", [(f"u{n}", {"name": "N", "email": f"e{n}@x.com"}, "2022-10-01T00:00:00") for n in range(3)])
    start = datetime(2022, 10, 1)
    purchases, redemptions, closures = [], [], []
    for n in range(260):
        at = (start + timedelta(days=rng.randrange(4), hours=rng.choice([0, 0, 9, 9, 12, 18]))).isoformat()
        user = rng.choice(["u0", "u0", "u1", "u2", "K1", "K2"])
        kind = rng.random()
        if kind < 0.5:
            payload = {"product_id": rng.choice(list(prices))}
            purchases.append((user, payload, at))
        elif kind < 0.98:
            redemptions.append((user, f"r{n}", rng.randrange(1, 30), at))
        else:
            closures.append((user, None, at))
    purchases += [  # u3: two lots expiring together at 10-03 00:00, when a use comes; K1 turns out to be u1
        ("u3", {"product_id": "p5"}, "2022-10-01T09:00:00"),
        ("u3", {"product_id": "p8"}, "2022-10-01T09:00:00"),
        ("u3", {"product_id": "p13"}, "2022-10-02T00:00:00"),
        ("K1", {"product_id": "p8", "email": "e1@x.com"}, "2022-10-03T09:00:00"),
    ]
    redemptions += [("u3", "a1", 4, "2022-10-03T00:00:00"), ("u3", "a2", 40, "2022-10-03T00:00:00")]
    returns = [
        (
            user,
            {"purchase_id": f"purchases:0:{i}"},
            (datetime.fromisoformat(at) + timedelta(hours=rng.choice([0, 9, 30]))).isoformat(),
        )
        for i, (user, _, at) in enumerate(purchases)
        if rng.random() < 0.2
    ]
    inputs.kafka("purchases", purchases)
    redeem(inputs, *redemptions)
    inputs.kafka("users", closures, file="closures.jsonl")
    inputs.kafka("returns", returns)
    return inputs


@pytest.mark.e2e  # whole pipeline runs on both engines
def test_tied_short_lived_points_give_duckdbs_ledger_on_spark(tmp_path: Path, spark_session):
    on_duckdb = tied_short_lived_points(tmp_path, seed=5)
    on_spark = Inputs(tmp_path)
    on_duckdb.warehouse, on_spark.warehouse = tmp_path / "duckdb.duckdb", tmp_path / "spark.duckdb"
    on_duckdb.materialize(*DAYS, assets=POINTS)
    on_spark.materialize(*DAYS, assets=POINTS, LOYALTY_ENGINE="spark")
    assert differences(on_duckdb.warehouse, on_spark.warehouse) == {}
    # the data reaches every rule the order decides
    assert on_duckdb.query(
        """SELECT kind, count(*) > 3 FROM points.point_transactions GROUP BY kind
           UNION ALL SELECT 'refused', count(*) > 10 FROM raw.rejected_records WHERE reason = 'insufficient_points'
           UNION ALL SELECT 'lots expiring together', max(lots) > 3
                     FROM (SELECT count(*) AS lots FROM points.point_transactions WHERE kind = 'expire'
                           GROUP BY user_id, occurred_at)
           UNION ALL SELECT 'use at an expiry', count(*) > 0 FROM points.point_transactions AS used
                     JOIN points.point_transactions AS gone ON gone.user_id = used.user_id
                      AND gone.occurred_at = used.occurred_at AND gone.kind = 'expire'
                     WHERE used.kind = 'use'
           ORDER BY ALL"""
    ) == [
        ("clawback", True),
        ("earn", True),
        ("expire", True),
        ("lots expiring together", True),
        ("merge", True),
        ("refused", True),
        ("use", True),
        ("use at an expiry", True),
    ]
