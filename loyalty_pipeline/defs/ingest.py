"""Raw tables: Kafka topic snapshots and S3 CSV exports, validated, deduplicated, bad rows quarantined."""

import re
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
    table_of,
)
from loyalty_pipeline.defs.metadata import OWNERS, WAREHOUSE_POOL, partition_metadata, preview, table_metadata
from loyalty_pipeline.defs.resources import (
    EventSources,
    LocalStore,
    RulesResource,
    SourceError,
    Warehouse,
    file_version,
    safe_key,
)
from loyalty_pipeline.domain.ingest.kafka import CONFLICTING, MAX_PRICE, TOPICS, Topic, parse_messages, table_ddl
from loyalty_pipeline.domain.ingest.lines import load_csv, load_lines
from loyalty_pipeline.domain.loyalty import loyalty
from loyalty_pipeline.lib import touched
from loyalty_pipeline.lib.warehouse import REJECTED_DDL, SOURCE_FILES_DDL, count, insert_rows, transaction


def _iso_time(column: str) -> str:
    """SQL: CSV text `column` as a UTC TIMESTAMP when it is an ISO-8601 time (not 'epoch' or 'infinity'), else NULL."""
    return (
        f"CASE WHEN regexp_matches(trim({column}), '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}') "
        f"THEN timezone('UTC', TRY_CAST({column} AS TIMESTAMPTZ)) END"
    )


def _ms_time(column: str) -> str:
    """SQL: CSV text `column` as a TIMESTAMP when it is epoch ms in plain digits, else NULL. At most 15 digits (up to
    year 9999): a larger value would overflow the conversion and fail the whole step."""
    return f"CASE WHEN regexp_full_match(trim({column}), '[0-9]{{1,15}}') THEN epoch_ms(TRY_CAST(trim({column}) AS BIGINT)) END"


def _quarantine(conn, source: str, first: date, end: date, rejects_sql: str, undated_of: str = "true") -> int:
    """Replace the window's rejections of one source, and its undated ones matching SQL predicate `undated_of`."""
    conn.execute(
        "DELETE FROM raw.rejected_records WHERE source = $source "
        f"AND ((day IS NULL AND {undated_of}) OR (day >= $first AND day < $end))",
        {"source": source, "first": first, "end": end},
    )
    conn.execute(
        f"INSERT INTO raw.rejected_records SELECT $source, location, reason, raw, day FROM ({rejects_sql}) "
        "WHERE day IS NULL OR (day >= $first AND day < $end)",
        {"source": source, "first": first, "end": end},
    )
    return count(conn, "SELECT 1 FROM raw.rejected_records WHERE source = $1", [source])


def _rejection_metadata(conn, source: str) -> dict:
    reasons = conn.execute(
        "SELECT reason, count(*) AS rows FROM raw.rejected_records WHERE source = $1 GROUP BY ALL ORDER BY rows DESC",
        [source],
    ).fetchall()
    table = "\n".join(f"| {reason} | {rows} |" for reason, rows in reasons)
    return {
        "rejected_rows": sum(rows for _, rows in reasons),
        "rejected_reasons": dg.MetadataValue.md("| reason | rows |\n| --- | --- |\n" + table if reasons else "_none_"),
    }


def _read_version(path: Path) -> str:
    """The version a snapshot file was read at: its ctime too, which any rewrite moves, so a copy that puts back the
    old size and mtime (`cp -p`, `rsync -a`) is read again."""
    return f"{file_version(path)}-{path.stat().st_ctime_ns}"


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
        return version != _read_version(path) or (first_day is not None and first_day < end and last_day >= first)

    read = [path for path in files if needed(path)]
    conn.execute("CREATE OR REPLACE TEMP TABLE files_read (file VARCHAR, version VARCHAR)")
    insert_rows(conn, "files_read", [[str(path), _read_version(path)] for path in read])
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
        _quarantine(conn, "kafka:files", first, end, "SELECT *, NULL AS raw, NULL::DATE AS day FROM ignored_entries")
        for name, spec in raw_topics.items():
            if spec.key in context.selected_asset_keys:
                yield _ingest_topic(context, conn, sources, rules, TOPICS[name], first, end)


