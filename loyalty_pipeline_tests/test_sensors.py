"""The S3 sensor, evaluated for real against a local folder and against moto's S3 server over HTTP."""

import json
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from loyalty_pipeline.definitions import build_defs
from loyalty_pipeline.defs.automation.planning import PLAN_TAG, RANGE_END_TAG, RANGE_START_TAG, run_in_process
from loyalty_pipeline.defs.automation.sensors import MAX_ATTEMPTS
from loyalty_pipeline.defs.runs import materialize_days
from loyalty_pipeline.domain.points import ledger
from loyalty_pipeline_tests.scenarios import QUIET, SENSORS, killed_after_the_id_graph, request_of, tick_on, ticks

HEADER = "order_id,user_id,product_id,price,purchased_at\n"


def tick(defs: dg.Definitions, cursor: str | None):
    sensor = defs.resolve_sensor_def("s3_new_files")
    with dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), cursor=cursor, resources=defs.resources, definitions=defs
    ) as context:
        return sensor(context)


def check_sensor(defs_for, put):
    """New files request one run, a rewritten file again, a bad name is skipped, quiet ticks say why."""
    put("historical_purchases/2024-06-01.csv", HEADER + "o1,ann,tea,1.00,2024-06-01T10:00:00Z\n")
    put("customers/export.csv", "user_id,name,email,signup_date\nann,Ann,a@x,2020-01-01\n")
    put("historical_purchases/notes.csv", "not a day\n")
    first = tick(defs_for(), None)
    # nothing is built yet: the new day runs every asset
    assert request_of(first) == ("materialize_everything", "2024-06-01", None)
    assert "s3/historical_purchases/2024-06-01.csv (new)" in first.run_requests[0].tags["loyalty/reason"]
    quiet = tick(defs_for(), first.cursor)  # a restart resumes from the stored cursor
    assert quiet.run_requests == [] and "no new files" in quiet.skip_reason.skip_message
    put("historical_purchases/2024-06-02.csv", HEADER)
    put("historical_purchases/2024-06-01.csv", HEADER + "o1,ann,tea,2.00,2024-06-01T10:00:00Z\n")
    second = tick(defs_for(), quiet.cursor)
    assert request_of(second) == ("materialize_everything", ("2024-06-01", "2024-06-02"), None)
    assert first.run_requests[0].run_key != second.run_requests[0].run_key
    assert "historical_purchases/notes.csv" in json.loads(second.cursor)


def test_sensor_on_a_local_folder(inputs):
    def put(key, text):
        path = inputs.root / "s3" / key
        if path.exists():  # a rewrite keeping size and mtime (cp -p, rsync -a) is seen by its bytes
            keep_mtime(path, lambda: inputs.csv(key, text))
        else:
            inputs.csv(key, text)

    check_sensor(lambda: build_defs(inputs.env()), put)


def test_sensor_on_s3_over_http(inputs, s3_bucket):
    check_sensor(
        lambda: build_defs(inputs.env(**s3_bucket.env())), lambda key, text: s3_bucket.put(f"exports/{key}", text)
    )


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
    inputs.kafka(
        "purchases",
        [("ann", {"product_id": "tea"}, "2024-06-01T10:00:00"), ("ann", {"product_id": "tea"}, "2024-06-03T10:00:00")],
    )
    (inputs.root / "kafka" / "purchases" / "README.txt").write_text("not a snapshot")
    sensor = defs.resolve_sensor_def("kafka_new_files")

    def tick(cursor):
        with dg.build_sensor_context(
            instance=dg.DagsterInstance.ephemeral(), cursor=cursor, resources=defs.resources, definitions=defs
        ) as context:
            return sensor(context)

    first = tick(None)
    assert request_of(first) == ("materialize_everything", ("2024-06-01", "2024-06-03"), None)
    assert tick(first.cursor).run_requests == []
    inputs.write_lines(
        "purchases", "late.jsonl.gz", ['{"partition":1,"offset":0,"ts":1717545600000,"key":"bob","payload":"{}"}']
    )
    inputs.write_lines("purchases", "broken.jsonl.gz", ["this is not gzip"])
    (inputs.root / "kafka" / "purchases" / "broken.jsonl.gz").write_bytes(b"\x1f\x8b garbage")
    second = tick(first.cursor)
    assert request_of(second) == ("materialize_everything", "2024-06-05", None)
    assert tick(second.cursor).run_requests == []  # the broken file is reported once, not on every tick


