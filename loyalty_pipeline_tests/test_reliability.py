"""Bad input, config and environment: the run finishes with the bad item quarantined (source, location, reason) and
the good data loaded, or stops early with a one-line error naming what is wrong. Never a crash, hang or silent loss.
See docs/reliability.md for the classes."""

import gzip
import json
from datetime import UTC, date, datetime

import pytest

from loyalty_pipeline import planning
from loyalty_pipeline.config import RulesError
from loyalty_pipeline.definitions import build_defs
from loyalty_pipeline_tests.conftest import Inputs, envelope, ms

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


# --- files that cannot be read do not stop the others, at start-up or in the run -------------------------------


def test_broken_snapshot_files_never_stop_the_range_or_the_run(inputs):
    inputs.kafka("purchases", [GOOD])
    folder = inputs.root / "kafka" / "purchases"
    (folder / "truncated.jsonl.gz").write_bytes(gzip.compress(b'{"topic": "purchases"}\n' * 50)[:40])
    (folder / "not-gzip.jsonl.gz").write_bytes(b"plain text\n")
    (folder / "a-folder.jsonl").mkdir()  # a folder named like a file is not a file
    (folder / "shouting.JSONL").write_text(line(ms(f"{DAY}T11:00:00"), offset=9) + "\n")  # read, whatever the case
    defs = build_defs(inputs.env())
    assert planning.input_days(defs.resources["sources"], defs.resources["rules"]) == (date(2024, 6, 1),) * 2
    inputs.materialize(DAY, assets=RAW)
    assert inputs.query("SELECT user_id FROM raw.purchases ORDER BY ALL") == [("ann",), ("bob",)]
    assert [(location.rsplit("/", 1)[1], why.split(":")[0]) for location, why in reasons(inputs)] == [
        ("not-gzip.jsonl.gz:0", "unreadable file"),
        ("truncated.jsonl.gz:0", "unreadable file"),
    ]
