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
from loyalty_pipeline.lib.warehouse import insert_rows

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


def _lines(conn: duckdb.DuckDBPyConnection, files: list[Path], table: str) -> list[list]:
    """The objects' records as JSON lines into temp `table(file, line_no, line)` (a Parquet row: the JSON object of
    its columns); returns the problems (line 0: the whole object)."""
    problems = load_lines(conn, [file for file in files if not file.name.endswith("parquet")], table)
    for file in (file for file in files if file.name.endswith("parquet")):
        try:  # the row number column removed from the row's object
            conn.execute(
                f"""INSERT INTO {table} SELECT $file, file_row_number + 1,
                           json_merge_patch(to_json(r), '{{"file_row_number": null}}')
                    FROM read_parquet($file, file_row_number = true) AS r""",
                {"file": str(file)},
            )
        except duckdb.Error as error:
            problems.append([str(file), 0, f"unreadable Parquet object: {str(error).splitlines()[0]}"])
    return problems


# Every record as the kcat envelope, built as text: the payload is the record's own text (checked to be a JSON
# object by its first character once it parsed), the key and time read in one parse of it. A line that is no JSON
# object stays as it is (the parser says so). Only `{fields}`, `{ts}` and `{key}` (fixed expressions) are formatted
# in; every value is a parameter or a column.
ENVELOPES = """
INSERT INTO {table}
WITH records AS (
    SELECT l.file, l.line_no, l.line, m.kafka_partition, m.start_offset, m.path_ms, m.keys_file,
           CASE WHEN starts_with(ltrim(l.line), '{{') THEN try(json_extract(l.line, {fields})) END AS x
    FROM object_lines AS l JOIN object_meta AS m USING (file)
)
SELECT r.file, r.line_no,
       CASE WHEN r.x IS NULL THEN r.line
            ELSE '{{"partition":' || r.kafka_partition || ',"offset":' || (r.start_offset + r.line_no - 1)
                 || ',"ts":' || coalesce(({ts})::VARCHAR, 'null') || ',"key":' || coalesce(to_json({key}), 'null')
                 || ',"payload":' || r.line || '}}' END
FROM records AS r LEFT JOIN key_lines AS k ON k.file = r.keys_file AND k.line_no = r.line_no
"""


def load_objects(
    conn: duckdb.DuckDBPyConnection, files: list[Path], topic: Topic, source: KafkaSource, table: str
) -> list[list]:
    """Every object's records as envelope lines into temp `table(file, line_no, line)`, as lines.load_lines
    does for kcat files; returns the problems [file, line_no, reason] (line 0: the whole object)."""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {table} (file VARCHAR, line_no BIGINT, line VARCHAR)")
    timestamp_field = source.timestamp.field if source.timestamp else None
    keys = source.key is not None and source.key.from_ == "keys_file"
    problems, meta, companions = [], [], []
    for file in files:
        name = _OBJECT.fullmatch(file.name)
        kind = name and ("parquet" if name["ext"].endswith("parquet") else "json")
        path_ms = _path_time_ms(file)
        companion = name and file.with_name(f"{name['topic']}+{name['partition']}+{name['offset']}.keys.{name['ext']}")
        if name is None:
            problems.append([str(file), 0, f"object name does not parse: a Connect object is named {OBJECT_NAMES}"])
        elif kind != source.format:  # one connector writes one format: another is a misconfiguration, said so
            problems.append([str(file), 0, f"a {kind} object, but the topic's kafka format is {source.format}"])
        elif timestamp_field is None and path_ms is None:
            problems.append([str(file), 0, NO_EVENT_TIME])
        elif keys and not companion.is_file():
            problems.append([str(file), 0, f"keys file {companion.name} missing (kafka.key.from: keys_file)"])
        else:
            meta.append([str(file), int(name["partition"]), int(name["offset"]), path_ms, str(companion)])
            companions.append(companion)
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE object_meta (file VARCHAR, kafka_partition INTEGER, start_offset BIGINT, "
        "path_ms BIGINT, keys_file VARCHAR)"
    )
    insert_rows(conn, "object_meta", meta)
    problems += _lines(conn, [Path(row[0]) for row in meta], "object_lines")
    conn.execute("CREATE OR REPLACE TEMP TABLE key_lines (file VARCHAR, line_no BIGINT, line VARCHAR)")
    if keys:
        by_companion = {str(companion): file for (file, *_), companion in zip(meta, companions, strict=True)}
        for companion, line_no, reason in _lines(conn, companions, "key_lines"):
            problems.append([by_companion[companion], line_no, f"keys file {Path(companion).name}: {reason}"])
    paths = ([f"$.{timestamp_field}"] if timestamp_field else []) + (
        [] if keys else [f"$.{source.key.field if source.key else topic.key}"]
    )
    key = (
        "CASE WHEN try(json_type(k.line)) = 'VARCHAR' THEN try(k.line ->> '$') ELSE k.line END"
        if keys
        else f"r.x[{len(paths)}] ->> '$'"
    )
    ts = (
        "CASE WHEN json_type(r.x[1]) IN ('UBIGINT', 'BIGINT') THEN r.x[1] ->> '$' END::BIGINT"
        if timestamp_field
        else "r.path_ms"
    )
    conn.execute(
        ENVELOPES.format(table=table, fields="$paths" if paths else "['$']", ts=ts, key=key),
        {"paths": paths} if paths else {},
    )
    return problems
