"""Issue 32: Kafka Connect S3 sink objects (JSON, gzip, Parquet; default and time-based partitioners; keys files; a
connector restart rewriting offsets) give the tables the same messages give as kcat files."""

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb

from loyalty_pipeline.definitions import build_defs
from loyalty_pipeline_tests.scenarios import Inputs, request_of, tick_on

DAY1, DAY2 = "2024-06-01", "2024-06-02"
MESSAGES = [  # (key, payload, event time): offsets 0..5 of partition 0
    ("u1", {"product_id": "coffee"}, f"{DAY1}T08:00:00"),
    ("u2", {"product_id": "tea"}, f"{DAY1}T09:00:00"),
    ("u1", {"product_id": "cake", "order_id": "o1"}, f"{DAY1}T23:59:59"),
    ("u3", {"product_id": "coffee"}, f"{DAY2}T00:00:00"),  # midnight: day 2
    ("u2", {"product_id": "coffee"}, f"{DAY2}T10:00:00"),
    ("u3", {"product_id": "tea"}, f"{DAY2}T11:00:00"),
]
PRODUCTS = [
    (p, {"category": "c", "price": price}, f"{DAY1}T00:00:00") for p, price in (("coffee", 3), ("tea", 2), ("cake", 5))
]
RAW = "SELECT * EXCLUDE (location) FROM raw.purchases ORDER BY kafka_partition, kafka_offset"


def _ms(at: str) -> int:
    return int(datetime.fromisoformat(at).replace(tzinfo=UTC).timestamp() * 1000)


def _record(n: int) -> dict:
    """Message n as a Connect JSON record: the value, with the key and time an InsertField transform adds."""
    key, payload, at = MESSAGES[n]
    return {**payload, "user_id": key, "ts": _ms(at)}


def _write(path: Path, lines: list[str], zipped: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(text) if zipped else text)


