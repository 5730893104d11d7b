"""raw.customers: every row of the customers export (`customers/*.csv`), re-read only for the objects that changed."""

from datetime import date
from pathlib import Path

import dagster as dg

from loyalty_pipeline.defs.checks import (
    check_results,
    check_specs,
    duplicate_check,
    rejected_rows_check,
)
from loyalty_pipeline.defs.dated_files import refuse_empty_files
from loyalty_pipeline.defs.errors import SourceError
from loyalty_pipeline.defs.exports import UNSAFE_KEY
from loyalty_pipeline.defs.metadata import OWNERS, WAREHOUSE_POOL, preview, rejection_metadata, table_metadata
from loyalty_pipeline.defs.resources import EventSources, RulesResource, Warehouse
from loyalty_pipeline.defs.stores import LocalStore, read_version, safe_key
from loyalty_pipeline.domain.ingest.lines import load_csv
from loyalty_pipeline.domain.ingest.quarantine import quarantine
from loyalty_pipeline.lib import touched
from loyalty_pipeline.lib.warehouse import REJECTED_DDL, count, insert_rows, transaction

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
        return {key: read_version(store.root / key) for key in keys}
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
        refuse_empty_files(copies, held, "raw.customers")
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
            quarantine(
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
                **rejection_metadata(conn, source),
            },
            check_results=check_results(CUSTOMERS_KEY, CUSTOMERS_CHECKS, conn),
        )