def test_a_tick_waits_while_a_run_is_in_flight_and_keeps_its_cursor(inputs):
    defs = build_defs(inputs.env())
    inputs.kafka("purchases", [("ann", {"product_id": "tea"}, "2024-06-01T10:00:00")])
    instance = dg.DagsterInstance.ephemeral()
    queued = instance.create_run_for_job(defs.resolve_job_def("materialize_everything"))  # not started yet
    for name in SENSORS:
        with dg.build_sensor_context(
            instance=instance, cursor=None, resources=defs.resources, definitions=defs
        ) as context:
            result = defs.resolve_sensor_def(name)(context)
        assert result.run_requests == [] and result.cursor is None
        assert result.skip_reason.skip_message == f"waiting for run {queued.run_id} (NOT_STARTED) to settle"


def schedule_tick(defs: dg.Definitions, instance: dg.DagsterInstance, at: datetime):
    def evaluate():
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=at,
            resources=defs.resources,
            repository_def=defs.get_repository_def(),
        )
        return defs.resolve_schedule_def("daily_materialization").evaluate_tick(context)

    # in a thread of its own: the context's instance, made from its reference, leaves a context variable set (the
    # definitions state storage) that would outlive the instance and break later tests' Definitions
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(evaluate).result()


@pytest.fixture
def instance(tmp_path):
    # schedule contexts need an instance with a reference; instance_for_test would leave global state behind
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        yield instance


@pytest.mark.e2e  # a schedule tick, then the run it asks for
def test_the_schedules_first_tick_on_a_gap_catches_up_in_one_run(inputs, instance):
    inputs.kafka(
        "purchases",
        [("ann", {"product_id": "tea"}, "2024-06-01T10:00:00"), ("ann", {"product_id": "tea"}, "2024-06-02T10:00:00")],
    )
    defs = build_defs(inputs.env())
    schedule = defs.resolve_schedule_def("daily_materialization")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("15 0 * * *", "UTC")
    assert "nothing" not in schedule.description and schedule.description
    inputs.materialize("2024-06-01")
    tick = schedule_tick(defs, instance, datetime(2024, 6, 5, 0, 15, tzinfo=UTC))
    [request] = tick.run_requests
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG], request.asset_selection) == (
        "2024-06-02",
        "2024-06-04",
        None,
    )
    done = defs.resolve_job_def(request.job_name).execute_in_process(
        instance=instance, tags=request.tags, raise_on_error=False
    )
    assert done.success
    assert inputs.query("SELECT min(day)::VARCHAR, max(day)::VARCHAR, count(*) FROM points.ledger_days") == [
        ("2024-06-01", "2024-06-04", 4)
    ]
    quiet = schedule_tick(defs, instance, datetime(2024, 6, 5, 0, 15, tzinfo=UTC))
    assert quiet.run_requests == [] and quiet.skip_message == "every day through 2024-06-04 is built"


def test_the_schedule_on_an_empty_warehouse_starts_at_the_first_day_with_events(inputs, instance):
    defs = build_defs(inputs.env())
    assert (
        schedule_tick(defs, instance, datetime(2024, 6, 5, 0, 15, tzinfo=UTC)).skip_message
        == "no events in the inputs yet"
    )
    inputs.csv("historical_purchases/2024-06-03.csv", HEADER)
    [request] = schedule_tick(defs, instance, datetime(2024, 6, 5, 0, 15, tzinfo=UTC)).run_requests
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2024-06-03", "2024-06-04")


