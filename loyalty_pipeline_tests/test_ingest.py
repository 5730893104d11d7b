"""SPEC §3 and §4, raw tables: Kafka snapshots deduplicated and split by UTC day, bad input quarantined at its
file and line, re-runs idempotent, S3 CSVs read from a folder and through boto3 over HTTP."""

import json
import os
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

import duckdb
import pytest

from loyalty_pipeline.definitions import build_defs
from loyalty_pipeline.defs.runs import materialize_days
from loyalty_pipeline.defs.stores import S3Store
from loyalty_pipeline_tests.scenarios import Inputs, envelope

DAY1, DAY2, DAY3 = "2024-06-01", "2024-06-02", "2024-06-03"
NOON = f"{DAY1}T12:00:00.000"
RAW_TABLES = [
    "raw.users",
    "raw.products",
    "raw.purchases",
    "raw.user_activity",
    "raw.redemptions",
    "raw.customers",
    "raw.historical_purchases",
    "raw.rejected_records",
]
RAW = tuple(table.replace(".", "/") for table in RAW_TABLES[:-1])  # the raw assets only


# --- helpers -------------------------------------------------------------------------------------------------


def message(topic: str, key, payload, offset: int, ts: str = NOON, partition: int = 0, drop: tuple = ()) -> str:
    """One `kcat -C -J` line with explicit coordinates; `drop` removes envelope fields."""
    fields = envelope(topic, key, payload, ts, partition, offset)
    for name in drop:
        del fields[name]
    return json.dumps(fields)


def write(inputs: Inputs, topic: str, file: str, *lines: str) -> str:
    """Write snapshot lines; returns the file's path as locations name it."""
    return str(inputs.write_lines(topic, file, list(lines)))


def rejected(inputs: Inputs, source: str) -> list[tuple]:
    """(location, reason, raw) of one source, in file then line order."""
    rows = inputs.query("SELECT location, reason, raw FROM raw.rejected_records WHERE source = $1", [source])

    def by_file_and_line(row):
        file, _, line = row[0].rpartition(":")
        return (file, int(line)) if line.isdigit() else (row[0], 0)

    return sorted(rows, key=by_file_and_line)


def offsets(inputs: Inputs, topic: str) -> list[tuple]:
    return inputs.query(f"SELECT kafka_partition, kafka_offset FROM raw.{topic} ORDER BY ALL")


def contents(inputs: Inputs) -> dict[str, list[tuple]]:
    """Every row of every raw table, for before/after comparisons."""
    return {table: inputs.query(f"SELECT * FROM {table} ORDER BY ALL") for table in RAW_TABLES}


def module_inputs(tmp_path_factory, name: str) -> Inputs:
    return Inputs(tmp_path_factory.mktemp(name))


# --- Kafka: deduplication, coordinates, tombstones -------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka(tmp_path_factory) -> Inputs:
    run = module_inputs(tmp_path_factory, "kafka")
    purchase = lambda offset, product: message("purchases", "kris", {"product_id": product}, offset)
    # offsets 2 and 3 were exported twice: once in the plain file, once in the gzipped one (which also has 4)
    write(
        run,
        "purchases",
        "export-1.jsonl",
        purchase(0, "coffee"),
        purchase(1, "tea"),
        purchase(2, "dog"),
        purchase(3, "beret"),
    )
    write(run, "purchases", "export-2.jsonl.gz", purchase(2, "dog"), purchase(3, "beret"), purchase(4, "cake"))
    # the same offset 0 in two partitions: two different messages, identical otherwise
    run.kafka("user_activity", [("kris", {"event_type": "view", "product_id": "tea"}, NOON, p) for p in (0, 1)])
    run.kafka("products", [("coffee", {"category": "beverages", "price": 2.99}, f"{DAY1}T10:00:00.123", 2)])
    run.kafka(
        "users",
        [
            ("u1", {"name": "Kris", "email": "kris@example.com"}, f"{DAY1}T08:00:00"),
            ("u2", {"name": "Yeva"}, f"{DAY1}T09:00:00"),
            ("u1", None, f"{DAY1}T20:00:00"),
        ],
    )
    run.materialize(DAY1, assets=RAW)
    return run


def test_redelivered_offsets_in_jsonl_and_gz_files_load_once(kafka):
    """The same (partition, offset) in a .jsonl and a .jsonl.gz file is one row; the .gz file's new message loads."""
    assert kafka.query("SELECT kafka_offset, user_id, product_id FROM raw.purchases ORDER BY kafka_offset") == [
        (0, "kris", "coffee"),
        (1, "kris", "tea"),
        (2, "kris", "dog"),
        (3, "kris", "beret"),
        (4, "kris", "cake"),
    ]
    assert rejected(kafka, "kafka:purchases") == []


def test_same_offset_in_two_partitions_is_two_messages(kafka):
    """Offset 0 of partition 0 and offset 0 of partition 1 are different messages: both are kept."""
    assert kafka.query(
        "SELECT kafka_partition, kafka_offset, user_id, event_type, product_id FROM raw.user_activity ORDER BY ALL"
    ) == [
        (0, 0, "kris", "view", "tea"),
        (1, 0, "kris", "view", "tea"),
    ]


