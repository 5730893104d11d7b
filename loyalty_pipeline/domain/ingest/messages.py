"""Kafka snapshot lines in the `kcat -C -J` envelope read into typed messages or rejection reasons, in SQL run by
DuckDB; Python only assembles statements from the topics' fixed contracts (kafka.py), never from input data."""

from datetime import UTC, date, datetime
from pathlib import Path

import duckdb

from loyalty_pipeline.domain.config import KafkaSource
from loyalty_pipeline.domain.ingest import connect, lines
from loyalty_pipeline.domain.ingest.kafka import TOPICS, Field, Topic

MAX_MESSAGE_BYTES, KEPT_OF_LONG_LINE = lines.MAX_LINE_BYTES, lines.KEPT_OF_LONG_LINE

# JSON types DuckDB reports that each SQL type accepts.
_JSON_TYPES = {
    "VARCHAR": "('VARCHAR')",
    "DECIMAL(18,2)": "('UBIGINT', 'BIGINT', 'DOUBLE')",
    "INTEGER": "('UBIGINT', 'BIGINT')",
    "BIGINT": "('UBIGINT', 'BIGINT')",
}


def event_day_range(
    files: list[Path], first: date, latest: datetime, topic: Topic | None = None, source: KafkaSource | None = None
) -> tuple[date, date] | None:
    """First and last UTC day of the messages in snapshot files whose event time (as the run reads it: a return's
    `returned_at`, else `ts`) is in [first, latest]. Lines that do not parse are skipped; a file DuckDB cannot read
    whole (a line over its limit, a bad byte) is read line by line, as the run does. Kafka Connect objects (a
    `source` saying so, of `topic`) are read as the run reads them."""
    found = []
    with duckdb.connect() as conn:
        if source is not None and source.layout == "connect_s3":  # as the envelope lines the run parses
            connect.load_objects(conn, files, topic, source, "object_lines_read")
            found += _event_time_bounds(conn, "object_lines_read", files, topic, first, latest)
        else:
            for folder in sorted({file.parent for file in files}):
                group = [file for file in files if file.parent == folder]
                of_folder = TOPICS.get(folder.name)
                try:
                    found += _event_time_bounds(conn, lines.scan_sql("files"), group, of_folder, first, latest)
                except duckdb.Error:
                    lines.load_lines(conn, group, "scanned_lines")
                    found += _event_time_bounds(conn, "scanned_lines", group, of_folder, first, latest)
    found = [ms for ms in found if ms is not None]
    if not found:
        return None
    return tuple(datetime.fromtimestamp(ms / 1000, UTC).date() for ms in (min(found), max(found)))


def _event_time_bounds(conn, relation: str, files: list[Path], topic: Topic | None, first: date, latest: datetime):
    """[min, max] event time in ms of the lines of `relation` (which may read query parameter `files`)."""
    ts = "CASE WHEN json_type(line, '$.ts') IN ('UBIGINT', 'BIGINT') THEN TRY_CAST(line ->> '$.ts' AS BIGINT) END"
    event_time = ts  # as the run reads it: not "123"
    if topic is not None and topic.event_time:
        payload = (
            "CASE json_type(line, '$.payload') WHEN 'VARCHAR' THEN line ->> '$.payload' "
            "WHEN 'OBJECT' THEN json_extract(line, '$.payload') END"
        )
        path = f"'$.{topic.event_time}'"
        event_time = (
            f"coalesce(CASE WHEN try(json_type({payload}, {path})) IN ('UBIGINT', 'BIGINT') "
            f"THEN TRY_CAST({payload} ->> {path} AS BIGINT) END, {ts})"
        )
    params = {"first": first, "latest": latest}
    if "$files" in relation:
        params["files"] = [str(file) for file in files]
    return list(
        conn.execute(
            f"""SELECT min(ms), max(ms) FROM (SELECT {event_time} AS ms FROM {relation} WHERE json_valid(line))
                WHERE ms BETWEEN epoch_ms($first::TIMESTAMP) AND epoch_ms($latest::TIMESTAMP)""",
            params,
        ).fetchall()[0]
    )


# The reason of a copy of a Kafka coordinate that holds another message than the copy kept.
CONFLICTING = (
    "'conflicting copy of partition ' || kafka_partition || ' offset ' || kafka_offset || ' (another message kept)'"
)


