"""`make bench`: the pipeline against a plain DuckDB script and pandas, on the same generated inputs, in one run.

    python bench/run_bench.py [--customers N] [--days D] [--seed S] [--incremental-customers M] [--no-incremental]
    python bench/run_bench.py --customers 200 --days 3 --incremental-customers 200 --incremental-short 1
        --incremental-long 3 --app-clients 2 --app-seconds 1 --work-dir /tmp/b --out /tmp/b.json  (the smallest)

1. Generates inputs (`bench/generate.py`, in-process) into `bench/data/c<N>_d<D>_s<S>/`, or reuses them when
   that folder's manifest has the same parameters. Purchases ~= N * D / 30, clickstream ~= 5 x purchases.
2. Runs, each in its own fresh subprocess, timed (wall) with its peak RSS (ru_maxrss from os.wait4, taken by a
   small launcher process so that the child does not inherit this process's RSS):
   * pipeline: `loyalty-pipeline materialize --data-dir ... --warehouse ...` (every asset and check, every day),
   * duckdb:   `bench/plain_duckdb.py` (the core tables in hand-written SQL, no Dagster),
   * pandas:   `bench/pandas_impl.py` (the same core tables in idiomatic pandas).
3. Checks that the three agree on sales_totals, caffeine_index and promotions (and, reported apart, the profile's
   total_spend and purchase_count).
4. The customer 360 app (`bench/app_load.py`): 20 clients for 30 s on random ids of the pipeline's serving copy,
   while a materialize run rebuilds its last day; p50/p99 latency, lookups per second and errors.
5. Incremental cost (unless --no-incremental): 366 days for M customers; materializes days 1..30, times day 31
   alone, materializes 32..365, times day 366 alone (`--from/--to`; 30 and 365 are --incremental-short and
   --incremental-long). Then `late_file_cost.py` at M customers and 30 days: an on-time day and a file 30 days
   late, each next to the time DuckDB spent on that run's SQL alone.
6. Writes `bench/results/latest.json` (or --out) and prints a table; exits 1 if a run failed, the three
   disagree, or a lookup failed.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

CLI = Path(sys.executable).parent / "loyalty-pipeline"
TABLES = ["sales_totals", "caffeine_index", "promotions"]


# ---------------------------------------------------------------------------------------------------- running

# A small launcher process runs each measured command: a child's peak RSS (ru_maxrss) starts at its parent's RSS
# at fork time on Linux, so it must not be forked from this (larger) process. The launcher imports nothing heavy.
LAUNCHER = """
import json, os, signal, subprocess, sys, time
out, log, timeout, command = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
timed_out = False
with open(log, "w") as handle:
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if timeout and not timed_out and time.perf_counter() - started > timeout:
            timed_out = True
            os.killpg(child.pid, signal.SIGTERM)
            deadline = time.perf_counter() + 15
        if timed_out and time.perf_counter() > deadline:
            os.killpg(child.pid, signal.SIGKILL)
        time.sleep(0.05)
    wall = time.perf_counter() - started
kb = usage.ru_maxrss / (1024 if sys.platform == "darwin" else 1)  # kilobytes on Linux, bytes on macOS
with open(out, "w") as handle:
    json.dump({"wall_s": wall, "maxrss_kb": kb, "exit_code": os.waitstatus_to_exitcode(status), "timed_out": timed_out},
              handle)
"""


def measure(command: list[str], log: Path, env: dict | None = None, timeout: float = 0) -> dict:
    """Runs `command` to completion (or kills it after `timeout` seconds, 0: none): wall seconds and its peak RSS
    in MB (ru_maxrss from wait4, taken by a small launcher process), output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    stats = log.with_suffix(".stats.json")
    subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(stats), str(log), str(timeout), *command], env=env, cwd=ROOT, check=True
    )
    measured = json.loads(stats.read_text())
    result = {
        "wall_s": round(measured["wall_s"], 2),
        "peak_rss_mb": round(measured["maxrss_kb"] / 1024, 1),
        "exit_code": measured["exit_code"],
        "log": str(log.relative_to(ROOT)) if log.is_relative_to(ROOT) else str(log),
    }
    if measured["timed_out"]:
        result["timed_out_after_s"] = timeout
    return result


