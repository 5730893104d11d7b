"""Bad input, config and environment: the run finishes with the bad item quarantined (source, location, reason) and
the good data loaded, or stops early with a one-line error naming what is wrong. Never a crash, hang or silent loss.
See docs/reliability.md for the classes."""

import gzip
import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from loyalty_pipeline.cli import main
from loyalty_pipeline.definitions import build_defs
from loyalty_pipeline.defs.automation import planning
from loyalty_pipeline.defs.exports import UNSAFE_KEY
from loyalty_pipeline.defs.runs import materialize_days
from loyalty_pipeline.domain.config import RulesError
from loyalty_pipeline.serve.serving import ServingCopy
from loyalty_pipeline_tests.scenarios import SEED_DATA, Inputs, envelope, ms

RAW = ("raw/purchases", "raw/historical_purchases")
DAY = "2024-06-01"
GOOD = ("ann", {"product_id": "tea"}, f"{DAY}T09:00:00")


def line(ts_ms: int, partition: int = 0, offset: int = 1) -> str:
    fields = envelope("purchases", "bob", {"product_id": "tea"}, f"{DAY}T10:00:00", 0, 0)
    return json.dumps({**fields, "ts": ts_ms, "partition": partition, "offset": offset})


def reasons(inputs: Inputs) -> list[tuple]:
    return inputs.query("SELECT location, reason FROM raw.rejected_records ORDER BY ALL")


# --- time bounds: an event far away in time is quarantined and never sets the range ------------------------------


@pytest.mark.parametrize(
    "ts_ms, reason",
    [
        (ms("2099-01-01T00:00:00"), "event time after"),  # a clock in the future
        (ms(f"{DAY}T10:00:00") // 1000, "event time before the first partition (2024-06-01)"),  # seconds, not ms
        (-5, "event time before the first partition (2024-06-01)"),
        (2**62, "event time after"),  # beyond any timestamp
    ],
)
def test_an_event_out_of_time_is_quarantined_and_the_range_comes_from_valid_events(inputs, ts_ms, reason):
    inputs.rules(f"start_date: {DAY}\n")
    inputs.kafka("purchases", [GOOD], extra_lines=(line(ts_ms),))
    defs = build_defs(inputs.env())
    assert planning.input_days(defs.resources["sources"], defs.resources["rules"]) == (date(2024, 6, 1),) * 2
    inputs.materialize(DAY, assets=RAW)
    assert inputs.query("SELECT user_id FROM raw.purchases") == [("ann",)]
    [(location, why)] = reasons(inputs)
    assert location.endswith("part-0.jsonl:2") and why.startswith(reason)


def test_the_future_tolerance_is_configurable_and_checked_at_load(inputs):
    tomorrow = datetime.now(UTC).replace(tzinfo=None).date().isoformat()
    inputs.rules(f"start_date: {DAY}\n")
    inputs.kafka("purchases", [GOOD], extra_lines=(line(ms(f"{tomorrow}T23:59:00")),))
    defs = build_defs(inputs.env(LOYALTY_FUTURE_TOLERANCE="3 days"))
    assert planning.input_days(defs.resources["sources"], defs.resources["rules"])[1].isoformat() == tomorrow
    with pytest.raises(RulesError, match="LOYALTY_FUTURE_TOLERANCE='soon' is not a duration"):
        build_defs(inputs.env(LOYALTY_FUTURE_TOLERANCE="soon"))


def test_a_historical_file_dated_in_the_future_is_skipped_by_name(inputs):
    inputs.rules(f"start_date: {DAY}\n")
    header = "order_id,user_id,product_id,price,purchased_at\n"
    inputs.csv(f"historical_purchases/{DAY}.csv", header + f"h1,ann,tea,2.50,{DAY}T07:00:00Z\n")
    inputs.csv("historical_purchases/2099-01-01.csv", header + "h2,ann,tea,2.50,2099-01-01T07:00:00Z\n")
    defs = build_defs(inputs.env())
    assert planning.input_days(defs.resources["sources"], defs.resources["rules"]) == (date(2024, 6, 1),) * 2
    inputs.materialize(DAY, assets=RAW)
    assert inputs.query("SELECT order_id FROM raw.historical_purchases") == [("h1",)]
    [(location, why)] = reasons(inputs)
    assert location == "historical_purchases/2099-01-01.csv" and why.startswith("file day after ")


# --- coordinates beyond their types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "partition, offset, reason",
    [
        (2**31, 1, "envelope: partition out of range (0 to 2147483647)"),
        (-1, 1, "envelope: partition out of range (0 to 2147483647)"),
        (0, 2**63, "envelope: offset out of range (0 to 9223372036854775807)"),
        (0, -7, "envelope: offset out of range (0 to 9223372036854775807)"),
    ],
)
def test_a_partition_or_offset_out_of_range_is_quarantined(inputs, partition, offset, reason):
    inputs.kafka("purchases", [GOOD], extra_lines=(line(ms(f"{DAY}T10:00:00"), partition, offset),))
    inputs.materialize(DAY, assets=RAW)
    assert inputs.query("SELECT user_id FROM raw.purchases") == [("ann",)]
    assert [why for _, why in reasons(inputs)] == [reason]


# --- files that cannot be read do not stop the others, at start-up or in the run; their readable lines load ------


