"""Ingest of Kafka Connect S3 sink objects next to the same messages as kcat files (issue 32; run by `make bench`).

The same generated inputs (`bench/generate.py`, same seed) are written in both layouts; the Kafka topics of every
day are materialized in process from each into its own warehouse (`raw/<topic>` only), timed, and the raw purchases
compared row for row (their source location aside; a tombstone has no Connect record, so raw.users is not compared).
"""

import argparse
import json
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import generate  # beside this script

from loyalty_pipeline.definitions import build_defs
from loyalty_pipeline.defs.runs import materialize_days
from loyalty_pipeline.domain.ingest.kafka import TOPICS

START = date(2024, 1, 1)


def ingest(folder: Path, days: int) -> float:
    """Seconds to materialize every Kafka topic over every day from `folder` into its warehouse."""
    env = {"LOYALTY_DATA_DIR": str(folder), "LOYALTY_WAREHOUSE": str(folder / "warehouse.duckdb")}
    started = time.perf_counter()
    result = materialize_days(
        build_defs(env),
        START.isoformat(),
        (START + timedelta(days=days - 1)).isoformat(),
        assets=tuple(f"raw/{topic}" for topic in TOPICS),
    )
    if not result.success:
        raise RuntimeError(f"ingest of {folder} failed")
    return round(time.perf_counter() - started, 2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30, help="purchases ~= customers * days / 30")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    report: dict = {"customers": args.customers, "days": args.days}
    with tempfile.TemporaryDirectory() as work:
        for layout in ("kcat", "connect_s3"):
            folder = Path(work) / layout
            manifest = generate.generate(folder, args.customers, args.days, start=START, layout=layout)
            report["kafka_purchases"] = manifest["rows"]["kafka_purchases"]
            report[f"{layout}_ingest_s"] = ingest(folder, args.days)
        with duckdb.connect() as conn:
            for layout in ("kcat", "connect_s3"):
                conn.execute(f"ATTACH '{Path(work) / layout / 'warehouse.duckdb'}' AS {layout} (READ_ONLY)")
            columns = "* EXCLUDE (location)"
            differing = conn.execute(
                f"""SELECT count(*) FROM ((SELECT {columns} FROM kcat.raw.purchases
                                           EXCEPT ALL SELECT {columns} FROM connect_s3.raw.purchases)
                                          UNION ALL (SELECT {columns} FROM connect_s3.raw.purchases
                                           EXCEPT ALL SELECT {columns} FROM kcat.raw.purchases))"""
            ).fetchall()[0][0]
            report["raw_purchases"] = conn.execute("SELECT count(*) FROM kcat.raw.purchases").fetchall()[0][0]
    report["purchases_differing"] = differing
    report["ok"] = differing == 0
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
