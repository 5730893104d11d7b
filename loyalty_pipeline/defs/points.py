"""The point ledger (docs/decisions.md, Point ledger): insert, never update; every change a row; balances are sums."""

from datetime import timedelta

import dagster as dg
import duckdb

from loyalty_pipeline.defs.automation.partitions import DECLARED, window_days
from loyalty_pipeline.defs.checks import PEOPLE, UPDATED, check_results, check_specs
from loyalty_pipeline.defs.ingest import raw_topics
from loyalty_pipeline.defs.loyalty import enriched_purchases
from loyalty_pipeline.defs.loyalty_checks import TIER_STATUS_KEY
from loyalty_pipeline.defs.metadata import (
    OWNERS,
    PORTABLE_KINDS,
    WAREHOUSE_POOL,
    bar_table,
    partition_metadata,
    preview,
    revision_of,
    table_metadata,
)
from loyalty_pipeline.defs.points_checks import BALANCES_CHECKS, BALANCES_KEY, LEDGER_CHECKS, LEDGER_KEY
from loyalty_pipeline.defs.resources import RulesResource, Warehouse
from loyalty_pipeline.domain.identity import identity
from loyalty_pipeline.domain.ingest.kafka import TOPICS, table_ddl
from loyalty_pipeline.domain.journey import journeys
from loyalty_pipeline.domain.loyalty import tiers
from loyalty_pipeline.domain.points import balances, ledger
from loyalty_pipeline.lib import touched
from loyalty_pipeline.lib.chain import open_window
from loyalty_pipeline.lib.warehouse import REJECTED_DDL, SOURCE_FILES_DDL, count


@dg.asset(
    key=LEDGER_KEY,
    check_specs=check_specs(LEDGER_KEY, LEDGER_CHECKS),
    group_name="points",
    owners=OWNERS,
    kinds=PORTABLE_KINDS,
    partitions_def=DECLARED,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
    deps=[
        enriched_purchases,
        TIER_STATUS_KEY,  # and the tier history it follows: earn multipliers
        raw_topics["redemptions"],
        raw_topics["users"],
        raw_topics["events"],
        dg.AssetDep(
            LEDGER_KEY,
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
            ),
        ),
    ],
    description="Append-only point ledger: earn lots, uses (FIFO by expiry), expiries and clawbacks of returned "
    "purchases; day D builds on the end of D-1.",
)
def point_transactions(
    context: dg.AssetExecutionContext, warehouse: Warehouse, rules: RulesResource
) -> dg.MaterializeResult:
    first, end = window_days(context)
    refused = steps = 0
    with warehouse.get_connection(portable=True) as conn:
        conn.execute(
            ledger.DDL
            + REJECTED_DDL
            + SOURCE_FILES_DDL
            + journeys.DDL
            + identity.DDL
            + tiers.DDL
            + "".join(table_ddl(TOPICS[topic]) for topic in ("events", "users", "user_activity"))  # campaign criteria
        )
        window = open_window(
            conn, "points.ledger_days", "point ledger", "ledger", first, end, ledger.first_event_before(conn, first)
        )
        # The balances of the people whose rows these days replace change, and of days a killed run built but did
        # not log; each day built logs its own people once written (the ledger's writes are ledger.py's).
        through = touched.logged_through(conn, "ledger")
        conn.execute(
            touched.log_sql(
                "SELECT user_id AS person FROM points.point_transactions WHERE day >= $day", "ledger", touched.NEXT_SEQ
            ),
            {"day": min(first, through + timedelta(days=1)) if through else first - timedelta(days=1)},
        )
        # Old rows stay until each day replaces them (the revisions compare them). Journeys judged these days on
        # the old balances: they are marked unbuilt from here, for the same run or the next plan to rebuild.
        window.begin(conn, drop_from_first=("DELETE FROM journey.journey_days WHERE day >= $1",))
        revision = revision_of(context)
        for day in window.days:  # in order: each day starts from the state the previous one left
            counts = ledger.build_day(conn, window, day, rules.rules, revision)
            conn.execute(touched.log_sql(balances.LEDGER_DAY_PEOPLE, "ledger", touched.NEXT_SEQ), {"day": day})
            touched.set_logged_through(conn, "ledger", day)
            refused += counts["refused"]
            steps = max(steps, counts["steps"])
        window_rows = "SELECT * EXCLUDE (day) FROM points.point_transactions WHERE day >= $1 AND day < $2"
        flows = conn.execute(
            "SELECT day, kind, sum(points) FROM points.point_transactions WHERE day >= $1 AND day < $2 GROUP BY ALL ORDER BY ALL",
            [first, end],
        ).fetchall()
        return dg.MaterializeResult(
            metadata={
                **table_metadata(conn, "points.point_transactions"),
                **partition_metadata(conn, "points.point_transactions", "day", first, end),
                "refused_redemptions": refused,
                **revision_metadata(conn, revision["run_id"]),
                "max_events_per_customer_day": steps,
                "flows_per_day": dg.MetadataValue.md(
                    bar_table(("day and kind", "points"), [(f"{day} {kind}", points) for day, kind, points in flows])
                ),
                "preview": preview(conn, window_rows + " ORDER BY occurred_at, txn_id", [first, end], limit=20),
            },
            check_results=check_results(LEDGER_KEY, LEDGER_CHECKS, conn, rules, (first, end)),
        )