MEMORY_LIMIT: str | None = None  # --memory-limit: LOYALTY_MEMORY_LIMIT for the pipeline, memory_limit for plain DuckDB


def pipeline_env() -> dict:
    """The environment without anything that would point the pipeline elsewhere (or at a persistent instance)."""
    env = {
        name: value for name, value in os.environ.items() if not name.startswith("LOYALTY_") and name != "DAGSTER_HOME"
    }
    if MEMORY_LIMIT:
        env["LOYALTY_MEMORY_LIMIT"] = MEMORY_LIMIT
    return env


def materialize(
    data_dir: Path,
    warehouse: Path,
    log: Path,
    first: str | None = None,
    last: str | None = None,
    timeout: float = 0,
) -> dict:
    """`loyalty-pipeline materialize` as the spec runs it (no DAGSTER_HOME: an in-memory instance), measured, with the
    seconds per step its summary prints."""
    command = [str(CLI), "materialize", "--data-dir", str(data_dir), "--warehouse", str(warehouse)]
    if first:
        command += ["--from", first, "--to", last or first]
    result = measure(command, log, pipeline_env(), timeout)
    result["steps"] = step_seconds(log.read_text())
    return result


def step_seconds(summary: str) -> dict[str, float]:
    """The `step seconds` block of the CLI's summary: step key -> seconds, slowest first."""
    block = summary.split("\nstep seconds\n", 1)[1:] or [""]
    steps = {}
    for line in block[0].splitlines():
        if not line.startswith("  "):
            break
        step, seconds = line.split()
        steps[step] = float(seconds)
    return steps


def ensure_data(folder: Path, customers: int, days: int, seed: int, start: date) -> tuple[dict, float | None]:
    """The manifest of inputs with these parameters in `folder`, generating them unless already there."""
    params = {"customers": customers, "days": days, "seed": seed, "start": start.isoformat()}
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("params") == params:
            return manifest, None
    import generate  # beside this script; imported here, not on top, as the tests load this file by path

    started = time.perf_counter()
    manifest = generate.generate(folder, customers, days, seed=seed, start=start)
    return manifest, round(time.perf_counter() - started, 2)


# ---------------------------------------------------------------------------------------------------- agreement


def _normalized(source: str, table: str) -> str:
    """SQL for one implementation's table with comparable types; `source` is pipeline | duckdb | pandas."""
    if source == "pandas":
        return {
            "sales_totals": "SELECT user_id, total::DECIMAL(18,2) AS total, reward_level FROM pandas_sales_totals",
            "caffeine_index": "SELECT user_id, total::BIGINT, sequence::BIGINT, next_one_free::BOOLEAN FROM pandas_caffeine_index",
            "promotions": "SELECT user_id, promotion_name, coalesce(products, '') AS products FROM pandas_promotions",
            "profile_spend": "SELECT user_id, total_spend::DECIMAL(18,2), purchase_count::BIGINT FROM pandas_profile",
        }[table]
    schema = {"pipeline": "wh", "duckdb": "plain"}[source]
    return {
        "sales_totals": f"SELECT user_id, total::DECIMAL(18,2) AS total, reward_level FROM {schema}{'.loyalty' if source == 'pipeline' else ''}.sales_totals",
        "caffeine_index": f"SELECT user_id, total::BIGINT, sequence::BIGINT, next_one_free::BOOLEAN FROM {schema}{'.loyalty' if source == 'pipeline' else ''}.caffeine_index",
        "promotions": f"SELECT user_id, promotion_name, array_to_string(list_sort(products), '|') AS products FROM {schema}{'.loyalty' if source == 'pipeline' else ''}.promotions",
        "profile_spend": f"SELECT user_id, total_spend::DECIMAL(18,2), purchase_count::BIGINT FROM {schema}.{'customer.profile_360' if source == 'pipeline' else 'profile'}",
    }[table]


