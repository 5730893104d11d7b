"""Time of one journey day for N customers in 4 journeys (SPEC §5.4 and issue 31; run by `make bench`).

Synthetic warehouse tables (purchases, ledger, users, clicks) are written straight into DuckDB, then journey
days are built in order; the JSON reports each day's seconds and the state size.
"""

import argparse
import json
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import yaml

from loyalty_pipeline.defs.customers import CUSTOMERS_DDL
from loyalty_pipeline.domain.config import Rules
from loyalty_pipeline.domain.identity import identity
from loyalty_pipeline.domain.ingest.kafka import TOPICS, table_ddl
from loyalty_pipeline.domain.journey import journeys, totals
from loyalty_pipeline.domain.loyalty import returns, tiers
from loyalty_pipeline.domain.loyalty.loyalty import ENRICHED_DDL
from loyalty_pipeline.domain.loyalty.rules_sql import load_tiers
from loyalty_pipeline.domain.points import ledger
from loyalty_pipeline.lib.chain import open_window

START = date(2024, 1, 1)
JOURNEYS = yaml.safe_load("""
- id: tea_trial
  audience: "list_contains(products_purchased, 'p1')"
  goal: "list_contains(products_purchased, 'p2')"
  stages:
    - {id: nudge, steps: [{activation: coupon}, {wait_days: 3}], exit_criteria: [{name: lapsed, when: "days_since_last_purchase > 20"}]}
    - {id: reward, entry: "total_spend > 50", steps: [{activation: double_points}]}
- id: big_spenders
  audience: "reward_level IN ('SILVER', 'GOLD')"
  goal: "points_balance < 10"
  stages:
    - {id: thank, steps: [{activation: mail}, {wait_days: 1}, {activation: reminder}]}
- id: second_purchase
  audience: "purchase_count = 1"
  goal: "purchase_count >= 2"
  stages:
    - {id: welcome, steps: [{activation: welcome_mail}, {wait_days: 7}, {activation: discount}]}
    - {id: last_try, entry: "days_since_last_purchase > 14", steps: [{activation: last_chance}]}
- id: offer
  audience: "purchase_count >= 1"
  goal: "purchase_count >= 3"
  reentry: unless_goal
  after_days: 3
  holdout_pct: 10
  stages:
    - id: s
      steps:
        - decision:
            branches: [{name: big, when: "total_spend >= 100", steps: [{activation: premium}]}]
            else: {steps: [{activation: starter}]}
        - ab_test:
            variants: [{name: a, weight: 45, steps: [{activation: coupon}]}, {name: b, weight: 45, steps: [{activation: points}]}]
            control: 10
        - wait_days: 2
""")


def synthesize(conn, customers: int, purchases: int, days: int) -> None:
    conn.execute(
        ENRICHED_DDL
        + CUSTOMERS_DDL
        + ledger.DDL
        + tiers.DDL  # no tier changes: every earn at 1x
        + returns.DDL  # no returns
        + identity.DDL  # an empty id graph: every key is its own person
        + "".join(table_ddl(TOPICS[t]) for t in ("users", "user_activity"))
    )
    conn.execute(
        """INSERT INTO loyalty.enriched_purchases
           SELECT 'p' || i, 'p' || i, 'u' || (hash(i) % $customers), 'p' || (hash(i * 3) % 50), 'c',
                  (hash(i * 7) % 20000) / 100, ts, 'kafka', NULL, ts::DATE, 'u' || (hash(i) % $customers), NULL
           FROM (SELECT i, $start::TIMESTAMP + to_milliseconds(i * (86400000 * $days // $purchases)) AS ts
                 FROM range($purchases) t(i))""",
        {"customers": customers, "purchases": purchases, "days": days, "start": START},
    )
    conn.execute(
        """INSERT INTO points.point_transactions
           SELECT 'earn:' || purchase_id, user_id, purchased_at, 'earn', floor(price)::BIGINT,
                  (day + 366)::TIMESTAMP, purchase_id, day, NULL
           FROM loyalty.enriched_purchases WHERE price >= 1"""
    )


ONE_DAY = timedelta(days=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--purchases", type=int, default=3_000_000)
    parser.add_argument("--days", type=int, default=10, help="at least 2 (the first day is not in the median)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.days < 2:
        parser.error("--days must be at least 2")
    rules = Rules.model_validate({"journeys": JOURNEYS})
    with tempfile.TemporaryDirectory() as tmp:
        conn = duckdb.connect(str(Path(tmp) / "journeys.duckdb"))
        synthesize(conn, args.customers, args.purchases, args.days)
        conn.execute(journeys.DDL)
        load_tiers(conn, rules)
        journeys.load_definitions(conn, rules.journeys)
        seconds = []
        totals_as_of = totals.restore_profile_totals(conn, START)  # none: the first day sums from the start
        for n in range(args.days):
            started = time.perf_counter()
            day = START + timedelta(days=n)
            window = open_window(conn, "journey.journey_days", "journey state", "state", day, day + ONE_DAY, None)
            journeys.build_day(conn, rules, window, day, totals_as_of)
            totals_as_of = day
            seconds.append(time.perf_counter() - started)
        results = {
            "customers": args.customers,
            "purchases": args.purchases,
            "journeys": len(rules.journeys),
            "day_seconds": [round(s, 3) for s in seconds],
            "median_day_s": round(statistics.median(seconds[1:]), 3),
            "state_rows": conn.execute("SELECT count(*) FROM journey.journey_state").fetchall()[0][0],
            "customers_in_journeys": conn.execute(
                "SELECT count(*) FROM (SELECT DISTINCT journey_id, customer_id FROM journey.journey_state)"
            ).fetchall()[0][0],
        }
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
