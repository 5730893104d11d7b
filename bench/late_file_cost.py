"""Cost of a late Kafka file next to an on-time one (run by `make bench`), driven by the sensor as in production.

Generated inputs (`bench/generate.py`) are built day 1..D as one run. Then, with the sensor's cursor
primed on those files, two files land one after the other, each with the purchases of the day four weeks before
copied into new orders (`source_day`): an on-time file for day D+1, then a late file for day D+1-back. Each time
the Kafka sensor is ticked and the run it requests is executed in process and timed (`timed`: the wall, and the SQL
alone of the warehouse and the serving store): the on-time day runs every asset for one day; the late day re-runs
purchases and everything downstream of them from that day through D+1. The history build is timed the same way.

`--work DIR` keeps the inputs and the warehouse: a later call with the same DIR skips the history and lands its
files after the last day built, so a large history is built once (`--on-time N` lands N days in a row).
"""

import argparse
import functools
import json
import sqlite3
import sys
import tempfile
import time
import traceback
from collections import Counter
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import generate  # beside this script

from loyalty_pipeline.definitions import build_defs
from loyalty_pipeline.defs.automation.planning import run_in_process
from loyalty_pipeline.defs.resources import Warehouse
from loyalty_pipeline.defs.runs import materialize_days

START = date(2024, 1, 1)
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def source_day(day: date) -> date:
    """The built day whose purchases a landed file for `day` copies: four weeks before (or the first day), so each
    day's buyers are other people, as on a real day (copying one day again and again made the same people buy every
    day: their baskets piled up, and the day cost their growing history)."""
    return max(START, day - timedelta(days=28))


def copy_purchases(warehouse: Path, from_day: date, to_day: date, target: Path, first_offset: int) -> int:
    """Writes `from_day`'s purchases as kcat envelopes of `to_day`, at new offsets of partition 99, in orders of their
    own (a copy that reused the day's order ids would add to the baskets of the days copied before: no new basket,
    so recommendations would have nothing to recompute)."""
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        count = conn.execute(
            """COPY (
                   SELECT 'purchases' AS topic, 99 AS partition, $offset + row_number() OVER (ORDER BY event_ts, kafka_offset) AS offset,
                          epoch_ms(event_ts + ($to::DATE - $from::DATE) * INTERVAL 1 DAY) AS ts, user_id AS key,
                          json_object('product_id', product_id, 'order_id', 'copy-' || $offset || '-' || coalesce(order_id, kafka_offset::VARCHAR))::VARCHAR AS payload
                   FROM raw.purchases WHERE day = $from AND NOT tombstone
               ) TO '"""
            + str(target)
            + "' (FORMAT json)",
            {"from": from_day, "to": to_day, "offset": first_offset},
        ).fetchall()
    return count[0][0] if count else 0


def _timed(engine: str, method, *args, **kwargs):
    """Runs one statement (or fetch), adding its seconds to `SQL_S[engine]`: the day's SQL alone, without Dagster
    or the Python between statements."""
    started = time.perf_counter()
    try:
        return method(*args, **kwargs)
    finally:
        seconds = time.perf_counter() - started
        SQL_S[engine] += seconds
        if PROFILE is not None:  # --profile: by the project's two innermost functions that ran the statement
            ours = [f for f in traceback.extract_stack() if "/loyalty_pipeline/" in f.filename][-2:]
            PROFILE[" < ".join(f"{Path(f.filename).stem}.{f.name}:{f.lineno}" for f in reversed(ours))] += seconds