def test_raw_columns_carry_coordinates_exact_event_time_and_day(kafka):
    """kafka_partition, kafka_offset, event_ts (UTC TIMESTAMP from ts ms, milliseconds kept), day and typed values."""
    envelope_ts = json.loads((kafka.root / "kafka/products/part-0.jsonl").read_text())["ts"]
    assert envelope_ts == 1717236000123
    assert kafka.query(
        "SELECT product_id, category, price, tombstone, kafka_partition, kafka_offset, event_ts, day, "
        "typeof(price), typeof(event_ts), typeof(day) FROM raw.products"
    ) == [
        (
            "coffee",
            "beverages",
            D("2.99"),
            False,
            2,
            0,
            datetime(2024, 6, 1, 10, 0, 0, 123000),
            date(2024, 6, 1),
            "DECIMAL(18,2)",
            "TIMESTAMP",
            "DATE",
        )
    ]


def test_users_tombstone_is_kept_with_null_values(kafka):
    """A null payload is a row with tombstone = true and NULL value fields, not a rejection."""
    assert kafka.query(
        "SELECT user_id, name, email, tombstone, kafka_offset, event_ts FROM raw.users ORDER BY kafka_offset"
    ) == [
        ("u1", "Kris", "kris@example.com", False, 0, datetime(2024, 6, 1, 8)),
        ("u2", "Yeva", None, False, 1, datetime(2024, 6, 1, 9)),
        ("u1", None, None, True, 2, datetime(2024, 6, 1, 20)),
    ]
    assert rejected(kafka, "kafka:users") == []


# --- Kafka: quarantine ------------------------------------------------------------------------------------------


BAD = {  # name -> (topic, bad line); each is written between good lines, see the `quarantine` fixture
    "missing_product_id": ("purchases", message("purchases", "kris", {"order_id": "o1"}, 1)),
    "missing_key": ("purchases", message("purchases", None, {"product_id": "tea"}, 3)),
    "no_ts": ("purchases", message("purchases", "kris", {"product_id": "tea"}, 4, drop=("ts",))),
    "price_abc": ("products", message("products", "tea", {"category": "beverages", "price": "abc"}, 1)),
    "price_negative": ("products", message("products", "cake", {"category": "food", "price": -1}, 2)),
    "event_type": (
        "user_activity",
        message("user_activity", "kris", {"event_type": "purchase", "product_id": "tea"}, 1),
    ),
    "points_zero": ("redemptions", message("redemptions", "kris", {"redemption_id": "r2", "points": 0}, 1)),
    "points_fraction": ("redemptions", message("redemptions", "kris", {"redemption_id": "r3", "points": 2.5}, 2)),
}
NOT_JSON = '{"topic":"purchases","partition":0,"offset":9,'  # a truncated line
NOT_JSON_GZ = "garbage \x01 not json"


@pytest.fixture(scope="module")
def quarantine(tmp_path_factory) -> tuple[Inputs, dict[str, str]]:
    """Files with bad lines between good ones; returns the run and each topic's file path by name."""
    run = module_inputs(tmp_path_factory, "quarantine")
    good = lambda topic, key, payload, offset: message(topic, key, payload, offset)
    coffee = lambda offset: good("purchases", "kris", {"product_id": "coffee"}, offset)
    paths = {
        "purchases": write(
            run,
            "purchases",
            "part-0.jsonl",
            coffee(0),
            BAD["missing_product_id"][1],
            coffee(2),
            NOT_JSON,
            BAD["missing_key"][1],
            BAD["no_ts"][1],
            coffee(5),
        ),
        "purchases_gz": write(run, "purchases", "part-1.jsonl.gz", coffee(6), NOT_JSON_GZ, coffee(7)),
        "products": write(
            run,
            "products",
            "part-0.jsonl",
            good("products", "coffee", {"category": "beverages", "price": 2.99}, 0),
            BAD["price_abc"][1],
            BAD["price_negative"][1],
            good("products", "scone", {"category": "food", "price": 0}, 3),
        ),
        "user_activity": write(
            run,
            "user_activity",
            "part-0.jsonl",
            good("user_activity", "kris", {"event_type": "add_to_cart", "product_id": "tea"}, 0),
            BAD["event_type"][1],
        ),
        "redemptions": write(
            run,
            "redemptions",
            "part-0.jsonl",
            good("redemptions", "kris", {"redemption_id": "r1", "points": 1}, 0),
            BAD["points_zero"][1],
            BAD["points_fraction"][1],
        ),
    }
    run.materialize(DAY1, assets=RAW)
    return run, paths


def test_not_json_lines_are_quarantined_at_their_line_in_plain_and_gz_files(quarantine):
    """A line that is not JSON is rejected as `<file>:<line>` with the line kept in `raw`; the gz file's too."""
    run, paths = quarantine
    not_json = [row for row in rejected(run, "kafka:purchases") if row[1] == "not a JSON object"]
    assert not_json == [
        (f"{paths['purchases']}:4", "not a JSON object", NOT_JSON),
        (f"{paths['purchases_gz']}:2", "not a JSON object", NOT_JSON_GZ),
    ]


def test_every_rejection_reason_of_purchases_with_its_line(quarantine):
    """Missing payload field, missing key and an envelope without ts: each rejected at its line with its reason."""
    run, paths = quarantine
    assert rejected(run, "kafka:purchases") == [
        (f"{paths['purchases']}:2", "missing field product_id", BAD["missing_product_id"][1]),
        (f"{paths['purchases']}:4", "not a JSON object", NOT_JSON),
        (f"{paths['purchases']}:5", "missing key (user_id)", BAD["missing_key"][1]),
        (f"{paths['purchases']}:6", "envelope: ts missing or not an integer", BAD["no_ts"][1]),
        (f"{paths['purchases_gz']}:2", "not a JSON object", NOT_JSON_GZ),
    ]