def test_broken_snapshot_files_never_stop_the_range_or_the_run(inputs):
    inputs.kafka("purchases", [GOOD])
    folder = inputs.root / "kafka" / "purchases"
    # an export still being written: its lines are all there, the gzip trailer is not yet
    written = "".join(line(ms(f"{DAY}T12:00:00"), offset=20 + n) + "\n" for n in range(3))
    (folder / "truncated.jsonl.gz").write_bytes(gzip.compress(written.encode())[:-8])
    (folder / "not-gzip.jsonl.gz").write_bytes(b"plain text\n")
    (folder / "a-folder.jsonl").mkdir()  # a folder named like a file is not a file
    (folder / "shouting.JSONL").write_text(line(ms(f"{DAY}T11:00:00"), offset=9) + "\n")  # read, whatever the case
    defs = build_defs(inputs.env())
    assert planning.input_days(defs.resources["sources"], defs.resources["rules"]) == (date(2024, 6, 1),) * 2
    inputs.materialize(DAY, assets=RAW)
    assert inputs.query("SELECT user_id, kafka_offset FROM raw.purchases ORDER BY ALL") == [
        ("ann", 0),
        ("bob", 9),
        ("bob", 20),
        ("bob", 21),
        ("bob", 22),
    ]
    assert [(location.rsplit("/", 1)[1], why.split(":")[0]) for location, why in reasons(inputs)] == [
        ("a-folder.jsonl", "not read"),
        ("not-gzip.jsonl.gz:0", "unreadable file"),
        ("truncated.jsonl.gz:0", "unreadable file"),
    ]


# --- S3: keys never become paths, an empty or unreachable location never erases ---------------------------------

CUSTOMERS_CSV = "user_id,name,email,signup_date\nu1,Una,u1@x,2024-01-01\n"


def test_an_object_key_climbing_out_of_the_work_folder_is_quarantined_not_written(s3_bucket, inputs):
    escape = "customers/../../../../../../tmp/escaped-by-key.csv"
    s3_bucket.put("exports/customers/part-1.csv", CUSTOMERS_CSV)
    s3_bucket.put(f"exports/{escape}", CUSTOMERS_CSV.replace("u1,Una", "u9,Eve"))
    inputs.materialize(DAY, assets=("raw/customers",), **s3_bucket.env())
    assert inputs.query("SELECT user_id FROM raw.customers") == [("u1",)]
    assert reasons(inputs) == [(escape, UNSAFE_KEY)]
    assert not Path("/tmp/escaped-by-key.csv").exists()


def test_a_key_too_long_for_a_file_name_or_with_a_control_character_never_costs_the_other_files(s3_bucket, inputs):
    long_key, control = "customers/" + "a" * 300 + ".csv", "customers/x\x01y.csv"
    s3_bucket.put("exports/customers/part-1.csv", CUSTOMERS_CSV)
    s3_bucket.put(f"exports/{long_key}", CUSTOMERS_CSV.replace("u1,Una", "u2,Ola"))
    s3_bucket.put(f"exports/{control}", CUSTOMERS_CSV.replace("u1,Una", "u9,Eve"))
    inputs.materialize(DAY, assets=("raw/customers",), **s3_bucket.env())
    assert inputs.query("SELECT user_id FROM raw.customers ORDER BY ALL") == [("u1",), ("u2",)]
    assert reasons(inputs) == [(control, UNSAFE_KEY)]


def test_an_empty_or_mistyped_s3_location_stops_and_keeps_what_was_loaded(inputs):
    inputs.csv("customers/part-1.csv", CUSTOMERS_CSV)
    inputs.kafka("purchases", [GOOD])
    inputs.materialize(DAY, assets=("raw/customers",))
    typo = inputs.root / "s3-typo"
    result = materialize_days(build_defs(inputs.env(LOYALTY_S3_URL=str(typo))), DAY, DAY, assets=("raw/customers",))
    assert not result.success
    [failure] = [event.step_failure_data.error.message for event in result.all_events if event.is_step_failure]
    assert f"{typo}/customers/ lists no CSV file, but raw.customers holds 1 rows" in failure
    assert inputs.query("SELECT user_id FROM raw.customers") == [("u1",)]


def test_an_emptied_kafka_folder_stops_instead_of_erasing_its_days(inputs):
    inputs.kafka("purchases", [GOOD])
    inputs.materialize(DAY, assets=RAW)
    (inputs.root / "kafka" / "purchases" / "part-0.jsonl").unlink()
    result = materialize_days(build_defs(inputs.env()), DAY, DAY, assets=("raw/purchases",))
    [failure] = [event.step_failure_data.error.message for event in result.all_events if event.is_step_failure]
    assert "has no snapshot file, but raw.purchases holds 1 rows of 2024-06-01..2024-06-01" in failure
    assert inputs.query("SELECT user_id FROM raw.purchases") == [("ann",)]