def test_the_schedule_stops_at_end_date(inputs, instance):
    """Ticks long after the data's last day catch up through end_date, not through yesterday."""
    inputs.rules("start_date: 2024-06-01\nend_date: 2024-06-03\n")
    inputs.csv("historical_purchases/2024-06-02.csv", HEADER)
    defs = build_defs(inputs.env())
    [request] = schedule_tick(defs, instance, datetime(2024, 9, 1, 0, 15, tzinfo=UTC)).run_requests
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2024-06-02", "2024-06-03")
    assert "end_date" in defs.resolve_schedule_def("daily_materialization").description


def keep_mtime(path: Path, write) -> None:
    """Rewrites a file as `cp -p` or `rsync -a` leave it: new bytes, the old modification time."""
    before = path.stat()
    write()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns


def test_a_plan_reaches_the_last_day_any_chain_built(inputs, instance):
    """A run killed after the id graph leaves the graph a day ahead: the next late file is planned through that
    day, every asset, or the id graph would refuse it."""
    inputs.kafka("products", [("tea", {"category": "c", "price": 4}, "2024-06-01T00:00:00")])
    inputs.kafka("purchases", [("ann", {"product_id": "tea"}, "2024-06-01T10:00:00")], file="day-1.jsonl")
    inputs.kafka("purchases", [("ann", {"product_id": "tea"}, "2024-06-02T10:00:00")], file="day-2.jsonl")
    defs = build_defs(inputs.env())
    inputs.materialize("2024-06-01")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ledger, "build_day", killed_after_the_id_graph)
        assert not materialize_days(defs, "2024-06-02", "2024-06-02").success
    days = (
        "SELECT max(day)::VARCHAR FROM identity.graph_days UNION ALL SELECT max(day)::VARCHAR FROM points.ledger_days"
    )
    assert inputs.query(days) == [("2024-06-02",), ("2024-06-01",)]
    seen = tick_on(defs, instance, None).cursor  # its request is not run: the files count as requested
    inputs.kafka("purchases", [("bob", {"product_id": "tea"}, "2024-06-01T11:00:00")], file="late.jsonl")
    late = tick_on(defs, instance, seen)
    assert request_of(late) == ("materialize_everything", ("2024-06-01", "2024-06-02"), None)
    assert run_in_process(defs, late.run_requests[0], instance, QUIET).success
    assert inputs.query("SELECT user_id, day::VARCHAR, kind, points FROM points.point_transactions ORDER BY ALL") == [
        ("ann", "2024-06-01", "earn", 4),
        ("ann", "2024-06-02", "earn", 4),
        ("bob", "2024-06-01", "earn", 4),
    ]


def test_a_failed_plan_is_retried_by_the_next_tick_and_not_after_it_succeeds(inputs, instance):
    inputs.kafka("purchases", [("ann", {"product_id": "tea"}, "2024-06-01T10:00:00")])
    defs, cursors = build_defs(inputs.env()), {}
    assert ticks(defs, instance, cursors, kill=True) == [False]
    [failed] = instance.get_runs()
    retry = tick_on(defs, instance, cursors["kafka_new_files"])
    [request] = retry.run_requests
    assert request.partition_key == "2024-06-01" and request.run_key != failed.tags[PLAN_TAG]
    assert f"retry of run {failed.run_id} (FAILURE)" in request.tags["loyalty/reason"]
    assert run_in_process(defs, request, instance, QUIET).success
    assert tick_on(defs, instance, retry.cursor).run_requests == []
    assert inputs.query("SELECT count(*) FROM points.ledger_days") == [(1,)]


def test_a_plan_failing_again_and_again_stops_until_an_input_changes(inputs, instance, monkeypatch):
    inputs.kafka("purchases", [("ann", {"product_id": "tea"}, "2024-06-01T10:00:00")])
    defs, cursor = build_defs(inputs.env()), None
    monkeypatch.setattr(ledger, "build_day", killed_after_the_id_graph)
    for _ in range(MAX_ATTEMPTS):
        result = tick_on(defs, instance, cursor)
        [request] = result.run_requests
        assert not run_in_process(defs, request, instance, QUIET).success
        cursor = result.cursor
    stopped = tick_on(defs, instance, cursor)
    assert stopped.run_requests == [] and f"failed {MAX_ATTEMPTS} times" in stopped.skip_reason.skip_message
    inputs.kafka("purchases", [("bob", {"product_id": "tea"}, "2024-06-02T10:00:00")], file="more.jsonl")
    [request] = tick_on(defs, instance, cursor).run_requests  # a new file: the old one is planned with it
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2024-06-01", "2024-06-02")


