"""The recommendation SQL against the rule of SPEC §5.3 replayed in plain Python, on random baskets."""

import random
from collections import Counter

import duckdb
import pytest

from loyalty_pipeline import identity, recommend
from loyalty_pipeline.assets.loyalty import ENRICHED_DDL


def by_the_rule(orders: dict[str, tuple[str, list[str]]], interests: dict[str, list[str]]) -> set[tuple]:
    """score(u, c) = orders by other customers holding c and one of u's interests; interests never candidates."""
    rows = set()
    for user, interest in interests.items():
        scores = Counter()
        for owner, items in orders.values():
            if owner != user and set(items) & set(interest):
                scores.update(set(items) - set(interest))
        top = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:5]
        rows |= {(user, product, score, rank) for rank, (product, score) in enumerate(top, start=1)}
    return rows


def recommended(orders, interests) -> set[tuple]:
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA loyalty; CREATE SCHEMA customer")
    conn.execute(identity.DDL)  # an empty id graph: every user_id is its own person
    conn.execute(ENRICHED_DDL)
    conn.execute("CREATE TABLE customer.profile_360 (user_id VARCHAR, activity_since_last_purchase VARCHAR[])")
    conn.executemany(
        "INSERT INTO loyalty.enriched_purchases (purchase_id, order_id, user_id, product_id, purchased_at, source, day) "
        "VALUES (?, ?, ?, ?, TIMESTAMP '2024-06-01 10:00', 'kafka', DATE '2024-06-01')",
        [
            (f"{order_id}:{n}", order_id, user, product)
            for order_id, (user, items) in orders.items()
            for n, product in enumerate(items)
        ],
    )
    conn.executemany("INSERT INTO customer.profile_360 VALUES (?, ?)", list(interests.items()))
    recommend.update(conn)
    return set(conn.execute("SELECT user_id, product_id, score, rank FROM customer.recommendations").fetchall())


@pytest.mark.parametrize("seed", range(6))
def test_recommendations_match_the_rule_on_random_baskets(seed, monkeypatch):
    monkeypatch.setattr(recommend, "ITEMSETS_PER_BATCH", 40 * (seed + 1))  # several batches, boundaries vary
    rng = random.Random(seed)
    products = [f"p{n:02d}" for n in range(14)]
    users = [f"u{n}" for n in range(25)]
    orders = {}
    for n in range(120):
        # mostly small baskets, some above SMALL_ORDER (counted directly), repeats of a product in one order
        size = rng.choice([1, 1, 2, 2, 3, 4, 5, 6, recommend.SMALL_ORDER + 1, 11])
        orders[f"o{n}"] = (rng.choice(users), [rng.choice(products) for _ in range(size)])
    interests = {user: rng.sample(products + ["never_bought"], rng.choice([0, 1, 1, 2, 3, 5, 9])) for user in users}
    expected = by_the_rule(orders, interests)
    assert len(expected) > 60
    assert recommended(orders, interests) == expected


def test_own_orders_lower_a_candidate_below_others():
    # ann's own orders make 'jam' the most common companion of tea; only other customers' orders count
    orders = {
        "o1": ("ann", ["tea", "jam"]),
        "o2": ("ann", ["tea", "jam"]),
        "o3": ("ann", ["tea", "jam"]),
        "o4": ("bob", ["tea", "jam"]),
        "o5": ("bob", ["tea", "honey"]),
        "o6": ("cid", ["tea", "honey"]),
    }
    assert recommended(orders, {"ann": ["tea"]}) == {("ann", "honey", 2, 1), ("ann", "jam", 1, 2)}