def test_good_lines_around_bad_ones_still_load(quarantine):
    """The good lines of files holding bad lines load, whatever the bad line's position or the file's compression."""
    run, _ = quarantine
    assert offsets(run, "purchases") == [(0, 0), (0, 2), (0, 5), (0, 6), (0, 7)]
    assert run.query("SELECT product_id, price FROM raw.products ORDER BY ALL") == [
        ("coffee", D("2.99")),
        ("scone", D("0.00")),
    ]
    assert run.query("SELECT event_type FROM raw.user_activity") == [("add_to_cart",)]
    assert run.query("SELECT redemption_id, points FROM raw.redemptions") == [("r1", 1)]


def test_price_must_be_a_non_negative_number(quarantine):
    """A string price ("abc") and a negative one (-1) are rejected with the field named; 0 is a valid price."""
    run, paths = quarantine
    reason = "field price must be a non-negative number with at most 2 decimals"
    assert rejected(run, "kafka:products") == [
        (f"{paths['products']}:2", reason, BAD["price_abc"][1]),
        (f"{paths['products']}:3", reason, BAD["price_negative"][1]),
    ]


def test_event_type_must_be_a_known_value(quarantine):
    """An event_type outside view/add_to_cart/remove_from_cart is rejected."""
    run, paths = quarantine
    assert rejected(run, "kafka:user_activity") == [
        (
            f"{paths['user_activity']}:2",
            "field event_type must be one of view, add_to_cart, remove_from_cart",
            BAD["event_type"][1],
        ),
    ]


def test_redemption_points_must_be_a_positive_integer(quarantine):
    """points 0 and points 2.5 are rejected (not counted as redemptions)."""
    run, paths = quarantine
    reason = "field points must be a positive integer"
    assert rejected(run, "kafka:redemptions") == [
        (f"{paths['redemptions']}:2", reason, BAD["points_zero"][1]),
        (f"{paths['redemptions']}:3", reason, BAD["points_fraction"][1]),
    ]


# --- day partitions ------------------------------------------------------------------------------------------


def test_last_and_first_millisecond_of_a_day_go_to_different_days(inputs):
    """23:59:59.999 belongs to its UTC day, 00:00:00.000 to the next one."""
    written = inputs.kafka(
        "purchases",
        [
            ("kris", {"product_id": "tea"}, f"{DAY1}T23:59:59.999"),
            ("kris", {"product_id": "cake"}, f"{DAY2}T00:00:00.000"),
        ],
    )
    assert [m["ts"] for m in written] == [1717286399999, 1717286400000]
    inputs.materialize(DAY1, DAY2, assets=RAW)
    assert inputs.query("SELECT product_id, event_ts, day FROM raw.purchases ORDER BY event_ts") == [
        ("tea", datetime(2024, 6, 1, 23, 59, 59, 999000), date(2024, 6, 1)),
        ("cake", datetime(2024, 6, 2), date(2024, 6, 2)),
    ]


def days_input(inputs: Inputs) -> dict[str, str]:
    """Three days of messages, a day-tagged rejection on each day, undated garbage, and S3 files for two days."""
    purchases = write(
        inputs,
        "purchases",
        "part-0.jsonl",
        message("purchases", "kris", {"product_id": "tea"}, 0, f"{DAY1}T23:59:59.999"),
        message("purchases", "kris", {"order_id": "o-1"}, 1, f"{DAY1}T10:00:00"),  # rejected on day 1
        message("purchases", "yeva", {"product_id": "cake"}, 2, f"{DAY2}T00:00:00.000"),
        message("purchases", "yeva", {"store_id": "s1"}, 3, f"{DAY2}T10:00:00"),  # rejected on day 2
        "not json",  # rejected, no day
        message("purchases", "rick", {"product_id": "dog"}, 4, f"{DAY3}T08:00:00"),
        message("purchases", "rick", {"product_id": "beret"}, 0, f"{DAY3}T09:00:00", partition=1),
    )
    users = write(
        inputs,
        "users",
        "part-0.jsonl.gz",
        message("users", "kris", {"name": "Kris"}, 0, f"{DAY1}T08:00:00"),
        message("users", "yeva", {"name": 7}, 1, f"{DAY2}T08:00:00"),  # rejected on day 2
        message("users", "kris", None, 2, f"{DAY3}T08:00:00"),
    )
    header = "order_id,user_id,product_id,price,purchased_at\n"
    inputs.csv(
        f"historical_purchases/{DAY1}.csv",
        header + "h1,ana,tea,2.55,2024-06-01T09:00:00Z\nh2,ana,cake,x,2024-06-01T09:00:00Z\n",
    )
    inputs.csv(
        f"historical_purchases/{DAY2}.csv",
        header + "h3,ben,tea,2.55,2024-06-02T09:00:00Z\nh4,ben,cake,1,2024-06-03T09:00:00Z\n",
    )
    inputs.csv("customers/a.csv", "user_id,name,email,signup_date\nana,Ana,ana@example.com,2023-01-15\n")
    return {"purchases": purchases, "users": users}


