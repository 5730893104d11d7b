"""Six days of every input, with a late file, a duplicated export and corrupt lines (`files`), landed in any order
(`land`), and the tables the batch answer is compared on: the arrival-order and daemon tests' scenario."""

import json
import random
from datetime import date, timedelta

import duckdb

from loyalty_pipeline_tests.scenarios import envelope

DAYS = [date(2024, 3, 1) + timedelta(days=n) for n in range(6)]


RULES = """
points: {validity_days: 2}
journeys:
  - id: tea_trial
    audience: "list_contains(products_purchased, 'coffee')"
    goal: "list_contains(products_purchased, 'tea')"
    stages:
      - id: nudge
        steps: [{activation: tea_coupon}, {wait_days: 2}]
        exit_criteria: [{name: lapsed, when: "days_since_last_purchase > 2"}]
      - id: reward
        entry: "points_balance >= 5"
        steps: [{activation: double_points}]
  - id: offer                   # issue 31: a decision, an A/B test with control, re-entry and a holdout
    audience: "purchase_count > 0"
    goal: "purchase_count >= 4"
    reentry: always
    after_days: 1
    holdout_pct: 20
    stages:
      - id: s
        steps:
          - decision:
              branches:
                - {name: tea, when: "list_contains(products_purchased, 'tea')", steps: [{activation: tea_offer}]}
                - {name: big, when: "total_spend > 20", steps: []}
              max_wait_days: 1
          - ab_test: {variants: [{name: a, weight: 50, steps: [{activation: coupon}]}], control: 50}
          - {wait_days: 1}
"""


TABLES = [
    "raw.users", "raw.products", "raw.purchases", "raw.user_activity", "raw.redemptions", "raw.customers",
    "raw.historical_purchases", "raw.rejected_records", "loyalty.all_products", "loyalty.enriched_purchases",
    "loyalty.sales_totals", "loyalty.caffeine_index", "loyalty.promotions", "points.point_transactions",
    "points.lot_allocations", "points.point_balances", "customer.profile_360", "customer.recommendations",
    "journey.journey_state", "journey.activations", "journey.reached_activations", "journey.goal_report",
    "identity.merges",
]  # fmt: skip


def files(seed: int) -> dict[str, str]:
    """Every input file (path under the data dir -> text) of six days: a file per topic and day, a late file for
    day 2 holding purchases and a price change, a duplicated export, corrupt lines, two historical CSVs."""
    rng = random.Random(seed)
    users = [f"u{n}" for n in range(1, 7)]
    offsets: dict[str, int] = {}
    out: dict[str, list[str]] = {}

    def message(path: str, topic: str, key, payload, at: str) -> None:
        offsets[topic] = offsets.get(topic, -1) + 1
        out.setdefault(path, []).append(json.dumps(envelope(topic, key, payload, at, 0, offsets[topic])))

    def at_day(n: int, hour: int) -> str:
        return f"{DAYS[n]}T{hour:02d}:00:00.000"

    for day in DAYS:

        def at(hour: int, day: date = day) -> str:
            return f"{day}T{hour:02d}:00:00.000"

        if day == DAYS[0]:
            for product, price in [("coffee", 3), ("tea", 4), ("cake", 12)]:
                message(
                    f"kafka/products/products-{day}.jsonl",
                    "products",
                    product,
                    {"category": "c", "price": price},
                    at(0),
                )
            for user in users:
                message(f"kafka/users/users-{day}.jsonl", "users", user, {"name": user.upper()}, at(1))
        if day == DAYS[2]:
            message(f"kafka/products/products-{day}.jsonl", "products", "coffee", {"category": "c", "price": 5}, at(12))
        if day == DAYS[4]:
            message(f"kafka/users/users-{day}.jsonl", "users", "u6", None, at(12))  # account closed
        for n in range(rng.randrange(3, 7)):
            user = rng.choice(users)
            path = f"kafka/purchases/purchases-{day}.jsonl"
            message(
                path,
                "purchases",
                user,
                {"product_id": rng.choice(["coffee", "tea", "cake"]), "order_id": f"{day}-{n % 3}"},
                at(rng.randrange(8, 20)),
            )
            message(
                f"kafka/user_activity/user_activity-{day}.jsonl",
                "user_activity",
                user,
                {"event_type": "view", "product_id": rng.choice(["tea", "cake"])},
                at(21),
            )
        if day >= DAYS[1]:
            message(
                f"kafka/redemptions/redemptions-{day}.jsonl",
                "redemptions",
                rng.choice(users),
                {"redemption_id": f"r{day}", "points": rng.choice([3, 8, 30])},
                at(18),
            )
    # a card key with no account, and customer u8, are both sent the coupon before day 4, when an order keyed by the
    # card carries u8's email: two profiles merge, and both earlier activations stay
    message(f"kafka/purchases/purchases-{DAYS[0]}.jsonl", "purchases", "K5", {"product_id": "coffee"}, at_day(0, 7))
    message(f"kafka/purchases/purchases-{DAYS[1]}.jsonl", "purchases", "u8", {"product_id": "coffee"}, at_day(1, 7))
    message(
        f"kafka/purchases/purchases-{DAYS[3]}.jsonl",
        "purchases",
        "K5",
        {"product_id": "cake", "email": "u8@x"},
        at_day(3, 7),
    )
    # late: a till that was offline on day 2 syncs after later days, with a price change it had seen
    late = "kafka/purchases/purchases-late.jsonl"
    message(late, "purchases", "u1", {"product_id": "coffee", "order_id": "late"}, f"{DAYS[1]}T09:00:00.000")
    message(late, "purchases", "u2", {"product_id": "cake"}, f"{DAYS[1]}T09:30:00.000")
    message(
        "kafka/products/products-late.jsonl",
        "products",
        "tea",
        {"category": "c", "price": 6},
        f"{DAYS[1]}T08:00:00.000",
    )
    out[late].append("{not json")
    out["kafka/purchases/purchases-again.jsonl"] = out[f"kafka/purchases/purchases-{DAYS[3]}.jsonl"]  # at least once
    header = "order_id,user_id,product_id,price,purchased_at"
    texts = {path: "".join(line + "\n" for line in lines) for path, lines in out.items()}
    texts[f"s3/historical_purchases/{DAYS[1]}.csv"] = (
        f"{header}\nh1,u3,coffee,2.50,{DAYS[1]}T07:00:00Z\nh1,u3,tea,N/A,{DAYS[1]}T07:00:00Z\n"
    )
    texts[f"s3/historical_purchases/{DAYS[3]}.csv"] = f"{header}\nh2,u7,cake,40.00,{DAYS[3]}T07:00:00Z\n"
    texts["s3/customers/customers.csv"] = (
        "user_id,name,email,signup_date\nu1,Una,u1@x,2024-01-01\nu7,Sev,u7@x,2024-01-01\nu8,Ute,u8@x,2024-01-01\n"
    )
    return texts


def land(inputs, texts: dict[str, str], paths: list[str]) -> None:
    for path in paths:
        target = inputs.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(texts[path])


def table_rows(warehouse, table: str) -> list[str]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return sorted(repr(row) for row in conn.execute(f"SELECT * FROM {table}").fetchall())
