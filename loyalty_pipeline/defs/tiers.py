"""Tier history and status (docs/decisions.md, Tier periods): the members touched since the last update, and those a
period end or grace end has passed for, recomputed from their purchases in one transaction with the change log."""

from datetime import date, datetime, time, timedelta

import dagster as dg
import duckdb

from loyalty_pipeline.defs.checks import PEOPLE, UPDATED, check, check_results, check_specs, is_updated
from loyalty_pipeline.defs.identity import id_graph
from loyalty_pipeline.defs.loyalty import enriched_purchases
from loyalty_pipeline.defs.loyalty_checks import TIER_HISTORY_KEY, TIER_STATUS_KEY
from loyalty_pipeline.defs.metadata import OWNERS, PORTABLE_KINDS, WAREHOUSE_POOL, bar_table, preview, table_metadata
from loyalty_pipeline.defs.resources import RulesResource, Warehouse
from loyalty_pipeline.domain.identity import identity
from loyalty_pipeline.domain.identity.identity import purchases_now
from loyalty_pipeline.domain.loyalty import loyalty, returns, tier_reference, tiers
from loyalty_pipeline.lib import touched
from loyalty_pipeline.lib.warehouse import count

SOURCES = ["purchases", "identity"]


def last_day(conn: duckdb.DuckDBPyConnection, context: dg.AssetExecutionContext) -> date | None:
    """The last day the tiers are evaluated through: the run's last partition, or the last day with purchases."""
    tags = context.run.tags
    run_day = tags.get("dagster/asset_partition_range_end") or tags.get("dagster/partition")
    loaded = conn.execute("SELECT max(day) FROM loyalty.enriched_purchases").fetchall()[0][0]
    days = [day for day in (loaded, run_day and date.fromisoformat(run_day)) if day]
    return max(days) if days else None


@check("Each member has at most one current tier, and a member's tiers never overlap.")
def one_tier_at_a_time(conn, rules, days) -> tuple[bool, dict]:
    overlapping = count(
        conn,
        f"""SELECT 1 FROM (SELECT *, lead(valid_from) OVER (PARTITION BY user_id ORDER BY valid_from) AS next_from,
                                  count(*) FILTER (WHERE valid_until IS NULL) OVER (PARTITION BY user_id) AS open_rows
                           FROM loyalty.tier_history WHERE {is_updated("user_id", days)})
            WHERE open_rows > 1 OR valid_until IS DISTINCT FROM next_from""",
    )
    return overlapping == 0, {"members_wrong": overlapping}


@check("Each member's status holds the tier of their current history row (the default tier without one).")
def status_follows_history(conn, rules, days) -> tuple[bool, dict]:
    tiers.load_levels(conn, rules.rules)
    wrong = count(
        conn,
        f"""SELECT 1 FROM loyalty.tier_status AS s
            LEFT JOIN loyalty.tier_history AS h ON h.user_id = s.user_id AND h.valid_until IS NULL
            WHERE s.tier <> coalesce(h.tier, (SELECT name FROM tier_levels WHERE rank = 0))
              AND {is_updated("s.user_id", days)}""",
    )
    return wrong == 0, {"members_wrong": wrong}


@check("A sampled member's tier history is what the plain replay of the tier rules gives (tier_reference.py).")
def sampled_member_replays(conn, rules, days) -> tuple[bool, dict]:
    # a member updated by this step, another at each as_of: the same on a re-run
    sampled = conn.execute(
        f"""SELECT user_id, as_of FROM loyalty.tier_status CROSS JOIN loyalty.tier_status_as_of
            WHERE {is_updated("user_id", days)} ORDER BY md5(user_id || CAST(as_of AS VARCHAR)), user_id LIMIT 1"""
    ).fetchall()
    if not sampled:
        return True, {"user_id": "(no member updated)"}
    user, as_of = sampled[0]
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE sampled_purchases AS {purchases_now('SELECT $1 AS person', returned=True)}",
        [user],
    )
    purchases = conn.execute("SELECT purchase_id, purchased_at, price, returned_at FROM sampled_purchases").fetchall()
    expected = tier_reference.replay(rules.rules, purchases, as_of)
    actual = conn.execute(
        "SELECT tier, valid_from, reason, qualifying_value FROM loyalty.tier_history WHERE user_id = $1 ORDER BY valid_from",
        [user],
    ).fetchall()
    return expected == actual, {"user_id": user, "changes": len(actual), "expected_changes": len(expected)}


HISTORY_CHECKS = [one_tier_at_a_time, sampled_member_replays]
STATUS_CHECKS = [status_follows_history]