def test_materializing_one_day_writes_only_that_days_rows(inputs):
    """Day 2 alone loads day 2's messages, rejections and S3 file; undated rejections too; nothing of days 1 and 3."""
    paths = days_input(inputs)
    inputs.materialize(DAY2, assets=RAW)
    assert inputs.query("SELECT user_id, product_id, day FROM raw.purchases") == [("yeva", "cake", date(2024, 6, 2))]
    assert inputs.query("SELECT user_id, name, tombstone FROM raw.users") == []
    assert inputs.query("SELECT order_id, s3_key FROM raw.historical_purchases") == [
        ("h3", f"historical_purchases/{DAY2}.csv")
    ]
    assert inputs.query("SELECT source, location, reason, day FROM raw.rejected_records ORDER BY source, location") == [
        ("kafka:purchases", f"{paths['purchases']}:4", "missing field product_id", date(2024, 6, 2)),
        ("kafka:purchases", f"{paths['purchases']}:5", "not a JSON object", None),
        ("kafka:users", f"{paths['users']}:2", "field name must be a string", date(2024, 6, 2)),
        (
            "s3:historical_purchases",
            f"historical_purchases/{DAY2}.csv:3",
            f"purchased_at is not on the file's date {DAY2}",
            date(2024, 6, 2),
        ),
    ]


def test_rematerializing_a_day_and_a_range_gives_identical_tables(inputs):
    """Re-running day 2, then days 1..3, leaves every raw table and the quarantine exactly as they were."""
    days_input(inputs)
    inputs.materialize(DAY1, DAY3, assets=RAW)
    before = contents(inputs)
    assert {table: len(rows) for table, rows in before.items()} == {
        "raw.users": 2,  # kris and kris's tombstone; yeva's row is rejected
        "raw.products": 0,
        "raw.purchases": 4,
        "raw.user_activity": 0,
        "raw.redemptions": 0,
        "raw.customers": 1,
        "raw.historical_purchases": 2,
        "raw.rejected_records": 6,
    }
    inputs.materialize(DAY2, assets=RAW)
    assert contents(inputs) == before
    inputs.materialize(DAY1, DAY3, assets=RAW)
    assert contents(inputs) == before


def test_rematerializing_a_day_leaves_other_days_untouched(inputs):
    """A late message for day 1 is not picked up by a re-run of day 2 (day 1 stays as written), only by day 1's."""
    days_input(inputs)
    inputs.materialize(DAY1, DAY3, assets=RAW)
    before = contents(inputs)
    late = message("purchases", "kris", {"product_id": "scone"}, 0, f"{DAY1}T15:00:00", partition=7)
    write(inputs, "purchases", "part-9.jsonl", late)
    inputs.materialize(DAY2, assets=RAW)
    assert contents(inputs) == before
    inputs.materialize(DAY1, assets=RAW)
    after = contents(inputs)
    assert inputs.query("SELECT user_id, product_id, day FROM raw.purchases WHERE kafka_partition = 7") == [
        ("kris", "scone", date(2024, 6, 1))
    ]
    assert {table: rows for table, rows in after.items() if table != "raw.purchases"} == {
        table: rows for table, rows in before.items() if table != "raw.purchases"
    }


# --- S3 CSV files ------------------------------------------------------------------------------------------------

HISTORICAL_DAY1 = (
    "order_id,user_id,product_id,price,purchased_at\n"
    "h1,ana,tea,2.55,2024-06-01T09:15:00Z\n"
    "h1,ana,scone,3.10,2024-06-01T12:30:00.250+02:00\n"  # 10:30:00.250 UTC
    "h2,ben,honey,-1,2024-06-01T11:00:00Z\n"
    "h3,ben,cake,abc,2024-06-01T11:00:00Z\n"
    "h4,ben,tea,2.55,2024-06-02T00:00:00Z\n"  # the next day: not this file's
    "h5,cleo,coffee,0,2024-06-01T23:59:59.999Z\n"
)
S3_FILES = {
    f"historical_purchases/{DAY1}.csv": HISTORICAL_DAY1,
    f"historical_purchases/{DAY2}.csv": "order_id,user_id,product_id,price,purchased_at\nh6,ana,coffee,2.99,2024-06-02T08:00:00Z\n",
    "historical_purchases/notes.csv": "remember to export the old orders\n",
    "customers/a.csv": (
        "user_id,name,email,signup_date\n"
        "ana,Ana,ana@example.com,2023-01-15\n"
        "ben,Ben,,2023-02-01\n"
        "dan,Dan,dan@example.com,someday\n"
    ),
}


def put_s3_files(put) -> None:
    for key, text in S3_FILES.items():
        put(key, text)


