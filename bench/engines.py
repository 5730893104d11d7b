"""`make bench ENGINE=spark`: the pipeline on DuckDB and with LOYALTY_ENGINE=spark, on the same generated inputs.

    python bench/engines.py [--customers N] [--days D] [--seed S] [--master local[2]]

Runs `loyalty-pipeline materialize` once per engine, each in a fresh subprocess (wall time, peak RSS of the process
tree as wait4 reports it, the seconds of each step), then compares every table of the two warehouses row for row.
Every step downstream of ingest runs on the chosen engine; they are reported side by side (ingest runs on DuckDB in
both runs).
Writes `bench/results/engines.json` and prints a table.
"""

import argparse
import json
import os
import platform
import shutil
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run_bench  # noqa: E402  (a sibling script: its launcher, data and summary parsing)

INGEST = ("kafka_topics", "raw__")  # steps on DuckDB whatever the engine
BOOKKEEPING = ("run_id", "revised_at", "published_at")  # when and by which run a row was written, not what


def objects(warehouse: Path) -> dict[str, list[tuple[str, str]]]:
    """Every table and view of a warehouse file, with its columns: not the lake's column declarations, nor the change
    log (`changes`), which records how many runs built the tables, not what they hold."""
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        rows = conn.execute(
            """SELECT schema_name || '.' || table_name, column_name, data_type FROM duckdb_columns()
               WHERE database_name = current_database()
                 AND schema_name NOT IN ('lake', 'information_schema', 'changes')
                 AND NOT starts_with(schema_name, 'pg_')
               ORDER BY ALL"""
        ).fetchall()
    found: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        found.setdefault(table, []).append((column, kind))
    return found


def differences(left: Path, right: Path) -> dict[str, object]:
    """Per table that differs: the two column lists if their names or types differ, else the number of rows the
    two files do not share (duplicates counted). {} when the warehouses hold the same tables."""
    left_objects, right_objects = objects(left), objects(right)
    found: dict[str, object] = {name: "missing on one side" for name in left_objects.keys() ^ right_objects.keys()}
    with duckdb.connect() as conn:
        conn.execute(f"ATTACH '{left}' AS l (READ_ONLY); ATTACH '{right}' AS r (READ_ONLY)")
        for table in sorted(left_objects.keys() & right_objects.keys()):
            columns = left_objects[table]
            if columns != right_objects[table]:
                found[table] = (columns, right_objects[table])
                continue
            kept = ", ".join(f'"{c}"' for c, _ in columns if c not in BOOKKEEPING)
            a, b = f"SELECT {kept} FROM l.{table}", f"SELECT {kept} FROM r.{table}"
            differing = conn.execute(
                f"SELECT count(*) FROM (({a} EXCEPT ALL {b}) UNION ALL ({b} EXCEPT ALL {a}))"
            ).fetchall()[0][0]
            if differing:
                found[table] = differing
    return found


def run(data: Path, work: Path, engine: str, master: str) -> dict:
    warehouse = work / f"{engine}.duckdb"
    shutil.rmtree(f"{warehouse}.lake", ignore_errors=True)
    warehouse.unlink(missing_ok=True)
    env = {**run_bench.pipeline_env(), "LOYALTY_ENGINE": engine, "LOYALTY_SPARK_MASTER": master}
    command = [str(run_bench.CLI), "materialize", "--data-dir", str(data), "--warehouse", str(warehouse)]
    result = run_bench.measure(command, work / f"{engine}.log", env)
    result["steps"] = run_bench.step_seconds((work / f"{engine}.log").read_text())
    downstream = {step: seconds for step, seconds in result["steps"].items() if not step.startswith(INGEST)}
    result["downstream"], result["downstream_steps_s"] = downstream, round(sum(downstream.values()), 2)
    result["warehouse"] = str(warehouse)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--start", default="2024-01-01")
    parser.add_argument("--master", default="local[2]", help="LOYALTY_SPARK_MASTER (default local[2])")
    parser.add_argument("--out", default=str(BENCH / "results" / "engines.json"))
    parser.add_argument(
        "--work-dir", type=Path, default=BENCH / "data", help="where the inputs and the two warehouses go (bench/data)"
    )
    args = parser.parse_args(argv)

    data = args.work_dir / f"c{args.customers}_d{args.days}_s{args.seed}"
    manifest, _ = run_bench.ensure_data(data, args.customers, args.days, args.seed, date.fromisoformat(args.start))
    work = args.work_dir / "work" / "engines"
    work.mkdir(parents=True, exist_ok=True)
    runs = {engine: run(data, work, engine, args.master) for engine in ("duckdb", "spark")}
    failed = [engine for engine, result in runs.items() if result["exit_code"] != 0]
    differing = {} if failed else differences(Path(runs["duckdb"]["warehouse"]), Path(runs["spark"]["warehouse"]))
    result = {
        "params": vars(args) | {"purchases": manifest["rows"]["purchases"]},
        "runs": {
            engine: {
                key: run[key]
                for key in ("wall_s", "peak_rss_mb", "exit_code", "downstream_steps_s", "downstream", "log")
            }
            for engine, run in runs.items()
        },
        "failed": failed,
        "tables_differing": differing,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"{'engine':<8}{'wall s':>10}{'peak RSS MB':>14}{'downstream s':>15}  per step")
    for engine, measured in result["runs"].items():
        per_step = ", ".join(f"{step} {seconds}" for step, seconds in sorted(measured["downstream"].items()))
        print(
            f"{engine:<8}{measured['wall_s']:>10.2f}{measured['peak_rss_mb']:>14.1f}"
            f"{measured['downstream_steps_s']:>15.2f}  {per_step}"
        )
    print("tables differing: " + (json.dumps(differing, default=str) if differing else "none") + f" (failed: {failed})")
    return 1 if failed or differing else 0


if __name__ == "__main__":
    sys.exit(main())
