"""The S3 sensor, evaluated for real against a local folder and against moto's S3 server over HTTP."""

import json

import dagster as dg
import pytest

from loyalty_pipeline.definitions import build_defs

HEADER = "order_id,user_id,product_id,price,purchased_at\n"


def tick(defs: dg.Definitions, cursor: str | None):
    sensor = defs.resolve_sensor_def("s3_new_files")
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), cursor=cursor, resources=defs.resources, definitions=defs) as context:
        return sensor(context)


def requests_of(result) -> list[tuple]:
    return sorted((request.job_name, request.partition_key, request.run_key.split("@")[0]) for request in result.run_requests)


def check_sensor(defs_for, put):
    """New files request runs once, a rewritten file again, a bad name is skipped, quiet ticks say why."""
    put("historical_purchases/2024-06-01.csv", HEADER + "o1,ann,tea,1.00,2024-06-01T10:00:00Z\n")
    put("customers/export.csv", "user_id,name,email,signup_date\nann,Ann,a@x,2020-01-01\n")
    put("historical_purchases/notes.csv", "not a day\n")
    first = tick(defs_for(), None)
    assert requests_of(first) == [
        ("ingest_customers", None, "customers/export.csv"),
        ("ingest_historical_purchases", "2024-06-01", "historical_purchases/2024-06-01.csv"),
    ]
    quiet = tick(defs_for(), first.cursor)  # a restart resumes from the stored cursor
    assert quiet.run_requests == [] and "no new files" in quiet.skip_reason.skip_message
    put("historical_purchases/2024-06-02.csv", HEADER)
    put("historical_purchases/2024-06-01.csv", HEADER + "o1,ann,tea,2.00,2024-06-01T10:00:00Z\n")
    second = tick(defs_for(), quiet.cursor)
    assert requests_of(second) == [
        ("ingest_historical_purchases", "2024-06-01", "historical_purchases/2024-06-01.csv"),
        ("ingest_historical_purchases", "2024-06-02", "historical_purchases/2024-06-02.csv"),
    ]
    assert len({request.run_key for request in first.run_requests + second.run_requests}) == 4
    assert "historical_purchases/notes.csv" in json.loads(second.cursor)


def test_sensor_on_a_local_folder(inputs):
    def put(key, text):
        inputs.csv(key, text)
        # mtime granularity: make a rewrite visible even within the same clock tick
        path = inputs.root / "s3" / key
        path.touch()

    check_sensor(lambda: build_defs(inputs.env()), put)


@pytest.mark.integration
def test_sensor_on_s3_over_http(inputs, s3_bucket):
    check_sensor(lambda: build_defs(inputs.env(**s3_bucket.env())), lambda key, text: s3_bucket.put(f"exports/{key}", text))


@pytest.mark.integration
def test_materialize_reads_csvs_from_s3_over_http(inputs, s3_bucket):
    s3_bucket.put("exports/historical_purchases/2024-06-01.csv", HEADER + "o1,ann,tea,1.50,2024-06-01T10:00:00Z\n")
    s3_bucket.put("exports/customers/export.csv", "user_id,name,email,signup_date\nann,Ann,a@x,2020-01-01\n")
    inputs.materialize("2024-06-01", **s3_bucket.env())
    assert inputs.query("SELECT user_id, product_id, price::VARCHAR, s3_key FROM raw.historical_purchases") == [
        ("ann", "tea", "1.50", "historical_purchases/2024-06-01.csv")
    ]
    assert inputs.query("SELECT user_id, name, s3_key FROM raw.customers") == [("ann", "Ann", "customers/export.csv")]


def test_kafka_sensor_requests_the_days_of_new_files_once(inputs):
    defs = build_defs(inputs.env())
    inputs.kafka("purchases", [("ann", {"product_id": "tea"}, "2024-06-01T10:00:00"), ("ann", {"product_id": "tea"}, "2024-06-03T10:00:00")])
    (inputs.root / "kafka" / "purchases" / "README.txt").write_text("not a snapshot")
    sensor = defs.resolve_sensor_def("kafka_new_files")

    def tick(cursor):
        with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), cursor=cursor, resources=defs.resources, definitions=defs) as context:
            return sensor(context)

    first = tick(None)
    [request] = first.run_requests
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) == ("2024-06-01", "2024-06-03")
    assert tick(first.cursor).run_requests == []
    inputs.write_lines("purchases", "late.jsonl.gz", ['{"partition":1,"offset":0,"ts":1717545600000,"key":"bob","payload":"{}"}'])
    inputs.write_lines("purchases", "broken.jsonl.gz", ["this is not gzip"])
    (inputs.root / "kafka" / "purchases" / "broken.jsonl.gz").write_bytes(b"\x1f\x8b garbage")
    second = tick(first.cursor)
    [request] = second.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "2024-06-05"
    assert tick(second.cursor).run_requests == []  # the broken file is reported once, not on every tick


def test_daily_schedule_requests_yesterdays_partition():
    from datetime import datetime, timezone

    defs = build_defs()
    schedule = defs.resolve_schedule_def("daily_materialization")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("15 0 * * *", "UTC")
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2024, 6, 6, 0, 15, tzinfo=timezone.utc), repository_def=defs.get_repository_def()
    )
    [request] = schedule.evaluate_tick(context).run_requests
    assert (request.partition_key, request.run_key) == ("2024-06-05", "2024-06-05")
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2025, 1, 1, 0, 15, tzinfo=timezone.utc), repository_def=defs.get_repository_def()
    )
    assert schedule.evaluate_tick(context).run_requests[0].partition_key == "2024-12-31"