def assert_s3_tables(run: Inputs) -> None:
    """What S3_FILES give when day 1 is materialized, wherever the files are stored."""
    assert run.query("SELECT *, typeof(price) FROM raw.historical_purchases ORDER BY row_no") == [
        (
            "h1",
            "ana",
            "tea",
            D("2.55"),
            datetime(2024, 6, 1, 9, 15),
            f"historical_purchases/{DAY1}.csv",
            1,
            date(2024, 6, 1),
            "DECIMAL(18,2)",
        ),
        (
            "h1",
            "ana",
            "scone",
            D("3.10"),
            datetime(2024, 6, 1, 10, 30, 0, 250000),
            f"historical_purchases/{DAY1}.csv",
            2,
            date(2024, 6, 1),
            "DECIMAL(18,2)",
        ),
        (
            "h5",
            "cleo",
            "coffee",
            D("0.00"),
            datetime(2024, 6, 1, 23, 59, 59, 999000),
            f"historical_purchases/{DAY1}.csv",
            6,
            date(2024, 6, 1),
            "DECIMAL(18,2)",
        ),
    ]
    assert run.query("SELECT user_id, name, email, signup_date, s3_key FROM raw.customers ORDER BY user_id") == [
        ("ana", "Ana", "ana@example.com", date(2023, 1, 15), "customers/a.csv"),
        ("ben", "Ben", None, date(2023, 2, 1), "customers/a.csv"),
    ]
    assert rejected(run, "s3:historical_purchases") == [
        (
            f"historical_purchases/{DAY1}.csv:4",
            "price must be a non-negative number",
            "h2,ben,honey,-1,2024-06-01T11:00:00Z",
        ),
        (
            f"historical_purchases/{DAY1}.csv:5",
            "price must be a non-negative number",
            "h3,ben,cake,abc,2024-06-01T11:00:00Z",
        ),
        (
            f"historical_purchases/{DAY1}.csv:6",
            f"purchased_at is not on the file's date {DAY1}",
            "h4,ben,tea,2.55,2024-06-02T00:00:00Z",
        ),
        ("historical_purchases/notes.csv", "file name is not historical_purchases/YYYY-MM-DD.csv", None),
    ]
    assert rejected(run, "s3:customers") == [
        ("customers/a.csv:4", "signup_date is not a date (YYYY-MM-DD)", "dan,Dan,dan@example.com,someday"),
    ]


def test_s3_csvs_from_a_local_folder(inputs):
    """Good rows load with s3_key and DECIMAL prices in UTC; bad prices, off-date rows and misnamed files are rejected."""
    put_s3_files(inputs.csv)
    inputs.materialize(DAY1, assets=RAW)
    assert_s3_tables(inputs)


def test_s3_csvs_through_boto3_over_http(inputs, s3_bucket):
    """The same files in a bucket under a prefix (moto's S3 server, read with boto3) give the same tables."""
    put_s3_files(lambda key, text: s3_bucket.put(f"exports/{key}", text))
    inputs.materialize(DAY1, **s3_bucket.env("exports"), assets=RAW)
    assert_s3_tables(inputs)


# --- CSV lines as written: exact line numbers, extra fields, empty fields -------------------------------------


@pytest.fixture(scope="module")
def odd_csvs(tmp_path_factory) -> Inputs:
    """CSV files with a blank line, a row with one field too many, and rejected rows with an empty field."""
    run = module_inputs(tmp_path_factory, "odd_csvs")
    header = "order_id,user_id,product_id,price,purchased_at\n"
    run.csv(
        f"historical_purchases/{DAY1}.csv",
        header + "h1,ana,tea,1.00,2024-06-01T09:00:00Z\n\nh2,ana,cake,x,2024-06-01T09:00:00Z\n",
    )
    run.csv(f"historical_purchases/{DAY2}.csv", header + "h3,ben,tea,1.00,2024-06-02T09:00:00Z,oops\n")
    run.csv("customers/a.csv", "user_id,name,email,signup_date\nben,Ben,,someday\n")
    run.materialize(DAY1, DAY2, assets=RAW)
    return run


def test_csv_location_is_the_line_in_the_file_after_a_blank_line(odd_csvs):
    """`location` names the file's line: a blank line before a bad row still counts (the bad row is on line 4)."""
    assert [row[0] for row in rejected(odd_csvs, "s3:historical_purchases") if DAY1 in row[0]] == [
        f"historical_purchases/{DAY1}.csv:4"
    ]


def test_csv_row_with_too_many_fields_is_rejected_not_truncated(odd_csvs):
    """A row with six fields under a five-column header does not parse: quarantined, not loaded without its extra."""
    assert odd_csvs.query(f"SELECT order_id FROM raw.historical_purchases WHERE day = DATE '{DAY2}'") == []
    assert [row[0] for row in rejected(odd_csvs, "s3:historical_purchases") if DAY2 in row[0]] == [
        f"historical_purchases/{DAY2}.csv:2"
    ]


def test_csv_rejected_raw_keeps_empty_fields(odd_csvs):
    """The quarantined `raw` of a CSV row is the row as written, empty fields included."""
    assert rejected(odd_csvs, "s3:customers") == [
        ("customers/a.csv:2", "signup_date is not a date (YYYY-MM-DD)", "ben,Ben,,someday")
    ]


def test_a_valid_copy_of_a_message_wins_over_a_corrupt_one(inputs):
    """Two copies of one (partition, offset): the one that validates loads, whatever the file order."""
    good = {"topic": "purchases", "partition": 0, "offset": 7, "ts": 1717236000000, "key": "ann"}
    inputs.write_lines("purchases", "a.jsonl", [json.dumps({**good, "payload": '{"product":"tea"}'})])
    inputs.write_lines("purchases", "b.jsonl", [json.dumps({**good, "payload": '{"product_id":"tea"}'})])
    inputs.materialize(DAY1, assets=RAW)
    assert inputs.query("SELECT user_id, product_id, location LIKE '%b.jsonl:1' FROM raw.purchases") == [
        ("ann", "tea", True)
    ]
    assert inputs.query("SELECT count(*) FROM raw.rejected_records") == [(0,)]