def _ingest_topic(
    context, conn, sources: EventSources, rules: RulesResource, topic: Topic, first, end
) -> dg.MaterializeResult:
    source, key = f"kafka:{topic.name}", raw_topics[topic.name].key
    files = sources.kafka_files(topic.name)
    conn.execute(table_ddl(topic))
    if not files:
        folder = f"{sources.data_dir}/kafka/{topic.name}"
        held = count(conn, f"SELECT 1 FROM raw.{topic.name} WHERE day >= $1 AND day < $2", [first, end])
        if held:
            raise SourceError(
                f"{folder} has no snapshot file, but raw.{topic.name} holds {held} rows of "
                f"{first}..{end - timedelta(days=1)}: not erasing them (check LOYALTY_DATA_DIR)"
            )
        context.log.warning(f"no snapshot files for topic {topic.name} in {folder}")
    read = _files_to_read(conn, topic.name, files, first, end)
    conn.execute("CREATE OR REPLACE TEMP TABLE unreadable (file VARCHAR, line_no BIGINT, reason VARCHAR)")
    insert_rows(conn, "unreadable", load_lines(conn, read, "kafka_lines"))
    parsed = parse_messages(conn, topic, partitions.first_day(context), rules.latest_event_time(), "kafka_lines")
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
        _quarantine(
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
            **partition_metadata(conn, f"raw.{topic.name}", "day", first, end),
            "files": len(files),
            "files_read": len(read),
            "files_not_read": len(_unread_files(conn, topic.name)),
            "duplicates_dropped": count(
                conn, f"SELECT 1 FROM kafka_lines WHERE trim(line) <> '' EXCEPT ALL SELECT 1 FROM {parsed}"
            ),
            "preview": preview(conn, window_rows, [first, end]),
            **_rejection_metadata(conn, source),
        },
        check_results=check_results(key, _topic_checks(key), conn, days=(first, end)),
    )


def _read_dated_export(
    context,
    conn,
    sources: EventSources,
    rules: RulesResource,
    workdir: Path,
    export: str,
    table: str,
    columns: list[str],
    optional: tuple[str, ...] = (),
) -> tuple[str, dict[str, date], dict[str, date], list[list[str]]]:
    """The window's files of `<export>/YYYY-MM-DD.csv` as `load_csv` rows, with temp table `file_days(s3_key,
    file_day)`; stops first if that would erase rows `table` holds. Returns (the rows' table, the valid files, the
    window's files, the skipped files as [key, reason])."""
    first, end = window_days(context)
    store = sources.object_store()
    listed, valid, dated, skipped = _dated_files(context, store, f"{export}/", rules)
    held = count(conn, f"SELECT 1 FROM {table} WHERE day >= $1 AND day < $2", [first, end])
    if not listed and held:
        raise SourceError(
            f"{sources.s3_url}/{export}/ lists no file, but {table} holds {held} rows of "
            f"{first}..{end - timedelta(days=1)}: not erasing them (check LOYALTY_S3_URL)"
        )
    _refuse_losing_days(conn, table, f"{export}/", dated, first, end)
    copies = store.local_copies(sorted(dated), workdir)
    _refuse_empty_files(copies, held, table)
    rows = load_csv(conn, copies, columns, optional)
    conn.execute("CREATE OR REPLACE TEMP TABLE file_days (s3_key VARCHAR, file_day DATE)")
    insert_rows(conn, "file_days", [[key, day] for key, day in dated.items()])
    return rows, valid, dated, skipped


def _write_dated_export(
    conn, table: str, source: str, checked: str, values: str, skipped: list, first: date, end: date
) -> None:
    """In the caller's transaction: the window's rows of `table` become `values` of the rows of temp table `checked`
    without a `reason`; the others, and the skipped files, are quarantined."""
    conn.execute(f"DELETE FROM {table} WHERE day >= $1 AND day < $2", [first, end])
    conn.execute(f"INSERT INTO {table} SELECT {values} FROM {checked} WHERE reason IS NULL")
    conn.execute("CREATE OR REPLACE TEMP TABLE skipped_files (s3_key VARCHAR, reason VARCHAR)")
    insert_rows(conn, "skipped_files", skipped)
    _quarantine(
        conn,
        source,
        first,
        end,
        f"SELECT s3_key || ':' || line_no AS location, reason, raw, file_day AS day FROM {checked} "
        "WHERE reason IS NOT NULL UNION ALL SELECT s3_key, reason, NULL, NULL FROM skipped_files",
    )


