"""The dated S3 exports, one file per UTC day: historical purchases and returns, validated, bad rows quarantined."""

from datetime import date
from pathlib import Path

import dagster as dg

from loyalty_pipeline.defs.automation.partitions import DECLARED, window_days
from loyalty_pipeline.defs.checks import check_specs, duplicate_check, rejected_rows_check
from loyalty_pipeline.defs.dated_files import dated_export_result, read_dated_export, write_dated_export
from loyalty_pipeline.defs.metadata import OWNERS, WAREHOUSE_POOL
from loyalty_pipeline.defs.resources import EventSources, RulesResource, Warehouse
from loyalty_pipeline.domain.ingest.kafka import MAX_PRICE
from loyalty_pipeline.domain.loyalty import loyalty
from loyalty_pipeline.lib.warehouse import REJECTED_DDL, SOURCE_FILES_DDL, insert_rows, transaction


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


HISTORICAL_DDL = """
CREATE SCHEMA IF NOT EXISTS raw;
CREATE TABLE IF NOT EXISTS raw.historical_purchases (
    order_id VARCHAR NOT NULL, user_id VARCHAR NOT NULL, product_id VARCHAR NOT NULL,
    price DECIMAL(18,2) NOT NULL, purchased_at TIMESTAMP NOT NULL,
    s3_key VARCHAR NOT NULL, row_no BIGINT NOT NULL, day DATE NOT NULL
);
"""


UNSAFE_KEY = "unsafe object key (an empty, '.' or '..' part, or a control character): not downloaded"


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
        rows, valid, dated, skipped = read_dated_export(
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
            write_dated_export(
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
        return dated_export_result(conn, HISTORICAL_KEY, HISTORICAL_CHECKS, source, len(dated), first, end)


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
        rows, _, dated, skipped = read_dated_export(
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
            write_dated_export(
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
        return dated_export_result(conn, S3_RETURNS_KEY, S3_RETURNS_CHECKS, source, len(dated), first, end)