def test_a_price_with_more_than_two_decimals_is_rejected_not_rounded(inputs):
    inputs.kafka(
        "products",
        [
            ("tea", {"category": "b", "price": 2.999}, f"{DAY1}T08:00:00"),
            ("cake", {"category": "b", "price": 3.5}, f"{DAY1}T08:00:00"),
        ],
    )
    inputs.materialize(DAY1, assets=RAW)
    assert inputs.query("SELECT product_id, price::VARCHAR FROM raw.products") == [("cake", "3.50")]
    assert inputs.query("SELECT reason FROM raw.rejected_records") == [
        ("field price must be a non-negative number with at most 2 decimals",)
    ]


def test_a_csv_whose_header_is_not_the_contract_is_rejected_row_by_row(inputs):
    inputs.csv(
        f"historical_purchases/{DAY1}.csv",
        "user_id,order_id,product_id,price,purchased_at\nann,o1,tea,1.00,2024-06-01T09:00:00Z\n",
    )
    inputs.materialize(DAY1, assets=RAW)
    assert inputs.query("SELECT count(*) FROM raw.historical_purchases") == [(0,)]
    assert inputs.query("SELECT location, reason FROM raw.rejected_records") == [
        (
            f"historical_purchases/{DAY1}.csv:2",
            "file header is user_id,order_id,product_id,price,purchased_at, expected order_id,user_id,product_id,price,purchased_at",
        )
    ]


def test_a_day_reads_only_the_snapshot_files_that_hold_it(inputs):
    """Files already read whose days lie outside the window are skipped; new or rewritten files are read."""
    inputs.kafka("purchases", [("ann", {"product_id": "tea"}, f"{DAY1}T10:00:00")], file="day1.jsonl")
    inputs.kafka(
        "purchases", [("bob", {"product_id": "tea"}, f"{DAY2}T10:00:00")], file="day2.jsonl", extra_lines=("junk",)
    )
    first = inputs.materialize(DAY1, DAY2, assets=RAW)
    again = inputs.materialize(DAY2, assets=RAW)
    # day1.jsonl rewritten (a new export): it now holds a day-2 message only
    inputs.kafka("purchases", [("cid", {"product_id": "tea"}, f"{DAY2}T11:00:00")], file="day1.jsonl")
    third = inputs.materialize(DAY2, assets=RAW)

    def files_read(result):
        [materialization] = [
            m for m in result.asset_materializations_for_node("kafka_topics") if m.asset_key.path[-1] == "purchases"
        ][-1:]
        return materialization.metadata["files_read"].value

    assert (files_read(first), files_read(again), files_read(third)) == (2, 1, 2)
    assert inputs.query("SELECT user_id, day::VARCHAR FROM raw.purchases ORDER BY ALL") == [
        ("ann", DAY1),
        ("bob", DAY2),
        ("cid", DAY2),
    ]
    assert inputs.query("SELECT reason FROM raw.rejected_records") == [("not a JSON object",)]  # kept, not doubled
    assert inputs.query(
        "SELECT file LIKE '%day1.jsonl', first_day::VARCHAR, last_day::VARCHAR FROM raw.kafka_files ORDER BY file"
    ) == [(True, DAY2, DAY2), (False, DAY2, DAY2)]


def test_a_snapshot_rewritten_keeping_its_size_and_mtime_is_read_again(inputs):
    """`cp -p` or `rsync -a` put back the old mtime: the file's ctime still says it was rewritten."""
    old = inputs.kafka("purchases", [("ann", {"product_id": "tea"}, f"{DAY1}T10:00:00")], file="day1.jsonl")
    path = inputs.root / "kafka" / "purchases" / "day1.jsonl"
    inputs.materialize(DAY1, DAY2, assets=RAW)
    stat = path.stat()
    new = inputs.kafka("purchases", [("cid", {"product_id": "tea"}, f"{DAY2}T10:00:00")], file="day1.jsonl")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert (len(old), len(new)) == (1, 1)
    inputs.materialize(DAY2, assets=RAW)
    assert inputs.query("SELECT user_id, day::VARCHAR FROM raw.purchases ORDER BY ALL") == [
        ("ann", DAY1),
        ("cid", DAY2),
    ]


def test_a_file_that_cannot_be_read_is_quarantined_by_name_and_the_others_load(inputs):
    inputs.kafka("purchases", [("ann", {"product_id": "tea"}, f"{DAY1}T09:00:00")])
    broken = inputs.root / "kafka" / "purchases" / "till-3.jsonl.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    inputs.csv(f"historical_purchases/{DAY1}.csv", "order_id,user_id,product_id,price,purchased_at\n")
    (inputs.root / "s3" / "historical_purchases" / f"{DAY1}.csv").write_bytes(b"order_id\n\xff\xfe\x00 not text\n")
    inputs.materialize(DAY1, assets=RAW)
    assert inputs.query("SELECT user_id FROM raw.purchases") == [("ann",)]
    rejected_files = inputs.query("SELECT source, location, reason FROM raw.rejected_records ORDER BY ALL")
    assert [row[:2] for row in rejected_files] == [
        ("kafka:purchases", f"{broken}:0"),  # not gzip at all: the whole file
        ("s3:historical_purchases", f"historical_purchases/{DAY1}.csv:2"),  # the line that is not text
    ]
    assert rejected_files[0][2].startswith("unreadable file: ")
    assert rejected_files[1][2] == "not UTF-8 text (invalid start byte at byte 0)"
    inputs.materialize(DAY1, assets=RAW)  # read again: still one row each, never doubled
    assert inputs.query("SELECT count(*) FROM raw.rejected_records") == [(2,)]