def compare(plain_db: Path, pandas_dir: Path, pipeline_db: Path | None = None) -> dict:
    """Rows that differ between each pair of implementations, per table (0 everywhere means they agree), with
    up to 5 example rows on each side of a difference."""
    conn = duckdb.connect()
    conn.execute(f"ATTACH '{plain_db}' AS plain (READ_ONLY)")
    sources = ["duckdb", "pandas"]
    if pipeline_db is not None:
        conn.execute(f"ATTACH '{pipeline_db}' AS wh (READ_ONLY)")
        sources.insert(0, "pipeline")
    csv_columns = {
        "sales_totals": "{'user_id': 'VARCHAR', 'total': 'VARCHAR', 'reward_level': 'VARCHAR'}",
        "caffeine_index": "{'user_id': 'VARCHAR', 'total': 'BIGINT', 'sequence': 'BIGINT', 'next_one_free': 'VARCHAR'}",
        "promotions": "{'user_id': 'VARCHAR', 'promotion_name': 'VARCHAR', 'products': 'VARCHAR'}",
        "profile": None,
    }
    for table, columns in csv_columns.items():
        path = str(pandas_dir / f"{table}.csv")
        options = f", columns = {columns}, auto_detect = false" if columns else ", all_varchar = true"
        conn.execute(f"CREATE TEMP VIEW pandas_{table} AS SELECT * FROM read_csv('{path}', header = true{options})")
    report = {}
    for table in TABLES + ["profile_spend"]:
        report[table] = {"rows": {}, "differences": {}}
        for source in sources:
            report[table]["rows"][source] = conn.execute(
                f"SELECT count(*) FROM ({_normalized(source, table)})"
            ).fetchall()[0][0]
        for i, left in enumerate(sources):
            for right in sources[i + 1 :]:
                a, b = _normalized(left, table), _normalized(right, table)
                only_left = conn.execute(f"SELECT * FROM ({a} EXCEPT ALL {b}) ORDER BY ALL LIMIT 5").fetchall()
                only_right = conn.execute(f"SELECT * FROM ({b} EXCEPT ALL {a}) ORDER BY ALL LIMIT 5").fetchall()
                count = conn.execute(
                    f"SELECT (SELECT count(*) FROM ({a} EXCEPT ALL {b})) + (SELECT count(*) FROM ({b} EXCEPT ALL {a}))"
                ).fetchall()[0][0]
                entry = {"rows_differing": count}
                if count:
                    entry[f"only_in_{left}"] = [[str(v) for v in row] for row in only_left]
                    entry[f"only_in_{right}"] = [[str(v) for v in row] for row in only_right]
                report[table]["differences"][f"{left}_vs_{right}"] = entry
    conn.close()
    return report


def agrees(report: dict, tables=TABLES) -> bool:
    return all(entry["rows_differing"] == 0 for table in tables for entry in report[table]["differences"].values())


# ---------------------------------------------------------------------------------------------------- main