def _log_and_revise(update: touched.Update, old_as_of, as_of, run_id: str) -> list[tuple[str, dict]]:
    """Statements run with the rows: the tier changes before the last as_of that this update withdrew or added
    (a late purchase, a merge) kept in tier_revisions; the members whose rows changed logged for the tables that
    show tiers (everyone on a whole rebuild, else those whose tier time alone changed)."""
    mine = "true" if update.whole else "user_id IN (SELECT person FROM touched_people)"
    key = "user_id, tier, valid_from, reason, qualifying_value"
    new_rows = f"SELECT {key} FROM ({tiers.HISTORY})"
    old_rows = f"SELECT {key} FROM loyalty.tier_history WHERE {mine}"
    revise = f"""
        INSERT INTO loyalty.tier_revisions
        SELECT $run_id, now()::TIMESTAMP, change, {key} FROM (
            SELECT 'withdrawn' AS change, * FROM ({old_rows} EXCEPT ALL {new_rows})
            UNION ALL SELECT 'added', * FROM ({new_rows} EXCEPT ALL {old_rows}))
        WHERE valid_from < $old_as_of"""
    logged = "SELECT user_id AS person FROM tier_fold" if update.whole else "SELECT person FROM due_people"
    return [
        (revise, {"run_id": run_id, "old_as_of": old_as_of}),
        (f"DELETE FROM loyalty.tier_history WHERE {mine}", {}),
        (f"INSERT INTO loyalty.tier_history BY NAME {tiers.HISTORY}", {}),
        (touched.log_sql(logged, "tiers", touched.NEXT_SEQ), {}),
        ("DELETE FROM loyalty.tier_status_as_of", {}),
        ("INSERT INTO loyalty.tier_status_as_of VALUES ($as_of)", {"as_of": as_of}),
    ]


@dg.multi_asset(
    name="tier_tables",
    specs=[
        dg.AssetSpec(
            TIER_HISTORY_KEY,
            deps=[enriched_purchases, id_graph],
            description="One row per change of a member's tier (upgrade, period_end, grace_end, return), from and "
            "until, and the value that decided it (tiers: in loyalty.yaml).",
            group_name="loyalty",
            owners=OWNERS,
            kinds=PORTABLE_KINDS,
        ),
        dg.AssetSpec(
            TIER_STATUS_KEY,
            deps=[TIER_HISTORY_KEY],
            description="Each member's tier now: since when, when it is next evaluated, the period's value so far, "
            "what the next tier and keeping this one take.",
            group_name="loyalty",
            owners=OWNERS,
            kinds=PORTABLE_KINDS,
        ),
    ],
    check_specs=check_specs(TIER_HISTORY_KEY, HISTORY_CHECKS) + check_specs(TIER_STATUS_KEY, STATUS_CHECKS),
    pool=WAREHOUSE_POOL,
)
def tier_tables(context: dg.AssetExecutionContext, warehouse: Warehouse, rules: RulesResource):
    rebuild = context.run.tags.get(touched.REBUILD_TAG) == "true"
    with warehouse.get_connection(portable=True) as conn:
        conn.execute(loyalty.ENRICHED_DDL + identity.DDL + returns.DDL + tiers.DDL)
        day = last_day(conn, context)
        as_of = datetime.combine(day + timedelta(days=1), time()) if day else datetime(1970, 1, 1)
        policy = {**tiers.params(rules.rules, as_of), "as_of": None}
        levels = [tier.model_dump() for tier in rules.rules.tiers] + [rules.rules.default_tier]
        update = touched.start(
            conn, "loyalty.tier_status", SOURCES, touched.rules_hash(tiers.DDL, tiers.HISTORY, policy, levels), rebuild
        )
        old_as_of = conn.execute("SELECT max(as_of) FROM loyalty.tier_status_as_of").fetchall()[0][0]
        if not update.whole:
            conn.execute(f"CREATE OR REPLACE TEMP TABLE due_people AS {tiers.DUE}", {"as_of": as_of})
            conn.execute("INSERT INTO touched_people SELECT person FROM due_people")
        values = tiers.fold(conn, rules.rules, as_of, None if update.whole else PEOPLE)
        status = {key: values[key] for key in ("as_of", "unit", "months", "days")}
        touched.refresh(
            conn,
            "loyalty.tier_status",
            lambda people: tiers.STATUS,
            status,
            update,
            also=_log_and_revise(update, old_as_of, as_of, context.run_id),
        )
        members_updated = count(conn, "SELECT DISTINCT user_id FROM tier_fold")
        updated = None if update.whole else UPDATED  # what the checks look at
        yield dg.MaterializeResult(
            asset_key=TIER_HISTORY_KEY,
            metadata={
                **table_metadata(conn, "loyalty.tier_history"),
                "members_updated": members_updated,
                "preview": preview(
                    conn, "SELECT * FROM loyalty.tier_history ORDER BY valid_from DESC, user_id", limit=20
                ),
            },
            check_results=check_results(TIER_HISTORY_KEY, HISTORY_CHECKS, conn, rules, updated),
        )
        tiers_held = conn.execute(
            "SELECT tier, count(*) FROM loyalty.tier_status GROUP BY 1 ORDER BY 2 DESC, 1"
        ).fetchall()
        yield dg.MaterializeResult(
            asset_key=TIER_STATUS_KEY,
            metadata={
                **table_metadata(conn, "loyalty.tier_status"),
                "as_of": str(as_of),
                "update": "rebuilt whole" if update.whole else "incremental",
                "members_updated": members_updated,
                "tier_distribution": dg.MetadataValue.md(bar_table(("tier", "members"), tiers_held)),
                "preview": preview(
                    conn, "SELECT * FROM loyalty.tier_status ORDER BY tier_expires_at, user_id", limit=20
                ),
            },
            check_results=check_results(TIER_STATUS_KEY, STATUS_CHECKS, conn, rules, updated),
        )


tier_assets = [tier_tables]