def _parquet(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect() as conn:
        rows = ", ".join(f"(${4 * i + 1}, ${4 * i + 2}, ${4 * i + 3}, ${4 * i + 4})" for i in range(len(records)))
        values = [v for r in records for v in (r["product_id"], r.get("order_id"), r["user_id"], r["ts"])]
        conn.execute(
            f"COPY (SELECT * FROM (VALUES {rows}) AS t(product_id, order_id, user_id, ts)) TO '{path}' "
            "(FORMAT parquet)",
            values,
        )


def _kcat(tmp_path: Path) -> Inputs:
    (tmp_path / "kcat").mkdir()
    inputs = Inputs(tmp_path / "kcat")
    inputs.rules("start_date: 2024-06-01\n")
    inputs.kafka("products", PRODUCTS)
    inputs.kafka("purchases", MESSAGES)
    inputs.materialize(DAY1, DAY2, assets=("loyalty/sales_totals",))
    return inputs


def test_connect_objects_give_the_tables_kcat_files_give(tmp_path):
    """Default partitioner: JSON, then a restart's gzip object rewriting offset 2, then Parquet."""
    (tmp_path / "connect").mkdir()
    connect = Inputs(tmp_path / "connect")
    connect.rules(
        "start_date: 2024-06-01\nkafka: {topics: {purchases: {layout: connect_s3, timestamp: {field: ts}}}}\n"
    )
    connect.kafka("products", PRODUCTS)
    folder = connect.root / "s3" / "topics" / "purchases" / "partition=0"
    _write(folder / "purchases+0+0000000000.json", [json.dumps(_record(n)) for n in range(3)])
    _write(folder / "purchases+0+0000000002.json.gz", [json.dumps(_record(n)) for n in range(2, 5)], zipped=True)
    _write(folder / "purchases+0+0000000005.json", [json.dumps(_record(5))])
    connect.materialize(DAY1, DAY2, assets=("loyalty/sales_totals",))
    kcat = _kcat(tmp_path)
    assert len(connect.query(RAW)) == len(MESSAGES)
    assert connect.query(RAW) == kcat.query(RAW)
    totals = "SELECT * FROM loyalty.sales_totals ORDER BY ALL"
    assert connect.query(totals) == kcat.query(totals)


def test_parquet_objects_give_the_tables_kcat_files_give(tmp_path):
    """Parquet, as the sink's ParquetFormat writes it: a row per record, two objects, the second after a restart."""
    (tmp_path / "connect").mkdir()
    connect = Inputs(tmp_path / "connect")
    connect.rules(
        "start_date: 2024-06-01\nkafka: {layout: connect_s3, format: parquet, timestamp: {field: ts}, "
        "topics: {products: {layout: kcat}}}\n"
    )
    connect.kafka("products", PRODUCTS)
    folder = connect.root / "s3" / "topics" / "purchases" / "partition=0"
    _parquet(folder / "purchases+0+0000000000.snappy.parquet", [_record(n) for n in range(4)])
    _parquet(folder / "purchases+0+0000000003.snappy.parquet", [_record(n) for n in range(3, 6)])
    _write(folder / "purchases+0+0000000009.json", [json.dumps(_record(0))])
    (folder / "purchases+0+0000000020.parquet").write_bytes(b"PAR1 torn off")
    connect.materialize(DAY1, DAY2, assets=("loyalty/sales_totals",))
    assert connect.query(RAW) == _kcat(tmp_path).query(RAW)
    assert connect.query("SELECT location FROM raw.purchases WHERE kafka_offset = 5") == [
        (f"{folder}/purchases+0+0000000003.snappy.parquet:3",)
    ]
    rejected = dict(connect.query("SELECT location, reason FROM raw.rejected_records WHERE source = 'kafka:purchases'"))
    assert rejected.pop(f"{folder}/purchases+0+0000000020.parquet:0").startswith("unreadable Parquet object")
    assert rejected == {
        f"{folder}/purchases+0+0000000009.json:0": "a json object, but the topic's kafka format is parquet"
    }


def test_time_based_paths_and_keys_files(tmp_path):
    """Keys from the `.keys` companion, event time from year=/month=/day=/hour= (the records carry neither)."""
    inputs = Inputs(tmp_path)
    inputs.rules("start_date: 2024-06-01\nkafka: {layout: connect_s3, key: {from: keys_file}}\n")
    hour = inputs.root / "topics" / "purchases" / "year=2024" / "month=06" / "day=02" / "hour=07"  # beside kafka/
    _write(hour / "purchases+1+0000000040.json", [json.dumps({"product_id": "tea"}), json.dumps({"product_id": "x"})])
    _write(hour / "purchases+1+0000000040.keys.json", [json.dumps("u7"), json.dumps("u8")])
    inputs.materialize(DAY1, DAY2, assets=("raw/purchases",))
    assert inputs.query(
        "SELECT user_id, product_id, kafka_partition, kafka_offset, event_ts::VARCHAR FROM raw.purchases ORDER BY ALL"
    ) == [("u7", "tea", 1, 40, "2024-06-02 07:00:00"), ("u8", "x", 1, 41, "2024-06-02 07:00:00")]


def test_bad_objects_and_lines_are_quarantined_and_nothing_else_is_lost(tmp_path):
    inputs = Inputs(tmp_path)
    inputs.rules("start_date: 2024-06-01\nkafka: {layout: connect_s3, timestamp: {field: ts}}\n")
    folder = inputs.root / "s3" / "topics" / "purchases" / "partition=0"
    _write(folder / "purchases+0+0000000000.json", [json.dumps(_record(0)), "{not json", json.dumps(_record(2))])
    truncated = gzip.compress(("\n".join(json.dumps(_record(n)) for n in range(3, 6)) + "\n").encode() * 50)
    (folder / "purchases+0+0000000003.json.gz").write_bytes(truncated[: len(truncated) // 2])
    (folder / "purchases+0+0000000009.parquet").write_bytes(b"PAR1 not really")  # format json: refused
    _write(folder / "purchases-0-12.json", [json.dumps(_record(1))])
    inputs.materialize(DAY1, DAY2, assets=("raw/purchases",))
    assert inputs.query("SELECT kafka_offset FROM raw.purchases ORDER BY ALL") == [(0,), (2,)]
    rejected = dict(inputs.query("SELECT location, reason FROM raw.rejected_records WHERE source = 'kafka:purchases'"))
    assert rejected[f"{folder}/purchases+0+0000000000.json:2"] == "not a JSON object"
    assert rejected[f"{folder}/purchases+0+0000000003.json.gz:0"].startswith("unreadable file")
    assert (
        rejected[f"{folder}/purchases+0+0000000009.parquet:0"]
        == "a parquet object, but the topic's kafka format is json"
    )
    assert rejected[f"{folder}/purchases-0-12.json:0"].startswith("object name does not parse")


def test_an_object_without_event_time_is_refused_naming_the_setting(tmp_path):
    inputs = Inputs(tmp_path)
    inputs.rules("start_date: 2024-06-01\nkafka: {layout: connect_s3}\n")
    folder = inputs.root / "s3" / "topics" / "purchases" / "partition=0"
    _write(folder / "purchases+0+0000000000.json", [json.dumps(_record(0))])
    inputs.materialize(DAY1, DAY2, assets=("raw/purchases",))
    assert inputs.query("SELECT reason FROM raw.rejected_records WHERE source = 'kafka:purchases'") == [
        ("no event time: the path has no year=/month=/day= (time-based partitioner); set kafka.timestamp.field to a "
         "payload field holding it",)
    ]  # fmt: skip


def test_the_sensor_requests_the_days_of_a_new_connect_object_once(inputs):
    """A connector commits whole objects: a new one asks for the days it holds, the same bytes ask for nothing."""
    inputs.rules("start_date: 2024-06-01\nkafka: {layout: connect_s3}\n")
    defs, instance = build_defs(inputs.env()), dg.DagsterInstance.ephemeral()
    day = inputs.root / "s3" / "topics" / "purchases" / "year=2024" / "month=06" / "day=03"
    _write(day / "purchases+0+0000000000.json", [json.dumps(_record(0))])
    first = tick_on(defs, instance, None)
    assert request_of(first) == ("materialize_everything", "2024-06-03", None)
    assert tick_on(defs, instance, first.cursor).run_requests == []
    _write(day.parent / "day=05" / "purchases+0+0000000001.json", [json.dumps(_record(1))])
    assert request_of(tick_on(defs, instance, first.cursor)) == ("materialize_everything", "2024-06-05", None)


def test_connect_objects_through_boto3_over_http(inputs, s3_bucket, tmp_path):
    """The same objects in a bucket (moto's S3 server, read with boto3): the same tables; a rewritten object is read
    again, a removed one is forgotten."""
    inputs.rules("start_date: 2024-06-01\nkafka: {topics: {purchases: {layout: connect_s3, timestamp: {field: ts}}}}\n")
    inputs.kafka("products", PRODUCTS)
    folder = "exports/topics/purchases/partition=0"
    s3_bucket.put(f"{folder}/purchases+0+0000000000.json", "".join(json.dumps(_record(n)) + "\n" for n in range(3)))
    s3_bucket.put(f"{folder}/purchases+0+0000000003.json", "".join(json.dumps(_record(n)) + "\n" for n in range(3, 6)))
    inputs.materialize(DAY1, DAY2, assets=("loyalty/sales_totals",), **s3_bucket.env("exports"))
    kcat = _kcat(tmp_path)
    assert inputs.query(RAW) == kcat.query(RAW)
    rewritten = _record(5) | {"product_id": "cake"}
    s3_bucket.put(
        f"{folder}/purchases+0+0000000003.json",
        "".join(json.dumps(r) + "\n" for r in [_record(3), _record(4), rewritten]),
    )
    inputs.materialize(DAY2, DAY2, assets=("raw/purchases",), **s3_bucket.env("exports"))
    assert inputs.query("SELECT product_id FROM raw.purchases WHERE kafka_offset = 5") == [("cake",)]
