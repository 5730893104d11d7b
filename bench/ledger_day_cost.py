"""Cost of one more ledger day after 30 and after 365 days of history (SPEC §5.2; run by `make bench`).

Synthetic inputs are written straight into the warehouse tables the ledger reads (enriched purchases,
redemptions, returns of 3% of the purchases 0-9 days later, user tombstones), so this measures the ledger's SQL
alone, the same way at both history lengths.

Then the busy person: one key with `--busy-events` events in one day (nine purchases to one redemption, a few
returns), nobody else; that one ledger day is timed in a child process, killed after `--busy-timeout` seconds.
The fold over one person's events must stay near linear: under 10 s for 10,000 events.

    python bench/ledger_day_cost.py --customers 50 --per-day 20 --short-history 2 --long-history 4 --busy-events 200
    (the smallest scale, seconds: what the smoke test runs)
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb

from loyalty_pipeline.domain.config import Rules
from loyalty_pipeline.domain.identity import identity
from loyalty_pipeline.domain.ingest.kafka import TOPICS, table_ddl
from loyalty_pipeline.domain.loyalty import returns, tiers
from loyalty_pipeline.domain.loyalty.loyalty import ENRICHED_DDL
from loyalty_pipeline.domain.points import ledger
from loyalty_pipeline.lib.chain import open_window
from loyalty_pipeline.lib.warehouse import REJECTED_DDL

START = date(2023, 1, 1)


def create_tables(conn) -> None:
    conn.execute(
        ENRICHED_DDL
        + table_ddl(TOPICS["redemptions"])
        + table_ddl(TOPICS["users"])
        + table_ddl(TOPICS["events"])  # none: no event points
        + ledger.DDL
        + tiers.DDL  # no tier changes: every earn at 1x
        + returns.DDL
        + REJECTED_DDL
        + identity.DDL  # an empty id graph: every key is its own person
    )


def synthesize(conn, customers: int, per_day: int, days: int) -> None:
    create_tables(conn)
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


def synthesize_busy_person(conn, events: int) -> None:
    """One person with `events` ledger events in one day (START): nine purchases to one redemption, plus a return
    of every 30th purchase later that day; nobody else."""
    create_tables(conn)
    conn.execute(
        """
        INSERT INTO loyalty.enriched_purchases
        SELECT 'b' || i, 'b' || i, 'busy', 'x', 'c', 1 + (hash(i * 7) % 4900) / 100,
               $start::TIMESTAMP + to_milliseconds(i * (86400000 // $events)), 'kafka', NULL, $start, 'busy',
               CASE WHEN i % 30 = 0 THEN $start::TIMESTAMP + to_milliseconds(i * (86400000 // $events) + 3600000) END
        FROM range($events) t(i) WHERE i % 10 <> 9
        """,
        {"events": events, "start": START},
    )
    conn.execute(
        """
        INSERT INTO raw.redemptions
        SELECT 'busy', 'rb' || i, 1 + hash(i) % 200, false, 0, i,
               $start::TIMESTAMP + to_milliseconds(i * (86400000 // $events)), $start, 'bench'
        FROM range($events) t(i) WHERE i % 10 = 9
        """,
        {"events": events, "start": START},
    )
    conn.execute(
        """
        INSERT INTO loyalty.returns
        SELECT 'returns:0:' || purchase_id, purchase_id, user_id, returned_at, returned_at::DATE
        FROM loyalty.enriched_purchases WHERE returned_at::DATE = $start
        """,
        {"start": START},
    )


def busy_person_day(events: int, folder: Path) -> dict:
    """Seconds of the one ledger day of a person with `events` events that day, in a warehouse capped at the
    pipeline's default memory limit."""
    conn = duckdb.connect(str(folder / "busy.duckdb"), config={"memory_limit": "1GB"})
    conn.execute("SET enable_progress_bar = false")  # its bar would go to stdout, which carries the result
    synthesize_busy_person(conn, events)
    started = time.perf_counter()
    build(conn, START)
    seconds = time.perf_counter() - started
    kinds = dict(
        conn.execute("SELECT kind, count(*) FROM points.point_transactions GROUP BY kind ORDER BY kind").fetchall()
    )
    return {"day_s": round(seconds, 3), "ledger_rows_by_kind": kinds}


def busy_person(events: int, timeout: float) -> dict:
    """`busy_person_day` in a child process, killed after `timeout` seconds: a fold that hangs is reported, not
    waited for."""
    result = {"events": events, "target": "under 10 s for 10,000 events"}
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, __file__, "--busy-only", str(events), "--busy-dir", tmp]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return result | {"ok": False, "error": f"timed out after {timeout:g} s"}
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        return result | {"ok": False, "error": lines[-1]}
    return result | json.loads(done.stdout.splitlines()[-1]) | {"ok": True}


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--per-day", type=int, default=3_000, help="purchases a day (at least 10)")
    parser.add_argument("--short-history", type=int, default=30, help="days before the first timed day")
    parser.add_argument("--long-history", type=int, default=365, help="days before the second timed day")
    parser.add_argument("--busy-events", type=int, default=10_000, help="one person's events in one day")
    parser.add_argument("--busy-timeout", type=float, default=300, help="seconds after which that day is killed")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--busy-only", type=int, help=argparse.SUPPRESS)  # the child process of busy_person
    parser.add_argument("--busy-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.busy_only is not None:
        print(json.dumps(busy_person_day(args.busy_only, args.busy_dir)))
        return 0
    if not 0 < args.short_history < args.long_history or args.per_day < 10:
        parser.error("needs 0 < --short-history < --long-history and --per-day of at least 10")
    short, long = args.short_history, args.long_history
    with tempfile.TemporaryDirectory() as tmp:
        conn = duckdb.connect(str(Path(tmp) / "ledger.duckdb"))
        synthesize(conn, args.customers, args.per_day, long + 2)
        results = {}
        for day_number in range(long + 1):
            if day_number in (short, long):
                results[f"day_after_{day_number}_days_s"] = one_more_day(conn, day_number, repeats=5)
            else:
                build(conn, START + timedelta(days=day_number))
        results[f"ratio_{long}_vs_{short}"] = results[f"day_after_{long}_days_s"] / results[f"day_after_{short}_days_s"]
        results["ledger_rows"] = conn.execute("SELECT count(*) FROM points.point_transactions").fetchall()[0][0]
        results["clawbacks"] = conn.execute(
            "SELECT count(*) FROM points.point_transactions WHERE kind = 'clawback'"
        ).fetchall()[0][0]
        results.update(customers=args.customers, purchases_per_day=args.per_day)
        conn.close()
    results["busy_person"] = busy_person(args.busy_events, args.busy_timeout)
    results["ok"] = results["busy_person"]["ok"]
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
