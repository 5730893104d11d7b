"""Raw tables from Kafka topic snapshots, validated, deduplicated, bad rows quarantined; and every ingest asset."""

from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from loyalty_pipeline.defs.automation import partitions
from loyalty_pipeline.defs.automation.partitions import DECLARED, window_days
from loyalty_pipeline.defs.checks import (
    Check,
    check_results,
    check_specs,
    duplicate_check,
    rejected_rows_check,
)
from loyalty_pipeline.defs.customers import customers
from loyalty_pipeline.defs.errors import SourceError
from loyalty_pipeline.defs.exports import historical_purchases, s3_returns
from loyalty_pipeline.defs.metadata import (
    OWNERS,
    WAREHOUSE_POOL,
    partition_metadata,
    preview,
    rejection_metadata,
    table_metadata,
)
from loyalty_pipeline.defs.resources import EventSources, RulesResource, Warehouse
from loyalty_pipeline.defs.stores import read_version
from loyalty_pipeline.domain.ingest import connect
from loyalty_pipeline.domain.ingest.kafka import TOPICS, Topic, table_ddl
from loyalty_pipeline.domain.ingest.lines import load_lines
from loyalty_pipeline.domain.ingest.messages import CONFLICTING, parse_messages
from loyalty_pipeline.domain.ingest.quarantine import quarantine
from loyalty_pipeline.lib import touched
from loyalty_pipeline.lib.warehouse import REJECTED_DDL, SOURCE_FILES_DDL, count, insert_rows, transaction


def _files_to_read(conn, topic: str, files: list[Path], first: date, end: date) -> list[Path]:
    """The snapshot files a window needs: new or rewritten ones, and those holding a day of the window (also
    written to temp table `files_read`). A daily run thus reads the day's files, not a year of exports."""
    known = {
        file: (version, first_day, last_day)
        for file, version, first_day, last_day in conn.execute(
            "SELECT file, version, first_day, last_day FROM raw.kafka_files WHERE topic = $1", [topic]
        ).fetchall()
    }

    def needed(path: Path) -> bool:
        version, first_day, last_day = known.get(str(path), (None, None, None))
        return version != read_version(path) or (first_day is not None and first_day < end and last_day >= first)

    read = [path for path in files if needed(path)]
    conn.execute("CREATE OR REPLACE TEMP TABLE files_read (file VARCHAR, version VARCHAR)")
    insert_rows(conn, "files_read", [[str(path), read_version(path)] for path in read])
    return read


def _record_files(conn, topic: str, files: list[Path], parsed: str) -> None:
    """Remember the day range of the files just read (`files_read`, days from `parsed`), and forget files no
    longer there."""
    conn.execute(
        "DELETE FROM raw.kafka_files WHERE topic = $1 AND (file IN (SELECT file FROM files_read) OR NOT list_contains($2, file))",
        [topic, [str(path) for path in files]],
    )
    conn.execute(
        f"""INSERT INTO raw.kafka_files
           SELECT $1, files_read.file, version, min(day), max(day)
           FROM files_read LEFT JOIN {parsed} USING (file) GROUP BY ALL""",
        [topic],
    )


def _refuse_losing_rows(conn, topic: str, parsed: str, files: list[Path], first: date, end: date) -> None:
    """Rows of the window loaded from a snapshot file that is now gone or empty (an export being rewritten, a
    retention clean-up) would be erased by reloading the window: stop instead, naming the file."""
    present = [str(path) for path in files if path.stat().st_size > 0]
    lost = conn.execute(
        f"""SELECT regexp_replace(location, ':[0-9]+$', '') AS file, count(*) FROM raw.{topic}
            WHERE day >= $first AND day < $end AND NOT list_contains($present, regexp_replace(location, ':[0-9]+$', ''))
              AND (kafka_partition, kafka_offset) NOT IN (
                  SELECT kafka_partition, kafka_offset FROM {parsed} WHERE reason IS NULL AND kafka_partition IS NOT NULL)
            GROUP BY ALL ORDER BY ALL LIMIT 1""",
        {"first": first, "end": end, "present": present},
    ).fetchall()
    if lost:
        (file, rows), last = lost[0], end - timedelta(days=1)
        raise SourceError(
            f"{file} is gone or empty, but raw.{topic} holds {rows} rows of {first}..{last} loaded from it that no "
            "other file has: not erasing them (restore the file, or run only days it did not hold)"
        )