def _dated_export_result(conn, key: dg.AssetKey, checks: list, source: str, files: int, first, end):
    table = table_of(key)
    window_rows = f"SELECT * EXCLUDE (day) FROM {table} WHERE day >= $1 AND day < $2"
    return dg.MaterializeResult(
        metadata={
            **table_metadata(conn, table),
            **partition_metadata(conn, table, "day", first, end),
            "files": files,
            "preview": preview(conn, window_rows, [first, end]),
            **_rejection_metadata(conn, source),
        },
        check_results=check_results(key, checks, conn, days=(first, end)),
    )


def _refuse_losing_days(conn, table: str, prefix: str, dated: dict[str, date], first: date, end: date) -> None:
    """A day of the window with rows loaded but no file now (removed, renamed, behind a folder marker): stop."""
    held = conn.execute(
        f"SELECT DISTINCT day FROM {table} WHERE day >= $1 AND day < $2 AND NOT list_contains($3, day) ORDER BY day",
        [first, end, list(dated.values())],
    ).fetchall()
    if held:
        raise SourceError(
            f"{prefix}{held[0][0]}.csv is gone, but {table} holds rows of {held[0][0]} loaded from it: not erasing "
            "them (restore the file; one with only its header empties the day)"
        )


def _refuse_empty_files(copies: dict[str, Path], held: int, table: str) -> None:
    """A zero-byte file where rows were loaded is an export still being written (or a failed one), not an empty
    export (which has its header): stop rather than erase."""
    empty = [key for key, path in copies.items() if path.stat().st_size == 0]
    if empty and held:
        raise SourceError(
            f"{empty[0]} is empty (an export still being written?), but {table} holds {held} rows it may have "
            "loaded: not erasing them (a CSV with only its header empties them)"
        )


CUSTOMERS_DDL = """
CREATE SCHEMA IF NOT EXISTS raw;
CREATE TABLE IF NOT EXISTS raw.customers (
    user_id VARCHAR NOT NULL, name VARCHAR, email VARCHAR, signup_date DATE,
    s3_key VARCHAR NOT NULL, row_no BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS raw.customers_files (  -- every export object applied, at which version
    s3_key VARCHAR NOT NULL, version VARCHAR NOT NULL,
    -- its rows check the same while the latest signup day accepted is in [latest_from, latest_before) (NULL: open)
    latest_from DATE, latest_before DATE
);
"""
NOT_CSV = "not read: a customers export is named *.csv"
SIGNUP_RANGE = "signup_date must be a date from 1900-01-01 to today"


CUSTOMERS_KEY = dg.AssetKey(["raw", "customers"])
CUSTOMERS_CHECKS = [
    duplicate_check(CUSTOMERS_KEY, ["s3_key", "row_no"]),
    rejected_rows_check(CUSTOMERS_KEY, "s3:customers"),
]


def _export_versions(store, keys: list[str], listed: list) -> dict[str, str]:
    """{key: version} of the export objects `keys`: the listing's (an ETag), and for a local file its ctime too,
    which any rewrite moves (`cp -p` puts back the size and mtime)."""
    if isinstance(store, LocalStore):
        return {key: _read_version(store.root / key) for key in keys}
    version = {obj.key: obj.version for obj in listed}
    return {key: version[key] for key in keys}


def _still_applied(applied: tuple | None, version: str, latest: date) -> bool:
    """An object applied at this version whose rows would check the same against today's latest signup day."""
    if applied is None:
        return False
    applied_version, latest_from, latest_before = applied
    return (
        applied_version == version
        and (latest_from is None or latest_from <= latest)
        and (latest_before is None or latest < latest_before)
    )