class TimedConnection:
    """A warehouse connection (DuckDB) whose statements and fetches are timed."""

    def __init__(self, conn):
        self._conn = conn

    def execute(self, *args, **kwargs):
        _timed("duckdb", self._conn.execute, *args, **kwargs)
        return self

    def executemany(self, *args, **kwargs):
        _timed("duckdb", self._conn.executemany, *args, **kwargs)
        return self

    def fetchall(self):
        return _timed("duckdb", self._conn.fetchall)

    def fetchone(self):
        return _timed("duckdb", self._conn.fetchone)

    def fetchmany(self, *args):
        return _timed("duckdb", self._conn.fetchmany, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


class TimedStore(sqlite3.Connection):
    """A serving store connection (SQLite) whose statements are timed (SQLite runs a write, or an aggregate's
    whole query, in `execute`)."""

    def execute(self, *args, **kwargs):
        return _timed("sqlite", super().execute, *args, **kwargs)

    def executemany(self, *args, **kwargs):
        return _timed("sqlite", super().executemany, *args, **kwargs)


SQL_S = Counter()
PROFILE: Counter | None = None  # SQL seconds by caller, with --profile
_untimed_connection = Warehouse.get_connection
_untimed_store = sqlite3.connect


@contextmanager
def _timed_connection(self, *args, **kwargs):
    """`Warehouse.get_connection`, whatever it takes, with its connection timed."""
    with _untimed_connection(self, *args, **kwargs) as conn:
        yield TimedConnection(conn)


@contextmanager
def timed() -> dict:
    """Times what runs inside: fills the yielded dict with `seconds`, the SQL alone of both engines (the warehouse's
    DuckDB, the serving store's SQLite) and their ratio, and with --profile the SQL seconds by caller."""
    SQL_S.clear()
    if PROFILE is not None:
        PROFILE.clear()
    Warehouse.get_connection = _timed_connection
    sqlite3.connect = functools.partial(_untimed_store, factory=TimedStore)
    result = {}
    started = time.perf_counter()
    try:
        yield result
    finally:
        seconds = time.perf_counter() - started
        Warehouse.get_connection = _untimed_connection
        sqlite3.connect = _untimed_store
    sql_s = SQL_S["duckdb"] + SQL_S["sqlite"]
    result.update(
        {
            "seconds": round(seconds, 2),
            "sql_alone_s": round(sql_s, 2),
            "sql_s_by_engine": {engine: round(SQL_S[engine], 2) for engine in ("duckdb", "sqlite")},
            **(
                {"sql_s_by_caller": {k: round(v, 3) for k, v in PROFILE.most_common(25)}} if PROFILE is not None else {}
            ),
            "vs_sql_alone": round(seconds / sql_s, 2) if sql_s else None,
        }
    )


def steps(done) -> dict:
    """The run's success, steps and each step's seconds."""
    succeeded = [event for event in done.all_events if event.event_type_value == "STEP_SUCCESS"]
    return {
        "ok": done.success,
        "steps": len(succeeded),
        "step_s": {event.step_key: round(event.event_specific_data.duration_ms / 1000, 2) for event in succeeded},
    }


def tick_and_run(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> tuple[dict, str]:
    sensor = defs.resolve_sensor_def("kafka_new_files")
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=defs.resources, definitions=defs
    ) as context:
        result = sensor(context)
    [request] = result.run_requests
    with timed() as timing:
        done = run_in_process(defs, request, instance, QUIET)
    days = (
        request.partition_key
        or f"{request.tags['dagster/asset_partition_range_start']}..{request.tags['dagster/asset_partition_range_end']}"
    )
    assets = len(request.asset_selection) if request.asset_selection else "all"
    return {**timing, "days": days, "assets": assets, **steps(done)}, result.cursor


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=60, help="days built before the two files land")
    parser.add_argument("--back", type=int, default=30, help="how many days before the on-time day the late file is")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--on-time", type=int, default=1, help="on-time days landed one after the other")
    parser.add_argument(
        "--work", type=Path, help="keep the inputs and warehouse here; a warehouse already there is the history"
    )
    parser.add_argument("--profile", action="store_true", help="each run's 25 costliest callers of SQL, in seconds")
    args = parser.parse_args(argv)
    global PROFILE
    PROFILE = Counter() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="late-file-") as temporary:
        work = args.work or Path(temporary)
        data = work / "data"
        env = {"LOYALTY_DATA_DIR": str(data), "LOYALTY_WAREHOUSE": str(work / "warehouse.duckdb")}
        last = START + timedelta(days=args.days - 1)
        history = None
        building = not Path(env["LOYALTY_WAREHOUSE"]).exists()
        if building:
            generate.main(
                ["--customers", str(args.customers), "--days", str(args.days), "--out", str(data)]
                + ["--start", START.isoformat()]
            )
        defs, instance = build_defs(env), dg.DagsterInstance.ephemeral()  # after the inputs: their rules file
        if building:  # one range run, as `loyalty-pipeline materialize` does
            with timed() as history:
                done = materialize_days(defs, START.isoformat(), last.isoformat(), instance)
            history.update(steps(done))
            assert done.success
        sensor = defs.resolve_sensor_def("kafka_new_files")
        with dg.build_sensor_context(instance=instance, resources=defs.resources, definitions=defs) as context:
            cursor = sensor(context).cursor  # every file seen; its request (all of them again) is not run
        warehouse = Path(env["LOYALTY_WAREHOUSE"])
        folder = data / "kafka" / "purchases"
        with duckdb.connect(str(warehouse), read_only=True) as conn:  # a kept warehouse may hold later days
            built = conn.execute("SELECT max(day) FROM points.ledger_days").fetchall()[0][0]
        on_time_days = []
        for n in range(1, args.on_time + 1):  # the first day after a history built by an older version migrates
            day = built + timedelta(days=n)
            rows = copy_purchases(
                warehouse, source_day(day), day, folder / f"on-time-{day}.jsonl", (day - START).days * 10**6
            )
            on_time, cursor = tick_and_run(defs, instance, cursor)
            on_time_days.append(on_time)
        late_day = built + timedelta(days=1 - args.back)
        late_offset = 9 * 10**8 + (built - START).days * 10**6
        copy_purchases(warehouse, source_day(late_day), late_day, folder / f"late-{built}.jsonl", late_offset)
        late, cursor = tick_and_run(defs, instance, cursor)
    result = {
        "customers": args.customers,
        "days_built": args.days,
        "purchases_per_file": rows,
        "history_build": history,
        "on_time_day": on_time,
        **({"on_time_days": on_time_days} if args.on_time > 1 else {}),
        f"late_file_{args.back}_days_back": late,
        "late_vs_on_time": round(late["seconds"] / on_time["seconds"], 2) if on_time["seconds"] else None,
        "ok": on_time["ok"] and late["ok"],
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    done = main()
    sys.exit(0 if done["ok"] else 1)
