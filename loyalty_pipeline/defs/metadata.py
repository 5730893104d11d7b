"""What the assets and runs tell Dagster: owners, kinds and pool of a step, a run's reason, and what a step tells the
asset catalog about its table (row counts, schema, a preview, bars per day)."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import duckdb

from loyalty_pipeline.defs.columns import DESCRIPTIONS
from loyalty_pipeline.lib.warehouse import count

# Every op that opens the warehouse is in this pool; .dagster_home/dagster.yaml limits it to one at a time,
# because DuckDB allows one writing process.
WAREHOUSE_POOL = "warehouse"
OWNERS = ["team:loyalty-data"]  # who to ask about a table, shown in the asset catalog
PORTABLE_KINDS = {"duckdb", "spark"}  # steps that run on either engine (LOYALTY_ENGINE, docs/scale-out.md)
REASON_TAG = "loyalty/reason"  # a run's tag saying why it runs (the sensors set it), kept with the revisions it writes


def with_engine(spec: dg.AssetSpec, engine: str) -> dg.AssetSpec:
    """A portable step's kind badge names the engine configured, not both."""
    return spec.replace_attributes(kinds={engine}) if spec.kinds == PORTABLE_KINDS else spec


def revision_of(context: dg.AssetExecutionContext) -> dict:
    """Query parameters recording who rewrote history and why: the run, the time and the reason."""
    window = context.partition_time_window
    first, end = window.start.date(), window.end.date()
    return {
        "run_id": context.run.run_id,
        "revised_at": datetime.now(UTC).replace(tzinfo=None),
        "reason": context.run.tags.get(REASON_TAG) or f"{first}..{end - timedelta(days=1)} materialized again",
    }


def _cell(value) -> str:
    """A value as a person reads it in a markdown table: blank for NULL, lists comma-separated."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(item) for item in value)
    return str(value).replace("|", "\\|")


def preview(conn: duckdb.DuckDBPyConnection, sql: str, params: list | None = None, limit: int = 10) -> dg.MetadataValue:
    """A markdown table of the first rows, for the asset's page in the UI."""
    result = conn.execute(f"SELECT * FROM ({sql}) LIMIT {int(limit)}", params or [])
    columns, rows = [column[0] for column in result.description], result.fetchall()
    if not rows:
        return dg.MetadataValue.md("_no rows_")
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


def partition_metadata(
    conn: duckdb.DuckDBPyConnection, table: str, day_column: str, first: date, end: date, key: dg.AssetKey | None = None
) -> dict:
    """Each materialized day gets its own row count (Dagster's `dagster/partition_row_count`, set on that partition's
    event); a range's metadata adds the window's total and a bar per day. The table's total is `dagster/row_count`."""
    per_day = dict(
        conn.execute(
            f"SELECT {day_column}::VARCHAR, count(*) FROM {table} WHERE {day_column} >= $1 AND {day_column} < $2 "
            "GROUP BY ALL",
            [first, end],
        ).fetchall()
    )
    days = [(first + timedelta(days=n)).isoformat() for n in range((end - first).days)]
    context = dg.AssetExecutionContext.get()  # the step computing this, as partition-scoped metadata needs
    for day in days:
        rows = {"dagster/partition_row_count": per_day.get(day, 0)}
        context.add_asset_metadata(rows, asset_key=key, partition_key=day)
    if len(days) == 1:
        return {}
    rows_per_day = [(day, per_day[day]) for day in days if day in per_day]
    return {
        "window_row_count": sum(per_day.values()),
        "rows_per_day": dg.MetadataValue.md(bar_table(("day", "rows"), rows_per_day)),
    }


def table_metadata(conn: duckdb.DuckDBPyConnection, table: str) -> dict:
    """Row count, column schema and table name of a warehouse table, for the asset catalog."""
    # a query's description names and types its columns at a tenth of the cost of scanning duckdb_columns()
    columns = [(column[0], str(column[1])) for column in conn.execute(f"SELECT * FROM {table} LIMIT 0").description]
    return {
        "dagster/row_count": count(conn, f"SELECT 1 FROM {table}"),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(column, kind, description=DESCRIPTIONS.get(column)) for column, kind in columns]
        ),
        "dagster/table_name": table,
    }


def bar_table(headers: tuple[str, str], rows: list[tuple], width: int = 12) -> str:
    """A markdown table with a bar per row, the picture the UI can show without a plotting library: solid for a
    positive value, light and after a minus for a negative one (points used or expired), short enough to fit."""
    widest = max((abs(value) for _, value in rows), default=0) or 1

    def bar(value) -> str:
        length = max(1, round(width * abs(value) / widest)) if value else 0
        return "−" + "░" * length if value < 0 else "█" * length

    lines = [f"| {headers[0]} | {headers[1]} | |", "| --- | ---: | --- |"]
    lines += [f"| {label} | {value} | {bar(value)} |" for label, value in rows]
    return "\n".join(lines)


def rejection_metadata(conn, source: str) -> dict:
    reasons = conn.execute(
        "SELECT reason, count(*) AS rows FROM raw.rejected_records WHERE source = $1 GROUP BY ALL ORDER BY rows DESC",
        [source],
    ).fetchall()
    table = "\n".join(f"| {reason} | {rows} |" for reason, rows in reasons)
    return {
        "rejected_rows": sum(rows for _, rows in reasons),
        "rejected_reasons": dg.MetadataValue.md("| reason | rows |\n| --- | --- |\n" + table if reasons else "_none_"),
    }