def revision_metadata(conn: duckdb.DuckDBPyConnection, run_id: str) -> dict:
    """What this run revised in days built before: rows changed, and the customers whose balance moved."""
    moves = conn.execute(
        """SELECT user_id, sum(balance_change)::BIGINT AS moved FROM (
               SELECT DISTINCT day, user_id, balance_change FROM points.ledger_revisions WHERE run_id = $1)
           GROUP BY ALL HAVING moved <> 0 ORDER BY abs(moved) DESC, user_id""",
        [run_id],
    ).fetchall()
    return {
        "revised_rows": count(conn, "SELECT 1 FROM points.ledger_revisions WHERE run_id = $1", [run_id]),
        "balances_moved": len(moves),
        "balance_changes": dg.MetadataValue.md(bar_table(("customer", "points"), moves[:20]) if moves else "_none_"),
    }


@dg.asset(
    key=BALANCES_KEY,
    check_specs=check_specs(BALANCES_KEY, BALANCES_CHECKS),
    group_name="points",
    owners=OWNERS,
    kinds=PORTABLE_KINDS,
    pool=WAREHOUSE_POOL,
    deps=[point_transactions],
    description="Point balance per customer at the end of the last ledger day (available + pending - debt), with the "
    "next expiry and its points.",
)
def point_balances(
    context: dg.AssetExecutionContext, warehouse: Warehouse, rules: RulesResource
) -> dg.MaterializeResult:
    rebuild = context.run.tags.get(touched.REBUILD_TAG) == "true"
    with warehouse.get_connection(portable=True) as conn:
        conn.execute(ledger.DDL + identity.DDL)
        update = touched.start(
            conn,
            "points.point_balances",
            balances.SOURCES,
            touched.rules_hash(balances.balances_sql(), balances.balances_sql(PEOPLE)),
            rebuild,
        )
        touched.refresh(conn, "points.point_balances", lambda people: balances.balances_sql(people or ""), {}, update)
        return dg.MaterializeResult(
            metadata={
                "update": "rebuilt whole" if update.whole else "incremental",
                "people_updated": count(conn, "SELECT 1 FROM points.point_balances" if update.whole else PEOPLE),
                **table_metadata(conn, "points.point_balances"),
                "points_outstanding": int(
                    conn.execute("SELECT coalesce(sum(balance), 0) FROM points.point_balances").fetchall()[0][0]
                ),
                "preview": preview(
                    conn, "SELECT * FROM points.point_balances ORDER BY balance DESC, user_id", limit=20
                ),
            },
            check_results=check_results(BALANCES_KEY, BALANCES_CHECKS, conn, rules, None if update.whole else UPDATED),
        )


points_assets = [point_transactions, point_balances]