def incremental(args, data_root: Path, work: Path) -> dict:
    short, long = args.incremental_short, args.incremental_long
    days = long + 1
    start = date.fromisoformat(args.start)
    folder = data_root / f"inc_c{args.incremental_customers}_d{days}_s{args.seed}"
    manifest, generate_s = ensure_data(folder, args.incremental_customers, days, args.seed, start)
    warehouse = work / "incremental.duckdb"
    for stale in work.glob("incremental*.duckdb*"):
        stale.unlink(missing_ok=True)
    day = lambda n: (start + timedelta(days=n - 1)).isoformat()
    logs = work / "logs"
    print(
        f"incremental: {manifest['rows']['purchases']} purchases over {days} days, {args.incremental_customers} customers"
    )
    timeout = args.pipeline_timeout
    history_short = materialize(folder, warehouse, logs / f"inc_days_1_{short}.log", day(1), day(short), timeout)
    day_short = materialize(folder, warehouse, logs / f"inc_day_{short + 1}.log", day(short + 1), timeout=timeout)
    print(f"  days 1..{short} {history_short['wall_s']}s, day {short + 1} alone {day_short['wall_s']}s")
    history_long = materialize(
        folder, warehouse, logs / f"inc_days_{short + 2}_{long}.log", day(short + 2), day(long), timeout
    )
    day_long = materialize(folder, warehouse, logs / f"inc_day_{days}.log", day(days), timeout=timeout)
    runs = (history_short, day_short, history_long, day_long)
    for run in runs:
        run["steps"] = dict(list(run.get("steps", {}).items())[:10])  # the ten slowest
    print(f"  days {short + 2}..{long} {history_long['wall_s']}s, day {days} alone {day_long['wall_s']}s")
    startup = measure([str(CLI), "--help"], logs / "cli_help.log", pipeline_env())
    return {
        "customers": args.incremental_customers,
        "days": days,
        "purchases": manifest["rows"]["purchases"],
        "clickstream_events": manifest["rows"]["user_activity"],
        "purchases_per_day": round(manifest["rows"]["purchases"] / days),
        "generate_s": generate_s,
        f"day_{short + 1}_after_{short}_days": day_short,
        f"day_{days}_after_{long}_days": day_long,
        f"ratio_{days}_vs_{short + 1}": round(day_long["wall_s"] / day_short["wall_s"], 2)
        if day_short["wall_s"]
        else None,
        f"setup_days_1_{short}": history_short,
        f"setup_days_{short + 2}_{long}": history_long,
        "cli_startup_s": startup["wall_s"],
        "ok": all(run["exit_code"] == 0 for run in runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--customers", type=int, default=1_000_000, help="default 1000000 (~1M purchases, 5M clicks at 30 days)"
    )
    parser.add_argument("--days", type=int, default=30, help="default 30")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--start", default="2024-01-01", help="first day of the generated data")
    parser.add_argument(
        "--incremental-customers",
        type=int,
        default=5_000,
        help="customers of the 366-day data set for the incremental cost (default 5000)",
    )
    parser.add_argument(
        "--incremental-short", type=int, default=30, help="days of history before the first timed day (default 30)"
    )
    parser.add_argument(
        "--incremental-long", type=int, default=365, help="days of history before the second timed day (default 365)"
    )
    parser.add_argument("--no-incremental", action="store_true", help="skip the incremental measurement")
    parser.add_argument("--app-clients", type=int, default=20, help="clients of the 360 app's load (default 20)")
    parser.add_argument("--app-seconds", type=float, default=30, help="seconds of the 360 app's load (default 30)")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=BENCH / "data",
        help="where the generated inputs and the runs' warehouses and logs go (default bench/data)",
    )
    parser.add_argument(
        "--pipeline-timeout",
        type=float,
        default=1200,
        help="seconds after which a pipeline run is killed and reported as timed out (default 1200)",
    )
    parser.add_argument(
        "--memory-limit",
        help="DuckDB memory limit for the pipeline (LOYALTY_MEMORY_LIMIT) and the "
        "plain script, e.g. 4GB (default: each one's own default)",
    )
    parser.add_argument("--out", default=str(BENCH / "results" / "latest.json"))
    args = parser.parse_args(argv)
    if not 0 < args.incremental_short < args.incremental_long - 1:
        parser.error("needs 0 < --incremental-short < --incremental-long - 1 (a history between the two days)")
    global MEMORY_LIMIT
    MEMORY_LIMIT = args.memory_limit
    if not CLI.exists():
        print(f"error: {CLI} not found: install the package in this Python's environment (make bench does)")
        return 2

    folder = args.work_dir / f"c{args.customers}_d{args.days}_s{args.seed}"
    work = args.work_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    manifest, generate_s = ensure_data(folder, args.customers, args.days, args.seed, date.fromisoformat(args.start))
    rows = manifest["rows"]
    print(
        f"data: {folder} ({'generated in ' + str(generate_s) + 's' if generate_s else 'reused'}): "
        f"{rows['purchases']} purchases, {rows['user_activity']} clickstream events, {args.customers} customers, "
        f"{args.days} days"
    )

    warehouse, plain_db, pandas_dir = work / "pipeline.duckdb", work / "plain_duckdb.duckdb", work / "pandas"
    for stale in [*work.glob("pipeline*.duckdb*"), plain_db]:
        stale.unlink(missing_ok=True)
    shutil.rmtree(pandas_dir, ignore_errors=True)
    logs = work / "logs"
    runs = {}
    print("running pipeline ...", flush=True)
    runs["pipeline"] = materialize(folder, warehouse, logs / "pipeline.log", timeout=args.pipeline_timeout)
    print(f"  {runs['pipeline']['wall_s']}s\nrunning plain duckdb ...", flush=True)
    runs["duckdb"] = measure(
        [sys.executable, str(BENCH / "plain_duckdb.py"), "--data-dir", str(folder), "--out", str(plain_db)]
        + (["--memory-limit", MEMORY_LIMIT] if MEMORY_LIMIT else []),
        logs / "plain_duckdb.log",
    )
    print(f"  {runs['duckdb']['wall_s']}s\nrunning pandas ...", flush=True)
    runs["pandas"] = measure(
        [sys.executable, str(BENCH / "pandas_impl.py"), "--data-dir", str(folder), "--out", str(pandas_dir)],
        logs / "pandas.log",
    )
    print(f"  {runs['pandas']['wall_s']}s", flush=True)
    # The pipeline's steps that build what the baselines build (its other steps build the ledger, journeys,
    # recommendations and checks, which the baselines do not): compared on their own as well.
    steps = runs["pipeline"].get("steps", {})
    runs["pipeline"]["core_steps_s"] = round(sum(steps.get(step, 0) for step in CORE_STEPS), 2)
    failed = [name for name, run in runs.items() if run["exit_code"] != 0]
    agreement, agreement_error = None, None
    if all(runs[name]["exit_code"] == 0 for name in ("duckdb", "pandas")) and warehouse.exists():
        try:  # a failed pipeline run may still have built the loyalty tables: compare them anyway
            agreement = compare(plain_db, pandas_dir, warehouse)
        except duckdb.Error as error:
            agreement_error = str(error).splitlines()[0]

    result = {
        "params": {"customers": args.customers, "days": args.days, "seed": args.seed, "start": args.start},
        "purchases": rows["purchases"],
        "clickstream_events": rows["user_activity"],
        "generate_s": generate_s,
        **{
            name: {
                key: run[key]
                for key in ("wall_s", "peak_rss_mb", "exit_code", "timed_out_after_s", "core_steps_s", "steps")
                if key in run
            }
            for name, run in runs.items()
        },
        "memory_limit": MEMORY_LIMIT or "defaults (pipeline: LOYALTY_MEMORY_LIMIT default; plain DuckDB: 80% of RAM)",
        "ratios": {
            "pipeline_vs_duckdb_wall": _ratio(runs["pipeline"]["wall_s"], runs["duckdb"]["wall_s"]),
            "pipeline_vs_duckdb_rss": _ratio(runs["pipeline"]["peak_rss_mb"], runs["duckdb"]["peak_rss_mb"]),
            "pandas_vs_duckdb_wall": _ratio(runs["pandas"]["wall_s"], runs["duckdb"]["wall_s"]),
            "pandas_vs_duckdb_rss": _ratio(runs["pandas"]["peak_rss_mb"], runs["duckdb"]["peak_rss_mb"]),
            "pipeline_vs_pandas_wall": _ratio(runs["pipeline"]["wall_s"], runs["pandas"]["wall_s"]),
            "pipeline_core_steps_vs_duckdb_wall": _ratio(runs["pipeline"]["core_steps_s"], runs["duckdb"]["wall_s"]),
            "pandas_vs_pipeline_core_steps_wall": _ratio(runs["pandas"]["wall_s"], runs["pipeline"]["core_steps_s"]),
        },
        "agree": bool(agreement) and agrees(agreement),
        "agree_profile_spend": bool(agreement) and agrees(agreement, ["profile_spend"]),
        "agreement": agreement,
        "agreement_error": agreement_error,
        "failed": failed,
        "logs": {name: run["log"] for name, run in runs.items()},
        "note": "the pipeline also ingests clickstream and redemptions, quarantines rejected rows, builds the point "
        "ledger, journeys, recommendations and a serving copy, and runs every asset check; duckdb and pandas "
        "compute only the core tables (see bench/plain_duckdb.py)",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "duckdb": duckdb.__version__,
            "platform": platform.platform(),
        },
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if runs["pipeline"]["exit_code"] == 0:  # the 360 app on this serving copy, while a run rewrites the last day
        from app_load import measure as app_load  # beside this script

        result["app_lookups"] = app_load(
            warehouse, folder, clients=args.app_clients, seconds=args.app_seconds, logs=logs
        )
    if not args.no_incremental:
        result["incremental"] = incremental(args, args.work_dir, work)
        # one on-time day and one late file, driven by the sensor, each next to the day's SQL alone
        from late_file_cost import main as late_file_cost  # beside this script

        short = str(args.incremental_short)
        result["one_day"] = late_file_cost(
            ["--customers", str(args.incremental_customers), "--days", short, "--back", short]
        )

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"written {out}")
    ok = [result["agree"], not failed, result.get("incremental", {}).get("ok", True)]
    ok += [result.get("one_day", {}).get("ok", True), result.get("app_lookups", {}).get("errors", 0) == 0]
    return 0 if all(ok) else 1