# --- the customers export: a run reads only the objects new or rewritten -----------------------------------------

CUSTOMERS_HEADER = "user_id,name,email,signup_date\n"


def customers_run(run: Inputs, rebuild: bool = False, **env: str) -> tuple[int, int]:
    """One run of raw/customers: (objects read, objects whose rows were dropped), from its metadata."""
    result = materialize_days(build_defs(run.env(**env)), DAY1, DAY1, assets=("raw/customers",), rebuild=rebuild)
    assert result.success, [event.message for event in result.all_events if event.is_failure]
    [materialization] = result.asset_materializations_for_node("raw__customers")
    return materialization.metadata["files_read"].value, materialization.metadata["files_dropped"].value


def customers_state(run: Inputs) -> tuple[list, list]:
    return run.query("SELECT * FROM raw.customers ORDER BY s3_key, row_no"), rejected(run, "s3:customers")


def customers_from_scratch(run: Inputs, tmp_path, **env: str) -> tuple[list, list]:
    """The same inputs into an empty warehouse."""
    fresh = Inputs(run.root)
    fresh.warehouse = tmp_path / f"fresh-{uuid.uuid4().hex[:8]}.duckdb"
    customers_run(fresh, **env)
    return customers_state(fresh)


def customers_logged(run: Inputs, before: int) -> list[str]:
    rows = run.query("SELECT DISTINCT person FROM changes.touched WHERE source = 'customers' AND seq > $1", [before])
    return sorted(person for (person,) in rows)


def last_seq(run: Inputs) -> int:
    return run.query("SELECT coalesce(max(seq), 0) FROM changes.touched")[0][0]


