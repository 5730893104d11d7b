"""Cost of one more ledger day after 30 and after 365 days of history (SPEC §5.2; run by `make bench`).

Synthetic inputs are written straight into the warehouse tables the ledger reads (enriched purchases,
redemptions, returns of 3% of the purchases 0-9 days later, user tombstones), so this measures the ledger's SQL
alone, the same way at both history lengths.
"""

import argparse
import json
import statistics
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb

from loyalty_pipeline import identity, ledger, returns
from loyalty_pipeline.assets.loyalty import ENRICHED_DDL
from loyalty_pipeline.chain import open_window
from loyalty_pipeline.config import Rules
from loyalty_pipeline.kafka import TOPICS, table_ddl
from loyalty_pipeline.warehouse import REJECTED_DDL

START = date(2023, 1, 1)


def synthesize(conn, customers: int, per_day: int, days: int) -> None:
    conn.execute(
        ENRICHED_DDL
        + table_ddl(TOPICS["redemptions"])
        + table_ddl(TOPICS["users"])
        + ledger.DDL
        + returns.DDL
        + REJECTED_DDL
        + identity.DDL  # an empty id graph: every key is its own person
    )
    conn.execute(
        """
        INSERT INTO loyalty.enriched_purchases
        SELECT 'p' || i, 'p' || i, 'u' || (hash(i) % $customers), 'x', 'c', (hash(i * 7) % 5000) / 100,
               $start::TIMESTAMP + to_milliseconds(i * (86400000 // $per_day)), 'kafka', NULL,
               ($start::TIMESTAMP + to_milliseconds(i * (86400000 // $per_day)))::DATE, 'u' || (hash(i) % $customers),
               NULL
        FROM range($total) t(i)
        """,
        {"customers": customers, "per_day": per_day, "start": START, "total": per_day * days},
    )
    conn.execute(
        """
        INSERT INTO raw.redemptions
        SELECT 'u' || (hash(i * 13) % $customers), 'r' || i, 1 + hash(i) % 60, false, 0, i,
               $start::TIMESTAMP + to_milliseconds(i * (86400000 // ($per_day // 10))), 
               ($start::TIMESTAMP + to_milliseconds(i * (86400000 // ($per_day // 10))))::DATE, 'bench'
        FROM range($total // 10) t(i)
        """,
        {"customers": customers, "per_day": per_day, "start": START, "total": per_day * days},
    )
    conn.execute(
        """
        INSERT INTO loyalty.returns
        SELECT 'returns:0:' || purchase_id, purchase_id, user_id, returned_at, returned_at::DATE
        FROM (SELECT purchase_id, user_id, purchased_at + to_minutes((hash(purchase_id) % (10 * 1440))::BIGINT) AS returned_at
              FROM loyalty.enriched_purchases WHERE hash(purchase_id || 'back') % 100 < 3)
        """
    )
    conn.execute(
        """UPDATE loyalty.enriched_purchases AS p SET returned_at = r.returned_at
           FROM loyalty.returns AS r WHERE r.purchase_id = p.purchase_id"""
    )


REVISION = {"run_id": "bench", "revised_at": datetime(2024, 1, 1), "reason": "bench"}


def build(conn, day: date) -> None:
    """Day `day` of the ledger, as the asset builds it: a window of one day on the days before it."""
    window = open_window(conn, "points.ledger_days", "point ledger", "ledger", day, day + timedelta(days=1), None)
    ledger.build_day(conn, window, day, Rules(), REVISION)


def one_more_day(conn, history_days: int, repeats: int) -> float:
    """Median seconds of building day `history_days` (0-based) on top of the days before it (a repeat rebuilds it,
    identical: the revision finds nothing to keep)."""
    day = START + timedelta(days=history_days)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        build(conn, day)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--per-day", type=int, default=3_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        conn = duckdb.connect(str(Path(tmp) / "ledger.duckdb"))
        synthesize(conn, args.customers, args.per_day, 367)
        results = {}
        for day_number in range(366):
            if day_number in (30, 365):
                results[f"day_after_{day_number}_days_s"] = one_more_day(conn, day_number, repeats=5)
            else:
                build(conn, START + timedelta(days=day_number))
        results["ratio_365_vs_30"] = results["day_after_365_days_s"] / results["day_after_30_days_s"]
        results["ledger_rows"] = conn.execute("SELECT count(*) FROM points.point_transactions").fetchall()[0][0]
        results["clawbacks"] = conn.execute(
            "SELECT count(*) FROM points.point_transactions WHERE kind = 'clawback'"
        ).fetchall()[0][0]
        results.update(customers=args.customers, purchases_per_day=args.per_day)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
