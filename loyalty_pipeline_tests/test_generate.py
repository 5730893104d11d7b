"""`bench/generate.py` at a tiny scale: the files of SPEC §3 exist and parse, bad input is there on purpose,
and the two reference implementations of the benchmark agree with each other on them."""

import gzip
import json
from pathlib import Path

import duckdb

from loyalty_pipeline_tests.scenarios import bench_module

TOPICS = ["users", "products", "purchases", "user_activity", "redemptions"]


generate = bench_module("generate")


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return handle.read().splitlines()


def test_layout_and_envelopes(generated: Path):
    manifest = json.loads((generated / "manifest.json").read_text())
    assert manifest["rows"]["purchases"] > 0 and manifest["rows"]["user_activity"] > 0
    assert (generated / "loyalty.yaml").exists()
    corrupt = 0
    for topic in TOPICS:
        files = sorted((generated / "kafka" / topic).iterdir())
        assert any(f.name.endswith(".jsonl") for f in files) and any(f.name.endswith(".jsonl.gz") for f in files)
        seen, duplicates = set(), 0
        for file in files:
            for line in _lines(file):
                try:
                    message = json.loads(line)
                except ValueError:
                    corrupt += 1
                    continue
                assert message["topic"] == topic and isinstance(message["ts"], int)
                assert message["payload"] is None or isinstance(json.loads(message["payload"]), dict)
                coordinates = (message["partition"], message["offset"])
                duplicates += coordinates in seen
                seen.add(coordinates)
        assert duplicates > 0, f"{topic}: no duplicated message"
    assert corrupt >= len(TOPICS)
    days = sorted(p.name for p in (generated / "s3" / "historical_purchases").glob("*.csv"))
    assert days == [f"2024-01-{d:02d}.csv" for d in range(1, 15)]
    # Every row of a day's file is on that day; customers export has the contract's header.
    with duckdb.connect() as conn:
        wrong = conn.execute(
            "SELECT count(*) FROM read_csv($files, header = true, all_varchar = true, filename = true) "
            "WHERE price <> 'N/A' AND left(purchased_at, 10) <> regexp_extract(filename, '(\\d{4}-\\d{2}-\\d{2})', 1)",
            {"files": [str(p) for p in (generated / "s3" / "historical_purchases").glob("*.csv")]},
        ).fetchall()[0][0]
    assert wrong == 0
    header = (generated / "s3" / "customers" / "customers-part-1.csv").read_text().splitlines()[0]
    assert header == "user_id,name,email,signup_date"


def test_deterministic(generated: Path, tmp_path: Path):
    """Same seed, same files: also on one thread (the draws are hashes, not a random stream)."""
    generate.generate(tmp_path, 300, 14, seed=7, threads=1)
    for path in sorted(generated.rglob("*")):
        if path.is_file():
            twin = tmp_path / path.relative_to(generated)
            if path.suffix == ".gz":
                assert _lines(path) == _lines(twin), path
            else:
                assert path.read_bytes() == twin.read_bytes(), path


def test_plain_duckdb_and_pandas_agree(generated: Path, tmp_path: Path):
    plain, pandas_impl, run_bench = bench_module("plain_duckdb"), bench_module("pandas_impl"), bench_module("run_bench")
    plain_rows = plain.run(generated, tmp_path / "plain.duckdb")["rows"]
    pandas_rows = pandas_impl.run(generated, tmp_path / "pandas")["rows"]
    assert plain_rows == pandas_rows
    assert plain_rows["sales_totals"] > 0 and plain_rows["caffeine_index"] > 0 and plain_rows["promotions"] > 0
    report = run_bench.compare(tmp_path / "plain.duckdb", tmp_path / "pandas")
    assert run_bench.agrees(report, ["sales_totals", "caffeine_index", "promotions", "profile_spend"]), report
