"""Kafka Connect S3 sink objects (`topics/<topic>/[partition=N/ | year=/month=/day=/]<topic>+<partition>+<start
offset>.json[.gz] | .parquet`) read as the kcat envelope lines messages.py parses: the coordinates from the object's
name and the line or row number, the key from the `.keys` companion file or a payload field, the event time from a
payload field or the time-based path. One parser, one dedup rule (partition, offset) for both layouts."""

import re
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from loyalty_pipeline.domain.config import KafkaSource
from loyalty_pipeline.domain.ingest.kafka import Topic
from loyalty_pipeline.domain.ingest.lines import load_lines

OBJECT_NAMES = "<topic>+<partition>+<start offset>.json, .json.gz or .parquet"
_OBJECT = re.compile(
    r"(?P<topic>.+)\+(?P<partition>\d{1,9})\+(?P<offset>\d{1,18})\.(?P<ext>json|json\.gz|(?:\w+\.)?parquet)"
)
_KEYS = re.compile(r".+\+\d+\+\d+\.keys\..+")
_PATH_TIME = re.compile(r"^(year|month|day|hour)=(\d{1,4})$")
NO_EVENT_TIME = (
    "no event time: the path has no year=/month=/day= (time-based partitioner); "
    "set kafka.timestamp.field to a payload field holding it"
)


def object_files(folder: Path) -> list[Path]:
    """The objects under a topic's folder, at any depth (both partitioners), without the keys companions."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.rglob("*") if path.is_file() and not _KEYS.fullmatch(path.name))


def _path_time_ms(path: Path) -> int | None:
    """The hour (else the day) the time-based partitioner's path names, in ms; None without year, month and day."""
    parts = dict(match.groups() for part in path.parts if (match := _PATH_TIME.match(part)))
    if not {"year", "month", "day"} <= parts.keys():
        return None
    try:
        at = datetime(int(parts["year"]), int(parts["month"]), int(parts["day"]), int(parts.get("hour", 0)), tzinfo=UTC)
    except ValueError:
        return None
    return int(at.timestamp() * 1000)


def _object_lines(conn: duckdb.DuckDBPyConnection, file: Path, table: str) -> list[list]:
    """The object's records as JSON lines into temp `table(file, line_no, line)`; the problems (line 0: the file)."""
    if not file.name.endswith("parquet"):
        return load_lines(conn, [file], table)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {table} (file VARCHAR, line_no BIGINT, line VARCHAR)")
    try:  # a row as the JSON object of its columns (the row number column removed)
        conn.execute(
            f"""INSERT INTO {table} SELECT $file, file_row_number + 1,
                       json_merge_patch(to_json(r), '{{"file_row_number": null}}')
                FROM read_parquet($file, file_row_number = true) AS r""",
            {"file": str(file)},
        )
    except duckdb.Error as error:
        return [[str(file), 0, f"unreadable Parquet object: {str(error).splitlines()[0]}"]]
    return []


# A record as the kcat envelope; a line that is no JSON object stays as it is (the parser says so). Only the
# expressions below are formatted in; every value is a parameter.
ENVELOPES = """
INSERT INTO {table}
SELECT $file, o.line_no,
       CASE WHEN try(json_type(o.line)) IS DISTINCT FROM 'OBJECT' THEN o.line
            ELSE json_object('topic', $topic, 'partition', $partition, 'offset', $offset + o.line_no - 1,
                             'ts', {ts}, 'key', {key}, 'payload', try(json(o.line)))::VARCHAR END
FROM object_lines AS o LEFT JOIN key_lines AS k USING (line_no)
"""


def _ts_sql(timestamp_field: str | None) -> str:
    if timestamp_field:
        return "CASE WHEN try(json_type(o.line, $ts_path)) IN ('UBIGINT', 'BIGINT') THEN try(o.line ->> $ts_path) END::BIGINT"
    return "$path_ms"


def _key_sql(keys_file: bool) -> str:
    if keys_file:  # a key written as a JSON string is unquoted
        return "CASE WHEN try(json_type(k.line)) = 'VARCHAR' THEN try(k.line ->> '$') ELSE k.line END"
    return "CASE WHEN try(json_type(o.line, $key_path)) = 'VARCHAR' THEN try(o.line ->> $key_path) END"


def load_objects(
    conn: duckdb.DuckDBPyConnection, files: list[Path], topic: Topic, source: KafkaSource, table: str
) -> list[list]:
    """Every object's records as envelope lines into temp `table(file, line_no, line)`, as lines.load_lines
    does for kcat files; returns the problems [file, line_no, reason] (line 0: the whole object)."""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {table} (file VARCHAR, line_no BIGINT, line VARCHAR)")
    problems = []
    for file in files:
        name = _OBJECT.fullmatch(file.name)
        if name is None:
            problems.append([str(file), 0, f"object name does not parse: a Connect object is named {OBJECT_NAMES}"])
            continue
        kind = "parquet" if name["ext"].endswith("parquet") else "json"
        if kind != source.format:  # one connector writes one format: another is a misconfiguration, said so
            problems.append([str(file), 0, f"a {kind} object, but the topic's kafka format is {source.format}"])
            continue
        path_ms = _path_time_ms(file)
        timestamp_field = source.timestamp.field if source.timestamp else None
        if timestamp_field is None and path_ms is None:
            problems.append([str(file), 0, NO_EVENT_TIME])
            continue
        problems += _object_lines(conn, file, "object_lines")
        keys = source.key is not None and source.key.from_ == "keys_file"
        conn.execute("CREATE OR REPLACE TEMP TABLE key_lines (file VARCHAR, line_no BIGINT, line VARCHAR)")
        if keys:
            companion = file.with_name(f"{name['topic']}+{name['partition']}+{name['offset']}.keys.{name['ext']}")
            if not companion.is_file():
                problems.append([str(file), 0, f"keys file {companion.name} missing (kafka.key.from: keys_file)"])
                continue
            for _, _, reason in _object_lines(conn, companion, "key_lines"):
                problems.append([str(file), 0, f"keys file {companion.name}: {reason}"])
        params = {
            "file": str(file),
            "topic": topic.name,
            "partition": int(name["partition"]),
            "offset": int(name["offset"]),
        }
        params |= {"ts_path": f"$.{timestamp_field}"} if timestamp_field else {"path_ms": path_ms}
        if not keys:
            params["key_path"] = f"$.{(source.key.field if source.key else None) or topic.key}"
        conn.execute(ENVELOPES.format(table=table, ts=_ts_sql(timestamp_field), key=_key_sql(keys)), params)
    return problems