def test_an_unreachable_s3_endpoint_is_one_line_naming_the_location(inputs, capsys, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    inputs.kafka("purchases", [GOOD])
    env = {"LOYALTY_S3_URL": "s3://no-such-bucket/exports", "LOYALTY_S3_ENDPOINT_URL": "http://127.0.0.1:9"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(["materialize", "--data-dir", str(inputs.root), "--warehouse", str(inputs.warehouse)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("error: s3://no-such-bucket/exports/historical_purchases/: ")


def test_a_step_stopping_on_bad_input_is_one_line_on_the_cli_never_a_stack_trace(inputs, capsys):
    inputs.kafka("purchases", [GOOD])
    common = ["materialize", "--data-dir", str(inputs.root), "--warehouse", str(inputs.warehouse)]
    assert main(common) == 0
    (inputs.root / "kafka" / "purchases" / "part-0.jsonl").unlink()
    capsys.readouterr()
    assert main([*common, "--from", DAY, "--to", DAY]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "Stack Trace" not in out + err and 'File "' not in out + err
    assert "error: kafka_topics: " in err and "has no snapshot file, but raw.purchases holds 1 rows" in err
    assert "skipped: points__point_transactions: a step it reads from failed" in err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOYALTY_S3_URL": "ftp://host/x"}, "error: LOYALTY_S3_URL=ftp://host/x: use s3://bucket/prefix"),
        (
            {"LOYALTY_S3_URL": "s3://b/x", "LOYALTY_S3_ENDPOINT_URL": "localhost:9000"},
            "error: LOYALTY_S3_ENDPOINT_URL=localhost:9000: ",
        ),
    ],
)
def test_a_mistyped_s3_setting_is_one_line_naming_the_variable(inputs, capsys, monkeypatch, env, message):
    inputs.kafka("purchases", [GOOD])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["materialize", "--data-dir", str(inputs.root), "--warehouse", str(inputs.warehouse)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err


def test_a_file_url_is_the_local_folder(inputs):
    inputs.csv("customers/part-1.csv", CUSTOMERS_CSV)
    inputs.materialize(DAY, assets=("raw/customers",), LOYALTY_S3_URL=(inputs.root / "s3").as_uri())
    assert inputs.query("SELECT user_id FROM raw.customers") == [("u1",)]


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        (
            ["--from", "2024-05-31", "--to", DAY],
            "error: --from 2024-05-31 is before the first day partition 2024-06-01",
        ),
        (["--from", DAY, "--to", "2099-01-01"], "error: --to 2099-01-01 is after "),
    ],
)
def test_a_range_outside_the_partitions_or_past_now_is_a_clear_error(inputs, capsys, bounds, message):
    inputs.rules(f"start_date: {DAY}\n")
    inputs.kafka("purchases", [GOOD])
    assert main(["materialize", "--data-dir", str(inputs.root), "--warehouse", str(inputs.warehouse), *bounds]) == 2
    assert capsys.readouterr().err.startswith(message)


def test_a_ts_the_run_rejects_never_sets_the_default_range(inputs, capsys):
    inputs.rules(f"start_date: {DAY}\n")
    fields = envelope("purchases", "bob", {"product_id": "tea"}, f"{DAY}T10:00:00", 0, 5)
    inputs.kafka("purchases", [GOOD], extra_lines=(json.dumps({**fields, "ts": str(ms("2024-06-10T10:00:00"))}),))
    assert main(["materialize", "--data-dir", str(inputs.root), "--warehouse", str(inputs.warehouse)]) == 0
    assert f"materializing {DAY} .. {DAY}" in capsys.readouterr().out


def test_from_after_to_is_a_clear_error(inputs, capsys):
    inputs.kafka("purchases", [GOOD])
    common = ["materialize", "--data-dir", str(inputs.root), "--warehouse", str(inputs.warehouse)]
    assert main([*common, "--from", "2024-06-03", "--to", "2024-06-01"]) == 2
    assert "error: the range 2024-06-03 .. 2024-06-01 is empty (--from after --to?)" in capsys.readouterr().err


# --- an unusable warehouse path fails at once; only a real lock is waited for --------------------------------------


@pytest.mark.parametrize("kind", ["missing folder", "a folder", "not a database"])
def test_an_unusable_warehouse_path_is_a_one_line_error_at_once(inputs, capsys, monkeypatch, kind):
    waits = []
    monkeypatch.setattr("loyalty_pipeline.defs.resources.time.sleep", waits.append)
    inputs.kafka("purchases", [GOOD])
    path = {
        "missing folder": inputs.root / "no" / "such" / "warehouse.duckdb",
        "a folder": inputs.root / "kafka",
        "not a database": inputs.csv("notes.txt", "this is not a DuckDB file\n" * 100),
    }[kind]
    code = main(["materialize", "--data-dir", str(inputs.root), "--warehouse", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: warehouse {path}: ") and "\n" not in err
    assert waits == []  # no waiting as if it were locked


# --- values beyond their types, and config that makes no sense, are refused at load or quarantined ---------------


@pytest.mark.parametrize(
    "text, named",
    [
        ("points: {validity_days: 99999999999}", "points.validity_days"),
        ("points: {earn_rate: 1e300}", "points.earn_rate"),
        ("points: {earn_rate: 0.1234567}", "points.earn_rate"),  # would be rounded silently
        ("tiers: [{name: A, above: 1e40}]", "tiers.0.above"),
        ("tiers: [{name: A, above: 100}, {name: B, above: 100}]", "tier thresholds (of two equal ones"),
        ("tiers: [{name: A, above: 100}, {name: A, above: 200}]", "tier names must be unique"),
        ("promotions: [{name: p, considers: [a]}, {name: p, considers: [b]}]", "promotion names must be unique"),
        ("promotions: [{name: p, considers: [a], require_all: [b]}]", "require_all ['b'] not in considers"),
        ("promotions: [{name: p, considers: [a], min_spend: 1e30}]", "promotions.0.min_spend"),
        ("stamp_card: {cycle: 99999999999}", "stamp_card.cycle"),
        ("stamp_card: {cycle: true}", "stamp_card.cycle"),  # a boolean is not 1
        ("stamp_card: {product_id: ' '}", "stamp_card.product_id"),
        ("promotions: [{name: p, considers: []}]", "promotions.0.considers"),
        ("promotions: [{name: '', considers: [a]}]", "promotions.0.name"),
        ("promotions: [{name: p, considers: [a], exclude: [a]}]", "every product it considers is excluded"),
        ("default_tier: GOLD", "default_tier GOLD is also a tier's name"),
        (
            "journeys: [{id: j, audience: 'true', stages: [{id: s, exit_criteria: "
            "[{name: x, when: 'purchase_count > 1'}, {name: x, when: 'purchase_count > 0'}]}]}]",
            "journey j, stage s: exit names must be unique",
        ),
        (
            "journeys: [{id: j, audience: 'true', stages: [{id: s, steps: [{wait_days: 99999999999}]}]}]",
            "wait_days",
        ),
    ],
)
def test_config_out_of_range_or_meaningless_is_refused_naming_the_key(tmp_path, text, named):
    path = tmp_path / "loyalty.yaml"
    path.write_text(text + "\n")
    with pytest.raises(RulesError, match=re.escape(named)):
        build_defs({"LOYALTY_CONFIG": str(path), "LOYALTY_DATA_DIR": str(tmp_path)})


@pytest.mark.parametrize("value", ["lots", "1KB", "-5GB"])
def test_a_memory_limit_that_is_not_a_size_is_refused_naming_the_variable(tmp_path, value):
    with pytest.raises(RulesError, match="LOYALTY_MEMORY_LIMIT="):
        build_defs({"LOYALTY_MEMORY_LIMIT": value, "LOYALTY_DATA_DIR": str(tmp_path)})


def test_a_rules_file_that_is_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "loyalty.yaml"
    path.write_bytes("default_tier: N\xe9\n".encode("latin-1"))
    with pytest.raises(RulesError, match=f"cannot read rules file {re.escape(str(path))}"):
        build_defs({"LOYALTY_CONFIG": str(path), "LOYALTY_DATA_DIR": str(tmp_path)})


def test_a_price_too_large_or_too_precise_is_quarantined_alike_on_kafka_and_in_csv(inputs):
    inputs.kafka(
        "products",
        [
            ("tea", {"category": "c", "price": 2.5}, f"{DAY}T00:00:00"),
            ("gold", {"category": "c", "price": 9_000_000_000_000_000}, f"{DAY}T00:00:00"),
            ("fine", {"category": "c", "price": 1.005}, f"{DAY}T00:00:00"),
        ],
    )
    header = "order_id,user_id,product_id,price,purchased_at\n"
    at = f"{DAY}T07:00:00Z"
    rows = f"h1,ann,tea,2.50,{at}\nh2,ann,gold,9000000000000000.00,{at}\nh3,ann,fine,1.005,{at}\n"
    rows += f"h4,ann,fine,1.999999999999999999999,{at}\nh5,ann,fine,-1e-300,{at}\nh6,ann,fine,1e2,{at}\n"
    rows += f"h7,ann,tea,2.5000,{at}\n"  # trailing zeros are 2 decimals
    inputs.csv(f"historical_purchases/{DAY}.csv", header + rows)
    inputs.materialize(DAY, assets=("raw/products", "raw/historical_purchases"))
    assert inputs.query("SELECT product_id FROM raw.products") == [("tea",)]
    assert inputs.query("SELECT order_id FROM raw.historical_purchases ORDER BY ALL") == [("h1",), ("h7",)]
    assert sorted(why for _, why in reasons(inputs)) == [
        "field price must be a non-negative number with at most 2 decimals",
        "field price must be at most 1000000000",
        "price must be a non-negative number",
        "price must be a non-negative number",
        "price must be at most 1000000000",
        "price must have at most 2 decimals",
        "price must have at most 2 decimals",
    ]


def test_a_line_that_is_not_utf8_is_quarantined_and_its_neighbours_load(inputs):
    inputs.kafka("purchases", [GOOD])
    path = inputs.root / "kafka" / "purchases" / "till-2.jsonl"
    path.write_bytes(
        (line(ms(f"{DAY}T11:00:00"), offset=5) + "\n").encode()
        + b'{"topic": "purchases", "key": "caf\xe9"}\n'  # Latin-1
        + ("x" * 3_000_000 + "\n").encode()  # over DuckDB's 2 MB line limit
        + (line(ms(f"{DAY}T11:30:00"), offset=6) + "\n").encode()
    )
    header = "order_id,user_id,product_id,price,purchased_at\n"
    inputs.csv(f"historical_purchases/{DAY}.csv", "")
    (inputs.root / "s3" / "historical_purchases" / f"{DAY}.csv").write_bytes(
        (header + f"h1,ann,tea,2.50,{DAY}T07:00:00Z\n").encode("utf-16")
    )
    inputs.materialize(DAY, assets=RAW)
    assert inputs.query("SELECT kafka_offset FROM raw.purchases ORDER BY ALL") == [(0,), (5,), (6,)]
    assert inputs.query("SELECT count(*) FROM raw.historical_purchases") == [(0,)]
    found = [(location.rsplit("/", 1)[1], why[:28]) for location, why in reasons(inputs)]
    assert found == [
        ("till-2.jsonl:2", "not UTF-8 text (invalid cont"),
        ("till-2.jsonl:3", "not a JSON object"),
        (f"{DAY}.csv:1", "not UTF-8 text (invalid star"),  # UTF-16: the header is not UTF-8 ...
        (f"{DAY}.csv:2", "file header is unreadable, e"),  # ... so no row of the file is read as data
        (f"{DAY}.csv:3", "file header is unreadable, e"),
    ]


@pytest.mark.parametrize(
    "criterion, complaint",
    [
        ("reward_level > 5", "Cannot compare values of type VARCHAR"),
        ("lower(total_spend) = 'x'", "lower(DECIMAL(18,2))"),
        ("(" * 3000 + "true" + ")" * 3000, "nested too deeply"),
    ],
)
def test_a_criterion_that_would_fail_at_run_time_is_refused_at_load_naming_the_journey(tmp_path, criterion, complaint):
    path = tmp_path / "loyalty.yaml"
    journey = {"id": "j", "audience": criterion, "stages": [{"id": "s", "steps": [{"activation": "a"}]}]}
    path.write_text(json.dumps({"journeys": [journey]}))
    with pytest.raises(RulesError, match=r"journeys\.0.*audience") as raised:
        build_defs({"LOYALTY_CONFIG": str(path), "LOYALTY_DATA_DIR": str(tmp_path)})
    assert complaint in str(raised.value)


def test_a_criterion_failing_only_on_real_values_fails_the_step_naming_the_journey_and_field(inputs):
    journey = {"id": "j", "audience": "purchase_count * 2000000000000000000 > 1", "stages": [{"id": "s"}]}
    inputs.rules(json.dumps({"journeys": [journey]}))  # the sample profiles at load have at most 3 purchases
    inputs.kafka("purchases", [("ann", {"product_id": "tea"}, f"{DAY}T1{hour}:00:00") for hour in range(5)])
    result = materialize_days(build_defs(inputs.env()), DAY, DAY, assets=("journey/journey_state",))
    failure = next(event for event in result.all_events if event.is_step_failure).step_failure_data
    assert failure.user_failure_data.description.startswith(
        f"journey j, audience: fails on the profiles of {DAY}: Out of Range Error: Overflow in multiplication"
    )


# --- nothing dropped without a trace ----------------------------------------------------------------------------


def test_a_copy_of_a_coordinate_with_another_message_is_quarantined_in_one_run_or_across_days(inputs):
    same = line(ms(f"{DAY}T10:00:00"), offset=3)
    other = json.dumps({**json.loads(same), "payload": json.dumps({"product_id": "cake"})})
    next_day = json.dumps({**json.loads(same), "ts": ms("2024-06-02T10:00:00")})
    inputs.write_lines("purchases", "a.jsonl", [same, same])  # at least once: one row
    inputs.write_lines("purchases", "b.jsonl", [other])  # the same coordinate, another product
    inputs.write_lines("purchases", "c.jsonl", [next_day])  # the same coordinate, another day
    inputs.materialize(DAY, assets=("raw/purchases",))
    inputs.materialize("2024-06-02", assets=("raw/purchases",))  # the next day on its own
    assert inputs.query("SELECT product_id, day::VARCHAR FROM raw.purchases") == [("tea", DAY)]
    conflict = "conflicting copy of partition 0 offset 3 (another message kept)"
    assert [(location.rsplit("/", 1)[1], why) for location, why in reasons(inputs)] == [
        ("b.jsonl:1", conflict),
        ("c.jsonl:1", conflict),
    ]


def test_a_corrupt_serving_copy_is_one_line_saying_what_to_run(tmp_path, capsys):
    warehouse = tmp_path / "warehouse.duckdb"
    (tmp_path / "warehouse.serving.sqlite").write_bytes(b"not a database" * 1000)
    assert main(["profile", "kris", "--warehouse", str(warehouse)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"error: the serving copy {tmp_path / 'warehouse.serving.sqlite'}")
    assert err.endswith("run `loyalty-pipeline materialize` to publish it again")


def test_a_later_range_first_on_an_empty_warehouse_is_refused_naming_the_first_day(inputs, capsys):
    inputs.kafka("purchases", [GOOD, ("ann", {"product_id": "tea"}, "2024-06-03T09:00:00")])
    common = ["materialize", "--data-dir", str(inputs.root), "--warehouse", str(inputs.warehouse)]
    assert main([*common, "--from", "2024-06-03", "--to", "2024-06-03"]) == 2
    assert f"has no day built yet and the inputs start at {DAY}: materialize from {DAY} first" in (
        capsys.readouterr().err
    )


def test_files_and_folders_that_are_not_read_are_reported_by_name(inputs):
    inputs.kafka("purchases", [GOOD])
    (inputs.root / "kafka" / "purchases" / "export.jsonl.tmp").write_text(line(ms(f"{DAY}T10:00:00")) + "\n")
    inputs.write_lines("Purchases", "part-0.jsonl", [line(ms(f"{DAY}T10:00:00"))])  # another letter case
    (inputs.root / "kafka" / "purchases" / "nested.jsonl").mkdir()
    (inputs.root / "kafka" / "purchases" / "gone.jsonl").symlink_to(inputs.root / "nowhere.jsonl")
    inputs.materialize(DAY, assets=("raw/purchases",))
    assert inputs.query("SELECT user_id FROM raw.purchases") == [("ann",)]
    assert [(location.split("/kafka/")[1], why[:40]) for location, why in reasons(inputs)] == [
        ("Purchases", "not read: not a known topic folder (user"),
        ("purchases/export.jsonl.tmp", "not read: a snapshot file is named *.jso"),
        ("purchases/gone.jsonl", "not read: not a regular file (a folder, "),
        ("purchases/nested.jsonl", "not read: not a regular file (a folder, "),
    ]


def test_a_line_with_a_control_character_is_never_cut(inputs):
    """A raw control character inside a JSON string is not JSON: the whole line is quarantined, as written."""
    written = line(ms(f"{DAY}T10:00:00"), offset=4).replace('"bob"', '"bo\x1fb"')
    inputs.kafka("purchases", [GOOD], extra_lines=(written,))
    inputs.materialize(DAY, assets=("raw/purchases",))
    assert inputs.query("SELECT user_id FROM raw.purchases") == [("ann",)]
    assert inputs.query("SELECT reason, raw FROM raw.rejected_records") == [("not a JSON object", written)]


def test_a_later_day_first_from_the_ui_is_refused_when_its_file_holds_earlier_days(inputs):
    """A run of one partition (as the UI launches it) on an empty warehouse: the snapshot it reads also holds an
    earlier day, so the ledger refuses to start from zero and names the range to run."""
    inputs.kafka("purchases", [GOOD, ("ann", {"product_id": "tea"}, "2024-06-03T09:00:00")])
    inputs.kafka("products", [("tea", {"category": "c", "price": 2}, f"{DAY}T00:00:00")])
    result = materialize_days(build_defs(inputs.env()), "2024-06-03", "2024-06-03", assets=("points/point_balances",))
    assert "materialize 2024-06-01..2024-06-03 as one run" in _first_failure(result)


def _first_failure(result) -> str:
    [failure] = [event.step_failure_data.error for event in result.all_events if event.is_step_failure]
    return (failure.cause or failure).message


def test_a_later_day_first_from_the_ui_is_refused_when_its_files_hold_only_that_day(inputs):
    """One historical file per day: a run of the later day reads only its own file, but the listing shows an earlier
    day, so the ledger does not start from zero."""
    header = "order_id,user_id,product_id,price,purchased_at\n"
    inputs.rules(f"start_date: {DAY}\n")
    inputs.csv(f"historical_purchases/{DAY}.csv", header + f"h1,ann,tea,2.50,{DAY}T07:00:00Z\n")
    inputs.csv("historical_purchases/2024-06-02.csv", header + "h2,ann,tea,2.50,2024-06-02T07:00:00Z\n")
    result = materialize_days(build_defs(inputs.env()), "2024-06-02", "2024-06-02", assets=("points/point_balances",))
    assert "materialize 2024-06-01..2024-06-02 as one run" in _first_failure(result)
    inputs.materialize(DAY, "2024-06-02", assets=("points/point_balances",))  # the one run it names works


def test_a_later_day_first_from_the_ui_is_refused_by_the_id_graph_when_a_file_holds_earlier_days(inputs):
    """The id graph reads only loaded days: the snapshot file read for the later day says an earlier one exists."""
    inputs.kafka(
        "users", [("ann", {"name": "Ann"}, f"{DAY}T08:00:00"), ("bob", {"name": "Bob"}, "2024-06-02T08:00:00")]
    )
    result = materialize_days(build_defs(inputs.env()), "2024-06-02", "2024-06-02", assets=("identity/id_graph",))
    assert "id graph: 2024-06-02 needs the graph at the end of 2024-06-01" in _first_failure(result)


def test_a_key_that_is_blank_or_not_a_string_or_a_message_of_another_topic_is_quarantined(inputs):
    lines = [
        json.dumps({**envelope("purchases", key, {"product_id": "tea"}, f"{DAY}T10:00:00", 0, offset)})
        for offset, key in enumerate(["", "  ", 5, {"a": 1}, "ann\u0000x", " ann "], start=10)
    ]
    lines.append(
        json.dumps(
            envelope("user_activity", "bob", {"event_type": "view", "product_id": "tea"}, f"{DAY}T10:00:00", 0, 20)
        )
    )
    inputs.kafka("purchases", [GOOD], extra_lines=tuple(lines))
    inputs.materialize(DAY, assets=RAW)
    assert inputs.query("SELECT user_id FROM raw.purchases ORDER BY ALL") == [("ann",), ("ann",)]
    blank = "key (user_id) must be a non-blank string without control characters"
    assert [reason for _, reason in reasons(inputs)] == [
        *[blank] * 5,
        "message of topic user_activity in the folder of topic purchases",
    ]


@pytest.mark.parametrize("how", ["emptied", "removed"])
def test_a_snapshot_file_gone_or_emptied_stops_instead_of_erasing_its_rows(inputs, how):
    inputs.kafka("purchases", [GOOD], file="day-1.jsonl")
    inputs.kafka("purchases", [("bob", {"product_id": "tea"}, "2024-06-02T09:00:00")], file="day-2.jsonl")
    inputs.materialize(DAY, "2024-06-02", assets=RAW)
    path = inputs.root / "kafka" / "purchases" / "day-1.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("") if how == "emptied" else path.unlink()
    result = materialize_days(build_defs(inputs.env()), DAY, "2024-06-02", assets=RAW)
    failure = next(event for event in result.all_events if event.is_step_failure).step_failure_data.error
    assert (
        f"{path} is gone or empty, but raw.purchases holds 1 rows of {DAY}..2024-06-02"
        in (failure.cause or failure).message
    )
    assert inputs.query("SELECT user_id FROM raw.purchases ORDER BY ALL") == [("ann",), ("bob",)]
    inputs.write_lines("purchases", "day-1-again.jsonl", lines)  # the same messages under another name: no loss
    inputs.materialize(DAY, "2024-06-02", assets=RAW)


def test_an_empty_customers_file_stops_and_files_not_named_csv_are_reported(inputs):
    inputs.csv("customers/part-1.csv", CUSTOMERS_CSV)
    inputs.csv("customers/part-2.csv.gz", "not read")
    inputs.kafka("purchases", [GOOD])
    inputs.materialize(DAY, assets=("raw/customers",))
    assert reasons(inputs) == [("customers/part-2.csv.gz", "not read: a customers export is named *.csv")]
    inputs.csv("customers/part-1.csv", "")  # being written
    result = materialize_days(build_defs(inputs.env()), DAY, DAY, assets=("raw/customers",))
    assert not result.success
    assert inputs.query("SELECT user_id FROM raw.customers") == [("u1",)]


def test_a_historical_file_renamed_or_removed_stops_instead_of_erasing_its_day(inputs):
    header = "order_id,user_id,product_id,price,purchased_at\n"
    path = inputs.csv(f"historical_purchases/{DAY}.csv", header + f"h1,ann,tea,2.50,{DAY}T07:00:00Z\n")
    inputs.csv("historical_purchases/2024-06-02.csv", header + "h2,ann,tea,2.50,2024-06-02T07:00:00Z\n")
    inputs.materialize(DAY, "2024-06-02", assets=RAW)
    path.rename(path.with_suffix(".CSV"))
    result = materialize_days(build_defs(inputs.env()), DAY, "2024-06-02", assets=RAW)
    failure = next(event for event in result.all_events if event.is_step_failure).step_failure_data.error
    assert (
        f"historical_purchases/{DAY}.csv is gone, but raw.historical_purchases holds rows of {DAY}"
        in (failure.cause or failure).message
    )
    assert inputs.query("SELECT count(*) FROM raw.historical_purchases") == [(2,)]


def test_a_rules_file_expanding_past_its_size_through_aliases_is_refused_at_once(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefg":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [{', '.join(['*' + previous] * 10)}]\n"
    path = tmp_path / "loyalty.yaml"
    path.write_text(bomb)
    with pytest.raises(RulesError, match="more than 100000 values"):
        build_defs({"LOYALTY_CONFIG": str(path), "LOYALTY_DATA_DIR": str(tmp_path)})


@pytest.mark.parametrize(
    "env",
    [{"LOYALTY_START_DATE": "0001-01-01"}, {"LOYALTY_CONFIG": "rules"}],
)
def test_a_start_date_before_1970_is_refused(tmp_path, env):
    (tmp_path / "rules").write_text("start_date: 1969-12-31\n")
    env = {name: str(tmp_path / value) if name == "LOYALTY_CONFIG" else value for name, value in env.items()}
    with pytest.raises(RulesError, match="1970-01-01"):
        build_defs({**env, "LOYALTY_DATA_DIR": str(tmp_path)}).resources["rules"].first_day()


def test_an_event_within_the_tolerance_ahead_of_now_never_moves_as_of_past_today(inputs, capsys):
    now = datetime.now(UTC).replace(tzinfo=None)
    today = now.date().isoformat()
    inputs.rules(f"start_date: {today}\n")
    inputs.kafka("purchases", [("ann", {"product_id": "tea"}, f"{today}T00:00:00")])
    soon = json.dumps(
        envelope("purchases", "bob", {"product_id": "tea"}, (now + timedelta(hours=23)).isoformat(), 0, 9)
    )
    inputs.write_lines("purchases", "soon.jsonl", [soon])
    assert main(["materialize", "--data-dir", str(inputs.root), "--warehouse", str(inputs.warehouse)]) == 0
    assert f"materializing {today} .. {today}" in capsys.readouterr().out


def test_a_serving_store_that_cannot_be_read_is_published_again_whole(inputs):
    inputs.kafka("purchases", [GOOD])
    inputs.materialize(DAY, assets=("customer/serving_snapshot",))
    serving = inputs.warehouse.with_name("warehouse.serving.sqlite")
    serving.write_bytes(b"not a database" * 1000)  # overwritten by mistake
    inputs.materialize(DAY, assets=("customer/serving_snapshot",))
    assert json.loads(ServingCopy(serving).card("ann"))["user_id"] == "ann"


# --- values beyond their types in CSV exports are quarantined, the good rows load ------------------------------

BEYOND = ["9223372036854775807", "-9223372036854775808", "99999999999999999999", "294277-01-01T00:00:00Z", "1e20"]


def test_a_time_or_number_beyond_its_type_in_any_csv_column_is_quarantined_and_the_good_rows_load(inputs):
    inputs.rules(f"start_date: {DAY}\n")
    odd = [*BEYOND, "1717236000000.5", "infinity", "epoch"]  # lines 3 to 10
    good_ms = ms(f"{DAY}T10:00:00")
    inputs.csv(f"returns/{DAY}.csv", "purchase_id,returned_at\n" + "".join(f"p,{v}\n" for v in [good_ms, *odd]))
    header, at = "order_id,user_id,product_id,price,purchased_at\n", f"{DAY}T07:00:00Z"
    rows = "".join(f"h,ann,tea,2.50,{v}\n" for v in [at, *odd]) + f"h,ann,tea,{'9' * 40},{at}\n"  # line 11
    inputs.csv(f"historical_purchases/{DAY}.csv", header + rows)
    signups = ["2024-01-01", "294277-01-01", "infinity", "0001-01-01", "2099-01-01", "99999999999999999999"]
    inputs.csv("customers/c.csv", "user_id,name,email,signup_date\n" + "".join(f"u,U,u@x,{v}\n" for v in signups))
    inputs.materialize(DAY, assets=("raw/s3_returns", "raw/historical_purchases", "raw/customers"))
    assert inputs.query("SELECT returned_at::VARCHAR FROM raw.s3_returns") == [(f"{DAY} 10:00:00",)]
    assert inputs.query("SELECT row_no FROM raw.historical_purchases") == [(1,)]
    assert inputs.query("SELECT row_no FROM raw.customers") == [(1,)]
    expected = {
        **{f"returns/{DAY}.csv:{n}": "returned_at is not an ISO-8601 time or ms" for n in range(3, 11)},
        **{f"historical_purchases/{DAY}.csv:{n}": "purchased_at is not an ISO-8601 timestamp" for n in range(3, 11)},
        f"historical_purchases/{DAY}.csv:11": "price must be at most 1000000000",
        **{f"customers/c.csv:{n}": "signup_date must be a date from 1900-01-01 to today" for n in range(3, 7)},
        "customers/c.csv:7": "signup_date is not a date (YYYY-MM-DD)",
    }
    assert reasons(inputs) == sorted(expected.items())


# --- a historical row whose purchase id another row already has is quarantined, never a second purchase -------

HISTORY = "order_id,user_id,product_id,price,purchased_at\n"


@pytest.mark.parametrize("runs", [[(DAY, "2024-06-02")], [(DAY, DAY), ("2024-06-02", "2024-06-02")]])
def test_a_historical_row_reusing_a_purchase_id_is_quarantined_naming_the_row_kept(inputs, runs):
    inputs.csv(
        f"historical_purchases/{DAY}.csv", HISTORY + f"h-1,ana,tea,2.50,{DAY}T07:00:00Z\na:b,ana,c,1,{DAY}T08:00:00Z\n"
    )
    inputs.csv(
        "historical_purchases/2024-06-02.csv",
        HISTORY + "h-1,ana,tea,3.00,2024-06-02T07:00:00Z\n"  # s3:h-1:tea:1 again
        "a,ana,b:c,1,2024-06-02T08:00:00Z\n"  # s3:a:b:c:2 again, from other columns
        "h-2,ana,tea,1.00,2024-06-02T09:00:00Z\n",
    )
    for first, last in runs:
        inputs.materialize(first, last, assets=("loyalty/enriched_purchases",))
    assert inputs.query("SELECT purchase_id, price::VARCHAR FROM loyalty.enriched_purchases ORDER BY ALL") == [
        ("s3:a:b:c:2", "1.00"),
        ("s3:h-1:tea:1", "2.50"),
        ("s3:h-2:tea:3", "1.00"),
    ]
    kept = f"historical_purchases/{DAY}.csv"
    assert reasons(inputs) == [
        ("historical_purchases/2024-06-02.csv:2", f"purchase id s3:h-1:tea:1 is already that of {kept}:2"),
        ("historical_purchases/2024-06-02.csv:3", f"purchase id s3:a:b:c:2 is already that of {kept}:3"),
    ]


# --- a message too large for Kafka is quarantined by its size, never parsed (DuckDB ran out of memory) ----------


def test_a_valid_message_larger_than_kafka_allows_is_quarantined_by_size_and_every_topic_loads(inputs):
    inputs.rules(f"start_date: {DAY}\n")
    inputs.kafka("users", [("ann", {"name": "Ann"}, f"{DAY}T08:00:00")])
    huge = envelope("purchases", "bob", {"product_id": "tea", "store_id": "x" * 1_100_000}, f"{DAY}T10:00:00", 0, 1)
    inputs.kafka("purchases", [GOOD], file="big.jsonl.gz", extra_lines=(json.dumps(huge),))
    defs = build_defs(inputs.env())
    assert planning.input_days(defs.resources["sources"], defs.resources["rules"]) == (date(2024, 6, 1),) * 2
    inputs.materialize(DAY, assets=("raw/purchases", "raw/users"))
    loaded = "SELECT 'purchases', user_id FROM raw.purchases UNION ALL SELECT 'users', user_id FROM raw.users"
    assert inputs.query(loaded + " ORDER BY ALL") == [("purchases", "ann"), ("users", "ann")]
    [(location, why, kept)] = inputs.query("SELECT location, reason, length(raw) FROM raw.rejected_records")
    assert location.endswith("big.jsonl.gz:2") and kept == 1000
    assert why == f"line of {len(json.dumps(huge))} bytes: a message is at most 1048576 bytes (Kafka's default)"


# --- every file under a topic folder is read (JSON lines, whatever the extension's case) or reported ------------

READ_NAMES = ["late-export.JSONL", "b.ndjson", "c.json", "d.NDJSON.GZ", "e.Json.gz", "f.jsonl.gz"]
NOT_READ = ["notes.txt", "export.jsonl.tmp", "export.csv", "g.jsonl.zip"]


def test_every_file_under_a_topic_folder_is_read_or_reported_in_the_run_the_ui_the_cli_and_the_sensor(inputs, capsys):
    inputs.kafka("purchases", [GOOD])
    for offset, name in enumerate(READ_NAMES, start=1):
        text = (line(ms(f"{DAY}T10:00:00"), offset=offset) + "\n").encode()
        (inputs.root / "kafka" / "purchases" / name).write_bytes(
            gzip.compress(text) if name[-3:].lower() == ".gz" else text
        )
    for name in NOT_READ:
        inputs.write_lines("purchases", name, [line(ms(f"{DAY}T10:00:00"), offset=99)])
    defs = build_defs(inputs.env())
    with dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), resources=defs.resources, definitions=defs
    ) as context:
        cursor = defs.resolve_sensor_def("kafka_new_files")(context).cursor  # every file seen, by path
    assert all(f"/{name}" in cursor for name in READ_NAMES) and not any(name in cursor for name in NOT_READ)

    result = materialize_days(defs, DAY, DAY, assets=("raw/purchases",))
    assert inputs.query("SELECT kafka_offset FROM raw.purchases ORDER BY ALL") == [(n,) for n in range(7)]
    [materialization] = [
        event.materialization
        for event in result.get_asset_materialization_events()
        if event.materialization.asset_key == dg.AssetKey(["raw", "purchases"])
    ]
    assert materialization.metadata["files_not_read"].value == len(NOT_READ)
    [unread] = [c for c in result.get_asset_check_evaluations() if c.check_name == "every_file_read"]
    assert (unread.passed, unread.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert sorted(Path(path).name for path in unread.metadata if path != "files_not_read") == sorted(NOT_READ)
    assert {why for _, why in reasons(inputs)} == {
        "not read: a snapshot file is named *.jsonl, *.ndjson or *.json, optionally .gz"
    }

    capsys.readouterr()
    assert main(["materialize", "--data-dir", str(inputs.root), "--warehouse", str(inputs.warehouse)]) == 0
    out, err = capsys.readouterr()
    warning = [text for text in err.splitlines() if text.startswith("warning: kafka_topics: not read under")]
    assert len(warning) == 1 and all(name in warning[0] for name in NOT_READ)
    assert "warn  raw/purchases:every_file_read" in out


def test_a_csv_line_longer_than_a_message_may_be_is_quarantined_by_size(inputs):
    at = f"{DAY}T07:00:00Z"
    long_row = f"h2,ann,{'x' * 1_100_000},2.50,{at}"
    inputs.csv(f"historical_purchases/{DAY}.csv", f"{HISTORY}h1,ann,tea,2.50,{at}\n{long_row}\n")
    inputs.materialize(DAY, assets=("raw/historical_purchases",))
    assert inputs.query("SELECT order_id FROM raw.historical_purchases") == [("h1",)]
    assert inputs.query("SELECT location, reason, length(raw) FROM raw.rejected_records") == [
        (f"historical_purchases/{DAY}.csv:3", f"line of {len(long_row)} bytes: a row is at most 1048576 bytes", 1000)
    ]


def test_end_date_ends_the_partitions_and_quarantines_later_events_saying_why(inputs):
    inputs.rules(f"start_date: {DAY}\nend_date: 2024-06-02\n")
    last = line(ms("2024-06-02T23:59:59.999"), offset=1)
    late = line(ms("2024-06-03T00:00:00"), offset=2)  # midnight after end_date: the first instant of no partition
    inputs.kafka("purchases", [GOOD], extra_lines=(last, late))
    inputs.csv("historical_purchases/2024-06-03.csv", "order_id,user_id,product_id,price,purchased_at\n")
    defs = build_defs(inputs.env())
    daily = defs.resolve_assets_def(dg.AssetKey(["raw", "purchases"])).partitions_def
    assert daily.get_partition_keys() == ["2024-06-01", "2024-06-02"]  # not every day up to today
    assert planning.input_days(defs.resources["sources"], defs.resources["rules"]) == (
        date(2024, 6, 1),
        date(2024, 6, 2),
    )
    inputs.materialize(DAY, "2024-06-02", assets=RAW)
    assert inputs.query("SELECT count(*) FROM raw.purchases") == [(2,)]
    [kafka, csv] = reasons(inputs)  # by location: the Kafka file's absolute path first
    assert csv == ("historical_purchases/2024-06-03.csv", "file day after 2024-06-02 (end_date of the rules file)")
    assert kafka[0].endswith("part-0.jsonl:3")
    assert kafka[1] == "event time after 2024-06-02 23:59:59.999 (end_date of the rules file)"
    before = Inputs(inputs.root / "before")
    before.root.mkdir()
    before.rules(f"start_date: {DAY}\nend_date: 2024-05-31\n")
    with pytest.raises(RulesError, match="end_date 2024-05-31 is before start_date 2024-06-01"):
        build_defs(before.env())


def test_the_demo_lists_its_own_days_only():
    demo = build_defs({"LOYALTY_DATA_DIR": str(SEED_DATA)})
    daily = demo.resolve_assets_def(dg.AssetKey(["raw", "purchases"])).partitions_def
    assert daily.get_partition_keys() == [f"2024-06-0{n}" for n in range(1, 6)]