def test_files_rewritten_with_the_same_size_and_mtime_are_seen_by_both_sensors(inputs, instance):
    topic_file = inputs.root / "kafka" / "purchases" / "part-0.jsonl"
    inputs.kafka("purchases", [("ann", {"product_id": "tea"}, "2024-06-01T10:00:00")])
    csv = inputs.csv("historical_purchases/2024-06-01.csv", HEADER + "o1,ann,tea,1.00,2024-06-01T10:00:00Z\n")
    defs, cursors = build_defs(inputs.env()), {}
    assert ticks(defs, instance, cursors) == [True, True]
    keep_mtime(topic_file, lambda: topic_file.write_text(topic_file.read_text().replace('"ann"', '"bob"')))
    keep_mtime(csv, lambda: csv.write_text(csv.read_text().replace("1.00", "2.00")))
    [kafka] = tick_on(defs, instance, cursors["kafka_new_files"]).run_requests
    [s3] = tick_on(defs, instance, cursors["s3_new_files"], "s3_new_files").run_requests
    assert (kafka.partition_key, s3.partition_key) == ("2024-06-01", "2024-06-01")
    assert "kafka/purchases/part-0.jsonl (rewritten)" in kafka.tags["loyalty/reason"]
    assert "s3/historical_purchases/2024-06-01.csv (rewritten)" in s3.tags["loyalty/reason"]
    assert ticks(defs, instance, cursors) == [True, True]
    assert inputs.query("SELECT user_id FROM raw.purchases") == [("bob",)]
    assert inputs.query("SELECT price::VARCHAR FROM raw.historical_purchases") == [("2.00",)]
    # touched, not changed: the same bytes ask for nothing
    for path in (topic_file, csv):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert ticks(defs, instance, cursors) == []


def test_a_cursor_of_older_releases_holding_mtime_and_size_plans_nothing_new(inputs, instance):
    topic_file = inputs.root / "kafka" / "purchases" / "part-0.jsonl"
    inputs.kafka("purchases", [("ann", {"product_id": "tea"}, "2024-06-01T10:00:00")])
    csv = inputs.csv("historical_purchases/2024-06-01.csv", HEADER + "o1,ann,tea,1.00,2024-06-01T10:00:00Z\n")
    defs = build_defs(inputs.env())

    def old(path: Path) -> str:
        return f"{path.stat().st_mtime_ns}-{path.stat().st_size}"

    kafka = tick_on(defs, instance, json.dumps({str(topic_file): [old(topic_file), "2024-06-01", "2024-06-01"]}))
    s3 = tick_on(defs, instance, json.dumps({"historical_purchases/2024-06-01.csv": old(csv)}), "s3_new_files")
    assert (kafka.run_requests, s3.run_requests) == ([], [])
    # the cursors now hold the files' hashes: a later rewrite keeping size and mtime is seen
    keep_mtime(csv, lambda: csv.write_text(csv.read_text().replace("1.00", "2.00")))
    assert request_of(tick_on(defs, instance, s3.cursor, "s3_new_files"))[1] == "2024-06-01"
    assert tick_on(defs, instance, kafka.cursor).run_requests == []


def test_contents_put_back_as_they_were_run_again_under_a_new_run_key(inputs):
    """A, B, A, B: the fourth plan has the second's versions, but Dagster launches a run key once."""
    path, keys, cursor = "historical_purchases/2024-06-01.csv", [], None
    for price in ("1.00", "2.00", "1.00", "2.00"):
        inputs.csv(path, HEADER + f"o1,ann,tea,{price},2024-06-01T10:00:00Z\n")
        result = tick(build_defs(inputs.env()), cursor)
        [request] = result.run_requests
        keys.append(request.run_key)
        cursor = result.cursor
    assert len(set(keys)) == 4