@dg.asset(
    key=CUSTOMERS_KEY,
    check_specs=check_specs(CUSTOMERS_KEY, CUSTOMERS_CHECKS),
    group_name="ingest",
    owners=OWNERS,
    kinds={"duckdb", "s3"},
    pool=WAREHOUSE_POOL,
    description="Customer records exported from the transactional database: every row of `customers/*.csv`.",
)
def customers(context: dg.AssetExecutionContext, warehouse: Warehouse, sources: EventSources, rules: RulesResource):
    """Reads only the objects new or rewritten since applied (or whose rows a new day checks otherwise); the rows and
    rejections of those and of the objects gone are replaced, the others kept."""
    store = sources.object_store()
    objects = store.list_objects("customers/")
    everything = [obj.key for obj in objects]
    listed = [key for key in everything if key.lower().endswith(".csv")]
    keys = [key for key in listed if safe_key(key)]
    versions = _export_versions(store, keys, objects)  # before reading: a rewrite meanwhile is read next time
    latest = rules.latest_event_time().date()
    source = "s3:customers"
    with sources.workdir() as workdir, warehouse.get_connection() as conn:
        conn.execute(CUSTOMERS_DDL + REJECTED_DDL)
        held = count(conn, "SELECT 1 FROM raw.customers")
        if not listed and held:
            raise SourceError(
                f"{sources.s3_url}/customers/ lists no CSV file, but raw.customers holds {held} rows from an earlier "
                "export: not erasing them (check LOYALTY_S3_URL; to empty the customers, export a header-only CSV)"
            )
        conn.execute("CREATE OR REPLACE TEMP TABLE skipped_files (s3_key VARCHAR, reason VARCHAR)")
        insert_rows(
            conn,
            "skipped_files",
            [[key, UNSAFE_KEY] for key in listed if not safe_key(key)]
            + [[key, NOT_CSV] for key in everything if key not in listed],
        )
        applied = {
            key: (version, latest_from, latest_before)
            for key, version, latest_from, latest_before in conn.execute("FROM raw.customers_files").fetchall()
        }
        rebuild = context.run.tags.get(touched.REBUILD_TAG) == "true"  # reads every object again
        kept = [] if rebuild else [key for key in keys if _still_applied(applied.get(key), versions[key], latest)]
        read = [key for key in keys if key not in kept]
        dropped = [key for key in applied if key not in kept]  # rewritten, or no longer listed
        conn.execute("CREATE OR REPLACE TEMP TABLE customers_kept (s3_key VARCHAR)")
        insert_rows(conn, "customers_kept", [[key] for key in kept])
        conn.execute("CREATE OR REPLACE TEMP TABLE customers_read (s3_key VARCHAR, version VARCHAR)")
        insert_rows(conn, "customers_read", [[key, versions[key]] for key in read])
        copies = store.local_copies(read, Path(workdir))
        _refuse_empty_files(copies, held, "raw.customers")
        rows = load_csv(conn, copies, ["user_id", "name", "email", "signup_date"])
        conn.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE customers_checked AS
            SELECT *, TRY_CAST(signup_date AS DATE) AS signup,
                   CASE WHEN problem IS NOT NULL THEN problem
                        WHEN nullif(trim(user_id), '') IS NULL THEN 'missing user_id'
                        WHEN signup_date IS NOT NULL AND TRY_CAST(signup_date AS DATE) IS NULL
                        THEN 'signup_date is not a date (YYYY-MM-DD)'
                        WHEN signup NOT BETWEEN DATE '1900-01-01' AND $latest  -- 'infinity', year 294277
                        THEN '{SIGNUP_RANGE}'
                   END AS reason
            FROM {rows}
            """,
            {"latest": latest},
        )
        conn.execute(touched.DDL)
        new_rows = (
            "SELECT trim(user_id), name, email, signup, s3_key, row_no FROM customers_checked WHERE reason IS NULL"
        )
        old_rows = (  # of the objects read or gone; rows of a kept object stay as they are
            "SELECT user_id, name, email, signup_date, s3_key, row_no FROM raw.customers "
            "WHERE s3_key NOT IN (SELECT s3_key FROM customers_kept)"
        )
        skipped_reasons = ", ".join("'" + reason.replace("'", "''") + "'" for reason in (UNSAFE_KEY, NOT_CSV))
        with transaction(conn):
            # rows loaded before objects' versions were kept have no raw.customers_files row: replaced too
            if read or dropped or (held and not applied):
                # the people of the rows withdrawn or applied (a row edited or moved is both)
                conn.execute(
                    touched.log_sql(
                        f"SELECT user_id AS person FROM (({old_rows} EXCEPT {new_rows}) UNION ALL "
                        f"({new_rows} EXCEPT {old_rows}))",
                        "customers",
                        touched.NEXT_SEQ,
                    )
                )
                conn.execute("DELETE FROM raw.customers WHERE s3_key NOT IN (SELECT s3_key FROM customers_kept)")
                conn.execute(f"INSERT INTO raw.customers {new_rows}")
            # a line's rejection is `<key>:<line>` of an object read; a skipped object's is its key, redone each run
            _quarantine(
                conn,
                source,
                date.min,
                date.max,
                "SELECT s3_key || ':' || line_no AS location, reason, raw, NULL::DATE AS day "
                "FROM customers_checked WHERE reason IS NOT NULL "
                "UNION ALL SELECT s3_key, reason, NULL, NULL FROM skipped_files",
                undated_of=f"(reason IN ({skipped_reasons}) OR regexp_replace(location, ':[0-9]+$', '') "
                "NOT IN (SELECT s3_key FROM customers_kept))",
            )
            conn.execute("DELETE FROM raw.customers_files WHERE s3_key NOT IN (SELECT s3_key FROM customers_kept)")
            conn.execute(
                f"""INSERT INTO raw.customers_files
                    SELECT s3_key, version, max(signup) FILTER (WHERE reason IS NULL),
                           min(signup) FILTER (WHERE reason = '{SIGNUP_RANGE}' AND signup > $latest)
                    FROM customers_read LEFT JOIN customers_checked USING (s3_key) GROUP BY ALL""",
                {"latest": latest},
            )
        return dg.MaterializeResult(
            metadata={
                **table_metadata(conn, "raw.customers"),
                "files": len(keys),
                "files_read": len(read),
                "files_dropped": len(dropped),
                "preview": preview(conn, "SELECT * FROM raw.customers"),
                **_rejection_metadata(conn, source),
            },
            check_results=check_results(CUSTOMERS_KEY, CUSTOMERS_CHECKS, conn),
        )


HISTORICAL_DDL = """
CREATE SCHEMA IF NOT EXISTS raw;
CREATE TABLE IF NOT EXISTS raw.historical_purchases (
    order_id VARCHAR NOT NULL, user_id VARCHAR NOT NULL, product_id VARCHAR NOT NULL,
    price DECIMAL(18,2) NOT NULL, purchased_at TIMESTAMP NOT NULL,
    s3_key VARCHAR NOT NULL, row_no BIGINT NOT NULL, day DATE NOT NULL
);
"""
UNSAFE_KEY = "unsafe object key (an empty, '.' or '..' part, or a control character): not downloaded"
DATED_FILE = re.compile(r"(historical_purchases|returns)/(\d{4}-\d{2}-\d{2})\.csv")


HISTORICAL_KEY = dg.AssetKey(["raw", "historical_purchases"])
HISTORICAL_CHECKS = [
    duplicate_check(HISTORICAL_KEY, ["s3_key", "row_no"], day_column="day"),
    rejected_rows_check(HISTORICAL_KEY, "s3:historical_purchases"),
]


@dg.asset(
    key=HISTORICAL_KEY,
    check_specs=check_specs(HISTORICAL_KEY, HISTORICAL_CHECKS),
    group_name="ingest",
    owners=OWNERS,
    kinds={"duckdb", "s3"},
    partitions_def=DECLARED,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
    description="Past orders from `historical_purchases/YYYY-MM-DD.csv`, one file per UTC day partition.",
)
def historical_purchases(
    context: dg.AssetExecutionContext, warehouse: Warehouse, sources: EventSources, rules: RulesResource
):
    first, end = window_days(context)
    source = "s3:historical_purchases"
    with sources.workdir() as workdir, warehouse.get_connection() as conn:
        conn.execute(HISTORICAL_DDL + REJECTED_DDL + SOURCE_FILES_DDL)
        rows, valid, dated, skipped = _read_dated_export(
            context,
            conn,
            sources,
            rules,
            Path(workdir),
            "historical_purchases",
            "raw.historical_purchases",
            ["order_id", "user_id", "product_id", "price", "purchased_at"],
        )
        conn.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE historical_checked AS
            WITH typed AS (
                SELECT *, TRY_CAST(price AS DECIMAL(18,2)) AS amount, {_iso_time("purchased_at")} AS purchased
                FROM {rows} JOIN file_days USING (s3_key)
            )
            SELECT *, CASE
                WHEN problem IS NOT NULL THEN problem
                WHEN nullif(trim(order_id), '') IS NULL THEN 'missing order_id'
                WHEN nullif(trim(user_id), '') IS NULL THEN 'missing user_id'
                WHEN nullif(trim(product_id), '') IS NULL THEN 'missing product_id'
                WHEN NOT regexp_full_match(trim(price), '[0-9]+(\.[0-9]*)?')
                THEN 'price must be a non-negative number'  -- plain digits: no sign, exponent or separator
                WHEN regexp_matches(trim(price), '\.[0-9]{{2}}0*[1-9]') THEN 'price must have at most 2 decimals'
                WHEN amount IS NULL OR amount > $max_price THEN 'price must be at most ' || $max_price
                WHEN purchased IS NULL THEN 'purchased_at is not an ISO-8601 timestamp'
                WHEN purchased::DATE <> file_day THEN 'purchased_at is not on the file''s date ' || file_day
            END AS reason
            FROM typed
            """,
            {"max_price": MAX_PRICE},
        )
        _quarantine_reused_ids(conn, first, end)
        with transaction(conn):
            _write_dated_export(
                conn,
                "raw.historical_purchases",
                source,
                "historical_checked",
                "trim(order_id), trim(user_id), trim(product_id), amount, purchased, s3_key, row_no, file_day",
                skipped,
                first,
                end,
            )
            conn.execute("DELETE FROM raw.historical_files")
            insert_rows(conn, "raw.historical_files", [[key, day] for key, day in valid.items()])
        return _dated_export_result(conn, HISTORICAL_KEY, HISTORICAL_CHECKS, source, len(dated), first, end)