CORE_STEPS = [  # kafka_topics also ingests the clickstream and redemptions, which the baselines do not
    "kafka_topics",
    "raw__customers",
    "raw__historical_purchases",
    "loyalty__enriched_purchases",
    "loyalty_tables",
]


def _ratio(a, b):
    return round(a / b, 2) if b else None


def print_table(result: dict) -> None:
    print(
        f"\n{result['purchases']} purchases, {result['clickstream_events']} clickstream events, "
        f"{result['params']['customers']} customers, {result['params']['days']} days"
    )
    print(f"{'':<10}{'wall s':>10}{'peak RSS MB':>14}{'x duckdb wall':>15}{'exit':>6}")
    for name in ("pipeline", "duckdb", "pandas"):
        run = result[name]
        print(
            f"{name:<10}{run['wall_s']:>10.2f}{run['peak_rss_mb']:>14.1f}"
            f"{_ratio(run['wall_s'], result['duckdb']['wall_s']) or 0:>15.2f}{run['exit_code']:>6}"
            + ("  (killed: timed out)" if "timed_out_after_s" in run else "")
        )
    if result["pipeline"].get("core_steps_s"):
        core = result["pipeline"]["core_steps_s"]
        print(f"{'  core steps':<10}{core:>10.2f}{'':>14}{_ratio(core, result['duckdb']['wall_s']) or 0:>15.2f}")
    slowest = list(result["pipeline"].get("steps", {}).items())[:5]
    if slowest:
        print("pipeline's slowest steps: " + ", ".join(f"{step} {seconds}s" for step, seconds in slowest))
    agreement = result["agreement"] or {}
    for table, entry in agreement.items():
        pairs = ", ".join(f"{pair} {diff['rows_differing']}" for pair, diff in entry["differences"].items())
        print(f"  {table:<15} rows {entry['rows']}  differing: {pairs}")
    if result.get("agreement_error"):
        print(f"could not compare: {result['agreement_error']}")
    print(f"agree: {result['agree']} (profile spend: {result['agree_profile_spend']})")
    if app := result.get("app_lookups"):
        print(
            f"360 app, {app['clients']} clients while a run writes: p50 {app['p50_ms']} ms, p99 {app['p99_ms']} ms, "
            f"{app['lookups_per_s']} lookups/s, {app['errors']} errors"
        )
    inc = result.get("incremental")
    if inc:
        timed = ", ".join(
            f"{key.replace('_', ' ')} {run['wall_s']}s" for key, run in inc.items() if key.startswith("day_")
        )
        print(
            f"incremental ({inc['customers']} customers, ~{inc['purchases_per_day']} purchases/day): "
            f"{timed} (CLI start-up {inc['cli_startup_s']}s)"
        )
    if one_day := result.get("one_day"):
        print(f"one day through the sensor: ok {one_day['ok']}, on time {one_day['on_time_day']['seconds']}s")


if __name__ == "__main__":
    sys.exit(main())