def test_customers_read_only_the_export_objects_new_or_rewritten(tmp_path):
    run = Inputs(tmp_path)
    a = run.csv("customers/a.csv", CUSTOMERS_HEADER + "ana,Ana,ana@x.com,2023-01-15\nben,Ben,,2023-02-01\ndan,Dan,,x\n")
    b = run.csv("customers/b.csv", CUSTOMERS_HEADER + "cy,Cy,cy@x.com,2023-03-01\n,Nobody,,\n")
    notes = run.csv("customers/a.csv:9", "not an export\n")  # not *.csv, and named like a line of a.csv
    assert customers_run(run) == (2, 0)
    assert customers_state(run) == customers_from_scratch(run, tmp_path)
    b_rows = [("cy", "Cy", "cy@x.com", date(2023, 3, 1), "customers/b.csv", 1)]
    b_rejected = [("customers/b.csv:3", "missing user_id", ",Nobody,,")]

    before = last_seq(run)
    assert customers_run(run) == (0, 0)  # nothing changed: nothing downloaded, nothing dropped, nobody logged
    assert customers_logged(run, before) == []
    assert customers_state(run) == customers_from_scratch(run, tmp_path)

    # a.csv edited: ben renamed, dan's date fixed, eve added with a bad date; b.csv's rows and rejection stay
    a.write_text(
        CUSTOMERS_HEADER + "ana,Ana,ana@x.com,2023-01-15\nben,Benny,,2023-02-01\ndan,Dan,,2023-04-01\neve,Eve,,y\n"
    )
    before = last_seq(run)
    assert customers_run(run) == (1, 1)
    assert customers_logged(run, before) == ["ben", "dan"]
    assert customers_state(run) == (
        [
            ("ana", "Ana", "ana@x.com", date(2023, 1, 15), "customers/a.csv", 1),
            ("ben", "Benny", None, date(2023, 2, 1), "customers/a.csv", 2),
            ("dan", "Dan", None, date(2023, 4, 1), "customers/a.csv", 3),
            *b_rows,
        ],
        [
            ("customers/a.csv:5", "signup_date is not a date (YYYY-MM-DD)", "eve,Eve,,y"),
            ("customers/a.csv:9", "not read: a customers export is named *.csv", None),
            *b_rejected,
        ],
    )
    assert customers_state(run) == customers_from_scratch(run, tmp_path)

    # b.csv rewritten with its old size and mtime (`cp -p`): its ctime says so
    stat = b.stat()
    b.write_text(CUSTOMERS_HEADER + "cy,Cy,cy@x.com,2023-03-09\n,Nobody,,\n")
    os.utime(b, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (b.stat().st_size, b.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    before = last_seq(run)
    assert customers_run(run) == (1, 1)
    assert customers_logged(run, before) == ["cy"]
    assert run.query("SELECT signup_date FROM raw.customers WHERE user_id = 'cy'") == [(date(2023, 3, 9),)]
    assert customers_state(run) == customers_from_scratch(run, tmp_path)

    # b.csv and a.csv:9 removed: b's rows and rejection go, and a.csv:9's; a.csv is not read again
    b.unlink()
    notes.unlink()
    before = last_seq(run)
    assert customers_run(run) == (0, 1)
    assert customers_logged(run, before) == ["cy"]
    assert customers_state(run)[0] == [row for row in customers_state(run)[0] if row[4] == "customers/a.csv"]
    assert [row[0] for row in customers_state(run)[0]] == ["ana", "ben", "dan"]
    assert customers_state(run)[1] == [("customers/a.csv:5", "signup_date is not a date (YYYY-MM-DD)", "eve,Eve,,y")]
    assert customers_state(run) == customers_from_scratch(run, tmp_path)

    # c.csv added: only it is read
    run.csv("customers/c.csv", CUSTOMERS_HEADER + "fay,Fay,,2023-05-01\nana,Ana B,,\n")
    before = last_seq(run)
    assert customers_run(run) == (1, 0)
    assert customers_logged(run, before) == ["ana", "fay"]
    assert customers_state(run) == customers_from_scratch(run, tmp_path)
    assert run.query("SELECT s3_key FROM raw.customers_files ORDER BY ALL") == [
        ("customers/a.csv",),
        ("customers/c.csv",),
    ]

    # a rebuild reads every object again, and changes nobody
    before = last_seq(run)
    assert customers_run(run, rebuild=True) == (2, 2)
    assert customers_logged(run, before) == []
    assert customers_state(run) == customers_from_scratch(run, tmp_path)


def test_customers_rows_loaded_before_versions_were_kept_are_replaced(tmp_path):
    run = Inputs(tmp_path)
    run.csv("customers/a.csv", CUSTOMERS_HEADER + "ana,Ana,,2023-01-15\n")
    gone = run.csv("customers/b.csv", CUSTOMERS_HEADER + "cy,Cy,,\n,x,,\n")
    assert customers_run(run) == (2, 0)
    with duckdb.connect(str(run.warehouse)) as conn:  # as a warehouse written before raw.customers_files
        conn.execute("DROP TABLE raw.customers_files")
    gone.unlink()
    assert customers_run(run) == (1, 0)
    assert customers_state(run) == customers_from_scratch(run, tmp_path)
    assert run.query("SELECT user_id FROM raw.customers") == [("ana",)]
    assert rejected(run, "s3:customers") == []


def test_a_customers_row_signed_up_after_today_is_read_again_when_its_day_is_accepted(tmp_path):
    """An object's rows are checked against the latest signup day accepted: when that moves past a rejected
    signup_date (or back before an accepted one), the object is read again, unchanged."""
    run = Inputs(tmp_path)
    later = (datetime.now(UTC) + timedelta(days=3)).date()
    run.csv("customers/a.csv", CUSTOMERS_HEADER + f"ana,Ana,,{later}\nben,Ben,,2023-01-01\n")
    run.csv("customers/b.csv", CUSTOMERS_HEADER + "cy,Cy,,2023-01-01\n")
    assert customers_run(run) == (2, 0)
    assert rejected(run, "s3:customers") == [
        ("customers/a.csv:2", "signup_date must be a date from 1900-01-01 to today", f"ana,Ana,,{later}")
    ]
    assert customers_run(run) == (0, 0)
    wide = {"LOYALTY_FUTURE_TOLERANCE": "10 days"}
    assert customers_run(run, **wide) == (1, 1)  # ana's day is accepted now: a.csv only
    assert run.query("SELECT user_id, signup_date FROM raw.customers WHERE user_id = 'ana'") == [("ana", later)]
    assert rejected(run, "s3:customers") == []
    assert customers_state(run) == customers_from_scratch(run, tmp_path, **wide)
    assert customers_run(run, **wide) == (0, 0)
    assert customers_run(run) == (1, 1)  # and no longer
    assert customers_state(run) == customers_from_scratch(run, tmp_path)
    assert [row[0] for row in customers_state(run)[0]] == ["ben", "cy"]


def test_customers_through_s3_download_only_the_objects_new_or_rewritten(tmp_path, s3_bucket, monkeypatch):
    downloads = []
    download = S3Store.local_copies

    def counted(self, keys, workdir):
        downloads.extend(keys)
        return download(self, keys, workdir)

    monkeypatch.setattr(S3Store, "local_copies", counted)
    run, env = Inputs(tmp_path), s3_bucket.env("exports")

    def downloaded(**extra):
        downloads.clear()
        counts = customers_run(run, **env, **extra)
        return counts, sorted(downloads)

    s3_bucket.put("exports/customers/a.csv", CUSTOMERS_HEADER + "ana,Ana,,2023-01-15\nben,Ben,,bad\n")
    s3_bucket.put("exports/customers/b.csv", CUSTOMERS_HEADER + "cy,Cy,,2023-03-01\n")
    assert downloaded() == ((2, 0), ["customers/a.csv", "customers/b.csv"])
    assert downloaded() == ((0, 0), [])
    s3_bucket.put("exports/customers/a.csv", CUSTOMERS_HEADER + "ana,Ana,,2023-01-15\nben,Ben,,2023-02-01\n")
    assert downloaded() == ((1, 1), ["customers/a.csv"])
    assert customers_state(run) == (
        [
            ("ana", "Ana", None, date(2023, 1, 15), "customers/a.csv", 1),
            ("ben", "Ben", None, date(2023, 2, 1), "customers/a.csv", 2),
            ("cy", "Cy", None, date(2023, 3, 1), "customers/b.csv", 1),
        ],
        [],
    )
    assert customers_state(run) == customers_from_scratch(run, tmp_path, **env)
    s3_bucket.client.delete_object(Bucket=s3_bucket.name, Key="exports/customers/b.csv")
    s3_bucket.put("exports/customers/c.csv", CUSTOMERS_HEADER + "dan,Dan,,2023-04-01\n")
    assert downloaded() == ((1, 1), ["customers/c.csv"])
    assert [row[0] for row in customers_state(run)[0]] == ["ana", "ben", "dan"]
    assert customers_state(run) == customers_from_scratch(run, tmp_path, **env)