def _field_sql(field: Field, json: str) -> tuple[str, str]:
    """(typed value, rejection reason over the typed columns) of one payload field whose JSON value is `json`."""
    typed = f"TRY_CAST({json} ->> '$' AS {field.sql_type})"
    value = f"CASE WHEN json_type({json}) IN {_JSON_TYPES[field.sql_type]} THEN {typed} END"
    present = f"coalesce(json_type({json}), 'NULL') <> 'NULL'"
    valid = f"{field.name} IS NOT NULL AND ({field.valid or 'true'})"
    reason = f"WHEN {present} AND NOT ({valid}) THEN 'field {field.name} must be {field.rule}'"
    if field.maximum is not None:
        reason += f" WHEN {field.name} > {int(field.maximum)} THEN 'field {field.name} must be at most {field.maximum}'"
    if field.required:
        reason = f"WHEN NOT {present} THEN 'missing field {field.name}' {reason}"
    return value, f"CASE {reason} END"


def parse_messages(
    conn: duckdb.DuckDBPyConnection,
    topic: Topic,
    first_day: date,
    latest: datetime,
    lines: str,
    bound: str,
) -> str:
    """Parses table `lines(file, line_no, line)` (lines.load_lines) into a temp table, whose name it returns: one row
    per non-blank line, either typed or with a reason. `bound` says what sets `latest`, for the reason.

    Lines with valid coordinates count once per (partition, offset): snapshots are exported at-least-once. A
    valid copy wins over an invalid one, then the first by file and line.
    """
    # json_extract with a list of paths parses a document once; a missing key gives NULL, a JSON null 'null'.
    values = [_field_sql(field, f"fields[{n}]") for n, field in enumerate(topic.fields, start=1)]
    field_paths = ", ".join(f"'$.{field.name}'" for field in topic.fields)
    value_columns = ",\n".join(
        f"{value} AS {field.name}" for field, (value, _) in zip(topic.fields, values, strict=True)
    )
    reasons = ",\n".join(reason for _, reason in values)
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE kafka_parsed AS
        WITH envelopes AS (
            SELECT file, line_no, line, strlen(line) > $max_bytes AS too_long,
                   try(json_type(line)) = 'OBJECT' AS is_object,
                   CASE WHEN is_object AND NOT too_long THEN line END AS message
            FROM {lines} WHERE trim(line) <> ''  -- blank lines are not messages
        ), parts AS (
            SELECT *,
                   json_extract(message, ['$.partition', '$.offset', '$.ts', '$.key', '$.payload', '$.topic']) AS envelope
            FROM envelopes
        ), coordinates AS (
            SELECT *,
                   json_type(envelope[1]) IN ('UBIGINT', 'BIGINT') AS partition_is_integer,
                   json_type(envelope[2]) IN ('UBIGINT', 'BIGINT') AS offset_is_integer,
                   CASE WHEN partition_is_integer THEN TRY_CAST(envelope[1] ->> '$' AS INTEGER) END AS partition_value,
                   CASE WHEN offset_is_integer THEN TRY_CAST(envelope[2] ->> '$' AS BIGINT) END AS offset_value,
                   CASE WHEN partition_value >= 0 THEN partition_value END AS kafka_partition,
                   CASE WHEN offset_value >= 0 THEN offset_value END AS kafka_offset,
                   CASE WHEN json_type(envelope[3]) IN ('UBIGINT', 'BIGINT')
                        THEN TRY_CAST(envelope[3] ->> '$' AS BIGINT) END AS ts_ms,
                   CASE WHEN json_type(envelope[4]) = 'VARCHAR' THEN envelope[4] ->> '$' END AS key_text,
                   CASE WHEN trim(key_text) <> '' AND NOT regexp_matches(key_text, '[[:cntrl:]]') THEN trim(key_text) END
                       AS message_key,
                   json_type(envelope[5]) AS payload_type,
                   CASE json_type(envelope[5]) WHEN 'VARCHAR' THEN envelope[5] ->> '$' END AS payload_text
            FROM parts
        ), payloads AS (
            SELECT *,
                   payload_type = 'NULL' AS tombstone,
                   CASE payload_type
                        WHEN 'VARCHAR' THEN CASE WHEN try(json_type(payload_text)) = 'OBJECT' THEN payload_text END
                        WHEN 'OBJECT' THEN envelope[5]
                   END AS payload
            FROM coordinates
        ), typed AS (
            SELECT *, {value_columns} FROM (SELECT *, json_extract(payload, [{field_paths}]) AS fields FROM payloads)
        ), timed AS (
            SELECT *, CASE WHEN time_ms BETWEEN epoch_ms($first_day::TIMESTAMP) AND epoch_ms($latest::TIMESTAMP)
                           THEN epoch_ms(time_ms) END AS event_ts
            FROM (SELECT *, {f"coalesce({topic.event_time}, ts_ms)" if topic.event_time else "ts_ms"} AS time_ms
                  FROM typed)
        )
        SELECT file, line_no, CASE WHEN too_long THEN left(line, $kept) ELSE line END AS line, kafka_partition, kafka_offset, event_ts,
               event_ts::DATE AS day, tombstone, hash(ts_ms, message_key, payload_type, payload) AS content,
               message_key AS {topic.key}, {", ".join(field.name for field in topic.fields)},
               coalesce(
                   CASE WHEN NOT coalesce(is_object, false) THEN 'not a JSON object'
                        WHEN too_long
                        THEN 'line of ' || strlen(line) || ' bytes: a message is at most ' || $max_bytes || ' bytes (Kafka''s default)'
                        WHEN NOT partition_is_integer THEN 'envelope: partition missing or not an integer'
                        WHEN kafka_partition IS NULL THEN 'envelope: partition out of range (0 to 2147483647)'
                        WHEN NOT offset_is_integer THEN 'envelope: offset missing or not an integer'
                        WHEN kafka_offset IS NULL THEN 'envelope: offset out of range (0 to 9223372036854775807)'
                        WHEN ts_ms IS NULL THEN 'envelope: ts missing or not an integer'
                        WHEN time_ms < epoch_ms($first_day::TIMESTAMP)
                        THEN 'event time before the first partition (' || $first_day || ')'
                        WHEN event_ts IS NULL THEN 'event time after ' || $latest || ' (' || $bound || ')'
                        WHEN payload_type IS NULL THEN 'envelope: no payload'
                        WHEN coalesce(json_type(envelope[4]), 'NULL') = 'NULL' THEN 'missing key ({topic.key})'
                        WHEN message_key IS NULL
                        THEN 'key ({topic.key}) must be a non-blank string without control characters'
                        WHEN coalesce(envelope[6] ->> '$', '{topic.name}') <> '{topic.name}'
                        THEN 'message of topic ' || (envelope[6] ->> '$') || ' in the folder of topic {topic.name}'
                        WHEN tombstone THEN NULL
                        WHEN payload IS NULL THEN 'payload is not a JSON object'
                   END,
                   CASE WHEN NOT tombstone THEN coalesce({reasons}) END,
                   {f"CASE WHEN NOT ({topic.valid[0]}) THEN '{topic.valid[1]}' END" if topic.valid else "NULL"}
               ) AS reason
        FROM timed
        """,
        {
            "first_day": first_day,
            "latest": latest,
            "bound": bound,
            "max_bytes": MAX_MESSAGE_BYTES,
            "kept": KEPT_OF_LONG_LINE,
        },
    )
    # Only coordinates seen twice need ranking: a narrow window over the duplicates, not over every line. A valid
    # copy wins, then the first by file and line. Another copy goes when it is the at-least-once export (the same
    # content) or a corrupt copy of a valid message; a valid copy with other content is quarantined, never dropped.
    conn.execute(
        """CREATE OR REPLACE TEMP TABLE kafka_copies AS
           SELECT file, line_no, content = first_value(content) OVER coordinate AS same,
                  row_number() OVER coordinate AS copy
           FROM kafka_parsed
           SEMI JOIN (SELECT kafka_partition, kafka_offset FROM kafka_parsed
                      WHERE kafka_partition IS NOT NULL AND kafka_offset IS NOT NULL
                      GROUP BY ALL HAVING count(*) > 1) USING (kafka_partition, kafka_offset)
           WINDOW coordinate AS (PARTITION BY kafka_partition, kafka_offset ORDER BY reason IS NULL DESC, file, line_no)"""
    )
    conn.execute(
        """DELETE FROM kafka_parsed WHERE (file, line_no) IN (SELECT file, line_no FROM kafka_copies WHERE copy > 1)
           AND (reason IS NOT NULL OR (file, line_no) IN (SELECT file, line_no FROM kafka_copies WHERE same))"""
    )
    conn.execute(
        f"""UPDATE kafka_parsed SET reason = {CONFLICTING}
            WHERE (file, line_no) IN (SELECT file, line_no FROM kafka_copies WHERE copy > 1 AND NOT same)
              AND reason IS NULL"""
    )
    return "kafka_parsed"