# A historical row's purchase_id (s3:<order_id>:<product_id>:<row number>, the data contract's), over trimmed ids.


def _quarantine_reused_ids(conn, first: date, end: date) -> None:
    """A valid row of `historical_checked` whose purchase_id another row already has (the same order, product and row
    number in another day's file, or ids whose parts hold ':') is quarantined, naming the row kept: a purchase is
    never counted twice. A row of a day outside the run (loaded before) stays; within the run, the earliest file's."""
    conn.execute(
        f"""UPDATE historical_checked AS h SET reason = 'purchase id ' || reused.id || ' is already that of ' || kept
            FROM (
                SELECT *, first_value(location) OVER same AS kept, row_number() OVER same AS copy
                FROM (
                    SELECT {loyalty.S3_PURCHASE_ID} AS id, s3_key, line_no, s3_key || ':' || line_no AS location, file_day AS day
                    FROM historical_checked WHERE reason IS NULL
                    UNION ALL
                    SELECT {loyalty.S3_PURCHASE_ID}, s3_key, NULL, s3_key || ':' || (row_no + 1), day
                    FROM raw.historical_purchases
                    WHERE (day < $first OR day >= $end)
                      AND {loyalty.S3_PURCHASE_ID} IN (SELECT {loyalty.S3_PURCHASE_ID} FROM historical_checked WHERE reason IS NULL)
                )
                WINDOW same AS (PARTITION BY id ORDER BY line_no IS NOT NULL, day, s3_key, line_no)
            ) AS reused
            WHERE reused.copy > 1 AND h.s3_key = reused.s3_key AND h.line_no = reused.line_no""",
        {"first": first, "end": end},
    )