def _warn_of_days_not_run(context, conn, topic: str, parsed: str, first: date, end: date) -> None:
    """Valid messages of the files read whose day is outside the window and not loaded yet (a return dated after
    every file's days, a new file holding other days) are named in a warning: waiting is fine, silence is not."""
    waiting, earliest, latest = conn.execute(
        f"""SELECT count(*), min(day), max(day) FROM {parsed} AS p
            ANTI JOIN raw.{topic} AS r USING (kafka_partition, kafka_offset)
            WHERE p.reason IS NULL AND (p.day < $1 OR p.day >= $2)""",
        [first, end],
    ).fetchall()[0]
    if waiting:
        context.log.warning(
            f"{waiting} message(s) of {topic} in the files read are on days outside this run "
            f"({earliest}..{latest}), not loaded yet: materialize those days"
        )


def _unread_files(conn, topic: str) -> list[tuple[str, str]]:
    """(path, reason) of what the last run found and did not read in `kafka/<topic>/`, or in `kafka/` itself (a
    misspelt topic folder may hold this topic's files)."""
    return conn.execute(
        "SELECT location, reason FROM raw.rejected_records WHERE source = 'kafka:files' "
        "AND parse_filename(parse_dirpath(location)) IN ($1, 'kafka') ORDER BY location",
        [topic],
    ).fetchall()


def _every_file_read(key: dg.AssetKey) -> Check:
    def evaluate(conn, rules, days) -> tuple[bool, dict]:
        unread = _unread_files(conn, key.path[-1])
        return not unread, {"files_not_read": len(unread), **dict(unread[:10])}

    return Check(
        "every_file_read",
        f"Every file under kafka/{key.path[-1]}/ is read as a snapshot; the others, and folders under kafka/ that "
        "are no topic, are listed (warning only).",
        evaluate,
        blocking=False,
    )


def _topic_checks(key: dg.AssetKey) -> list:
    return [
        duplicate_check(key, ["kafka_partition", "kafka_offset"], day_column="day"),
        rejected_rows_check(key, f"kafka:{key.path[-1]}"),
        _every_file_read(key),
    ]


# Topics whose rows a profile or card shows, and the change-log source (touched.SOURCES) their days' people go to.
TOPIC_SOURCES = {"users": "users", "user_activity": "activity"}


raw_topics = {  # raw_topics["purchases"]: the spec of raw/purchases, for deps
    topic.name: dg.AssetSpec(
        key=["raw", topic.name],
        group_name="ingest",
        owners=OWNERS,
        kinds={"duckdb", "kafka"},
        partitions_def=DECLARED,
        description=f"Deduplicated messages of Kafka topic `{topic.name}` (snapshots in `kafka/{topic.name}/`), "
        "by UTC day of the record timestamp; tombstones kept.",
    )
    for topic in TOPICS.values()
}


@dg.multi_asset(
    name="kafka_topics",
    specs=list(raw_topics.values()),
    check_specs=[spec for asset in raw_topics.values() for spec in check_specs(asset.key, _topic_checks(asset.key))],
    can_subset=True,  # the UI and the sensors may ask for some topics only
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
)
def kafka_topics(context: dg.AssetExecutionContext, warehouse: Warehouse, sources: EventSources, rules: RulesResource):
    """The selected topics, one after the other in one step: each its own transaction and results."""
    first, end = window_days(context)
    with warehouse.get_connection() as conn:
        conn.execute(REJECTED_DDL + SOURCE_FILES_DDL)
        ignored = sources.ignored_kafka_entries(list(TOPICS))
        if ignored:
            context.log.warning(f"not read under {sources.data_dir}/kafka: {[path for path, _ in ignored]}")
        conn.execute("CREATE OR REPLACE TEMP TABLE ignored_entries (location VARCHAR, reason VARCHAR)")
        insert_rows(conn, "ignored_entries", ignored)
        quarantine(conn, "kafka:files", first, end, "SELECT *, NULL AS raw, NULL::DATE AS day FROM ignored_entries")
        for name, spec in raw_topics.items():
            if spec.key in context.selected_asset_keys:
                yield _ingest_topic(context, conn, sources, rules, TOPICS[name], first, end)


