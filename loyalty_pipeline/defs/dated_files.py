"""A dated export's files (`<export>/YYYY-MM-DD.csv`): listed, refused when loading them would erase rows, read,
and written with their bad rows quarantined."""

import re
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from loyalty_pipeline.defs.automation import partitions
from loyalty_pipeline.defs.automation.partitions import window_days
from loyalty_pipeline.defs.checks import check_results, table_of
from loyalty_pipeline.defs.errors import SourceError
from loyalty_pipeline.defs.metadata import partition_metadata, preview, rejection_metadata, table_metadata
from loyalty_pipeline.defs.resources import TOLERANCE_BOUND, EventSources, RulesResource
from loyalty_pipeline.domain.ingest.lines import load_csv
from loyalty_pipeline.domain.ingest.quarantine import quarantine
from loyalty_pipeline.lib.warehouse import count, insert_rows

DATED_FILE = re.compile(r"(historical_purchases|returns)/(\d{4}-\d{2}-\d{2})\.csv")


def read_dated_export(
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
    refuse_empty_files(copies, held, table)
    rows = load_csv(conn, copies, columns, optional)
    conn.execute("CREATE OR REPLACE TEMP TABLE file_days (s3_key VARCHAR, file_day DATE)")
    insert_rows(conn, "file_days", [[key, day] for key, day in dated.items()])
    return rows, valid, dated, skipped


def write_dated_export(
    conn, table: str, source: str, checked: str, values: str, skipped: list, first: date, end: date
) -> None:
    """In the caller's transaction: the window's rows of `table` become `values` of the rows of temp table `checked`
    without a `reason`; the others, and the skipped files, are quarantined."""
    conn.execute(f"DELETE FROM {table} WHERE day >= $1 AND day < $2", [first, end])
    conn.execute(f"INSERT INTO {table} SELECT {values} FROM {checked} WHERE reason IS NULL")
    conn.execute("CREATE OR REPLACE TEMP TABLE skipped_files (s3_key VARCHAR, reason VARCHAR)")
    insert_rows(conn, "skipped_files", skipped)
    quarantine(
        conn,
        source,
        first,
        end,
        f"SELECT s3_key || ':' || line_no AS location, reason, raw, file_day AS day FROM {checked} "
        "WHERE reason IS NOT NULL UNION ALL SELECT s3_key, reason, NULL, NULL FROM skipped_files",
    )


def dated_export_result(conn, key: dg.AssetKey, checks: list, source: str, files: int, first, end):
    table = table_of(key)
    window_rows = f"SELECT * EXCLUDE (day) FROM {table} WHERE day >= $1 AND day < $2"
    return dg.MaterializeResult(
        metadata={
            **table_metadata(conn, table),
            **partition_metadata(conn, table, "day", first, end, key),
            "files": files,
            "preview": preview(conn, window_rows, [first, end]),
            **rejection_metadata(conn, source),
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


def refuse_empty_files(copies: dict[str, Path], held: int, table: str) -> None:
    """A zero-byte file where rows were loaded is an export still being written (or a failed one), not an empty
    export (which has its header): stop rather than erase."""
    empty = [key for key, path in copies.items() if path.stat().st_size == 0]
    if empty and held:
        raise SourceError(
            f"{empty[0]} is empty (an export still being written?), but {table} holds {held} rows it may have "
            "loaded: not erasing them (a CSV with only its header empties them)"
        )


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
    start, (latest, bound) = partitions.first_day(context), rules.latest_event_bound()
    latest = latest.date()
    if bound == TOLERANCE_BOUND:  # files are dated by day
        bound = "today + LOYALTY_FUTURE_TOLERANCE"
    listed = store.list_objects(prefix)
    valid, skipped = {}, []
    for obj in listed:
        _, file_day = dated_file(obj.key) or (None, None)
        if file_day is None or not obj.key.startswith(prefix):
            skipped.append([obj.key, f"file name is not {prefix}YYYY-MM-DD.csv"])
        elif file_day < start:
            skipped.append([obj.key, f"file day before the first partition ({start})"])
        elif file_day > latest:
            skipped.append([obj.key, f"file day after {latest} ({bound})"])
        else:
            valid[obj.key] = file_day
    if skipped:
        context.log.warning(f"skipped files under {prefix}: {skipped}")
    return listed, valid, {key: day for key, day in valid.items() if first <= day < end}, skipped