S3_RETURNS_DDL = """
CREATE SCHEMA IF NOT EXISTS raw;
CREATE TABLE IF NOT EXISTS raw.s3_returns (
    purchase_id VARCHAR, order_id VARCHAR, product_id VARCHAR, returned_at TIMESTAMP NOT NULL,
    s3_key VARCHAR NOT NULL, row_no BIGINT NOT NULL, location VARCHAR NOT NULL, day DATE NOT NULL
);
"""
S3_RETURNS_KEY = dg.AssetKey(["raw", "s3_returns"])
S3_RETURNS_CHECKS = [
    duplicate_check(S3_RETURNS_KEY, ["s3_key", "row_no"], day_column="day"),
    rejected_rows_check(S3_RETURNS_KEY, "s3:returns"),
]


@dg.asset(
    key=S3_RETURNS_KEY,
    check_specs=check_specs(S3_RETURNS_KEY, S3_RETURNS_CHECKS),
    group_name="ingest",
    owners=OWNERS,
    kinds={"duckdb", "s3"},
    partitions_def=DECLARED,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
    description="Returns from `returns/YYYY-MM-DD.csv` (purchase_id, or order_id and product_id; returned_at), "
    "one file per UTC day partition.",
)
def s3_returns(context: dg.AssetExecutionContext, warehouse: Warehouse, sources: EventSources, rules: RulesResource):
    first, end = window_days(context)
    source = "s3:returns"
    with sources.workdir() as workdir, warehouse.get_connection() as conn:
        conn.execute(S3_RETURNS_DDL + REJECTED_DDL)
        rows, _, dated, skipped = _read_dated_export(
            context,
            conn,
            sources,
            rules,
            Path(workdir),
            "returns",
            "raw.s3_returns",
            ["purchase_id", "order_id", "product_id", "returned_at"],
            optional=("purchase_id", "order_id", "product_id"),
        )
        conn.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE returns_checked AS
            WITH typed AS (  -- returned_at: an ISO-8601 time, or ms as in the returns topic
                SELECT *, coalesce({_iso_time("returned_at")}, {_ms_time("returned_at")}) AS returned
                FROM {rows} JOIN file_days USING (s3_key)
            )
            SELECT *, CASE
                WHEN problem IS NOT NULL THEN problem
                WHEN purchase_id IS NULL AND (order_id IS NULL OR product_id IS NULL)
                THEN 'a return names purchase_id, or order_id and product_id'
                WHEN returned IS NULL THEN 'returned_at is not an ISO-8601 time or ms'
                WHEN returned::DATE <> file_day THEN 'returned_at is not on the file''s date ' || file_day
            END AS reason
            FROM typed
            """
        )
        with transaction(conn):
            _write_dated_export(
                conn,
                "raw.s3_returns",
                source,
                "returns_checked",
                "trim(purchase_id), trim(order_id), trim(product_id), returned, s3_key, row_no, "
                "s3_key || ':' || line_no, file_day",
                skipped,
                first,
                end,
            )
        return _dated_export_result(conn, S3_RETURNS_KEY, S3_RETURNS_CHECKS, source, len(dated), first, end)


def dated_file(key: str) -> tuple[str, date] | None:
    """(export, day) of `<export>/YYYY-MM-DD.csv` for a dated export (historical_purchases, returns); None for any
    other key."""
    match = DATED_FILE.fullmatch(key)
    try:
        return (match.group(1), date.fromisoformat(match.group(2))) if match else None
    except ValueError:
        return None


def _dated_files(context, store, prefix: str, rules: RulesResource):
    """A dated export's listing: (the listing, {key: day} of the valid files, those of the run's window, the
    skipped files as [key, reason] rows), the skipped ones also logged by name."""
    first, end = window_days(context)
    start, latest = partitions.first_day(context), rules.latest_event_time().date()
    listed = store.list_objects(prefix)
    valid, skipped = {}, []
    for obj in listed:
        _, file_day = dated_file(obj.key) or (None, None)
        if file_day is None or not obj.key.startswith(prefix):
            skipped.append([obj.key, f"file name is not {prefix}YYYY-MM-DD.csv"])
        elif file_day < start:
            skipped.append([obj.key, f"file day before the first partition ({start})"])
        elif file_day > latest:
            skipped.append([obj.key, f"file day after {latest} (today + LOYALTY_FUTURE_TOLERANCE)"])
        else:
            valid[obj.key] = file_day
    if skipped:
        context.log.warning(f"skipped files under {prefix}: {skipped}")
    return listed, valid, {key: day for key, day in valid.items() if first <= day < end}, skipped


ingest_assets = [kafka_topics, customers, historical_purchases, s3_returns]