def _ingest_topic(
    context, conn, sources: EventSources, rules: RulesResource, topic: Topic, first, end
) -> dg.MaterializeResult:
    source, key = f"kafka:{topic.name}", raw_topics[topic.name].key
    layout = rules.rules.kafka.source(topic.name)
    files = sources.kafka_files(topic.name, layout)
    conn.execute(table_ddl(topic))
    if not files:
        folder = f"{sources.data_dir}/" + (
            f"{layout.topics_dir}/{topic.name}" if layout.layout == "connect_s3" else f"kafka/{topic.name}"
        )
        held = count(conn, f"SELECT 1 FROM raw.{topic.name} WHERE day >= $1 AND day < $2", [first, end])
        if held:
            raise SourceError(
                f"{folder} has no snapshot file, but raw.{topic.name} holds {held} rows of "
                f"{first}..{end - timedelta(days=1)}: not erasing them (check LOYALTY_DATA_DIR)"
            )
        context.log.warning(f"no snapshot files for topic {topic.name} in {folder}")
    read = _files_to_read(conn, topic.name, files, first, end)
    conn.execute("CREATE OR REPLACE TEMP TABLE unreadable (file VARCHAR, line_no BIGINT, reason VARCHAR)")
    if layout.layout == "connect_s3":  # Connect objects become the envelope lines kcat files hold
        insert_rows(conn, "unreadable", connect.load_objects(conn, read, topic, layout, "kafka_lines"))
    else:
        insert_rows(conn, "unreadable", load_lines(conn, read, "kafka_lines"))
    latest, bound = rules.latest_event_bound()
    parsed = parse_messages(conn, topic, partitions.first_day(context), latest, "kafka_lines", bound)
    # A coordinate already loaded on another day holds another message (the same message has the same day): the
    # copy loaded first stays, this one is quarantined rather than loaded twice.
    conn.execute(
        f"""UPDATE {parsed} SET reason = {CONFLICTING}
            WHERE reason IS NULL AND day >= $1 AND day < $2 AND (kafka_partition, kafka_offset) IN (
                SELECT kafka_partition, kafka_offset FROM raw.{topic.name} WHERE day < $1 OR day >= $2)""",
        [first, end],
    )
    _refuse_losing_rows(conn, topic.name, parsed, files, first, end)
    _warn_of_days_not_run(context, conn, topic.name, parsed, first, end)
    columns = ", ".join(topic.columns)
    logged = TOPIC_SOURCES.get(topic.name)
    people = f"SELECT user_id AS person FROM raw.{topic.name} WHERE day >= $1 AND day < $2"
    log = logged and touched.log_sql(people, logged, touched.NEXT_SEQ)
    conn.execute(touched.DDL)
    with transaction(conn):
        if log:  # the people of the rows replaced
            conn.execute(log, [first, end])
        conn.execute(f"DELETE FROM raw.{topic.name} WHERE day >= $1 AND day < $2", [first, end])
        conn.execute(
            f"""INSERT INTO raw.{topic.name} ({columns}, tombstone, kafka_partition, kafka_offset, event_ts, day, location)
            SELECT {columns}, tombstone, kafka_partition, kafka_offset, event_ts, day, file || ':' || line_no
            FROM {parsed} WHERE reason IS NULL AND day >= $1 AND day < $2""",
            [first, end],
        )
        if log:  # and of their replacements
            conn.execute(log, [first, end])
        quarantine(
            conn,
            source,
            first,
            end,
            "SELECT file || ':' || line_no AS location, reason, line AS raw, day "
            f"FROM {parsed} WHERE reason IS NOT NULL "
            "UNION ALL SELECT file || ':' || line_no, reason, NULL, NULL FROM unreadable",  # line 0: the whole file
            undated_of="EXISTS (SELECT 1 FROM files_read WHERE starts_with(location, files_read.file || ':'))",
        )
        _record_files(conn, topic.name, files, parsed)
    window_rows = f"SELECT * EXCLUDE (day) FROM raw.{topic.name} WHERE day >= $1 AND day < $2"
    return dg.MaterializeResult(
        asset_key=key,
        metadata={
            **table_metadata(conn, f"raw.{topic.name}"),
            **partition_metadata(conn, f"raw.{topic.name}", "day", first, end, key),
            "files": len(files),
            "files_read": len(read),
            "files_not_read": len(_unread_files(conn, topic.name)),
            "duplicates_dropped": count(
                conn, f"SELECT 1 FROM kafka_lines WHERE trim(line) <> '' EXCEPT ALL SELECT 1 FROM {parsed}"
            ),
            "preview": preview(conn, window_rows, [first, end]),
            **rejection_metadata(conn, source),
        },
        check_results=check_results(key, _topic_checks(key), conn, days=(first, end)),
    )


ingest_assets = [kafka_topics, customers, historical_purchases, s3_returns]
