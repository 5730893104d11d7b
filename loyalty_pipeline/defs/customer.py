"""Customer 360 (docs/decisions.md, Customer 360): one profile per known customer, co-purchase recommendations, and
the serving copy that `loyalty-pipeline profile` reads while the warehouse is being written."""

from pathlib import Path

import dagster as dg

from loyalty_pipeline.defs.checks import (
    PEOPLE,
    UPDATED,
    check,
    check_results,
    check_specs,
    duplicate_check,
    failed_blocking,
    is_updated,
)
from loyalty_pipeline.defs.customers import customers
from loyalty_pipeline.defs.identity import id_graph
from loyalty_pipeline.defs.ingest import raw_topics
from loyalty_pipeline.defs.journey_checks import ACTIVATIONS_KEY
from loyalty_pipeline.defs.loyalty import enriched_purchases
from loyalty_pipeline.defs.loyalty_checks import CAFFEINE_KEY, PROMOTIONS_KEY, SALES_TOTALS_KEY
from loyalty_pipeline.defs.metadata import OWNERS, PORTABLE_KINDS, WAREHOUSE_POOL, preview, table_metadata
from loyalty_pipeline.defs.points import point_balances
from loyalty_pipeline.defs.resources import RulesResource, Warehouse, WarehouseError
from loyalty_pipeline.domain.customer import identifiers, recommend
from loyalty_pipeline.domain.customer.profiles import PROFILE_360_VIEW, PROFILE_SOURCES, profile_sql, totals_from_start
from loyalty_pipeline.domain.identity.identity import purchases_now
from loyalty_pipeline.domain.journey import journeys
from loyalty_pipeline.domain.loyalty.rules_sql import load_tiers
from loyalty_pipeline.lib import touched
from loyalty_pipeline.lib.warehouse import count, rows_differing
from loyalty_pipeline.serve import audit, publish
from loyalty_pipeline.serve.serving import serving_path

# The profile is as of the end of the last day materialized (the ledger records every day it was built for,
# events or not), the same instant as the point balances.
LAST_DAY = "SELECT max(day) FROM points.ledger_days"


@check("Spend, tier and points agree with loyalty.sales_totals and the point ledger; every buyer has a profile.")
def profiles_agree_with_totals_and_ledger(conn, rules, days) -> tuple[bool, dict]:
    # after an update, the people it wrote (the others' rows did not change); else everyone
    wrong = count(
        conn,
        f"""SELECT 1 FROM (SELECT * FROM customer.profiles WHERE {is_updated("user_id", days)}) AS p
           FULL JOIN (SELECT * FROM loyalty.sales_totals WHERE {is_updated("user_id", days)}) AS s USING (user_id)
           LEFT JOIN points.point_balances AS b USING (user_id)
           WHERE p.user_id IS NULL
              OR (s.user_id IS NOT NULL AND (p.total_spend <> s.total OR p.reward_level <> s.reward_level))
              OR p.points_balance <> coalesce(b.balance, 0)""",
    )
    return wrong == 0, {"customers_wrong": wrong}


@check(
    "Purchases whose key resolves to no account (warning: a guest, or a key no identity rule links).",
    blocking=False,
)
def purchases_by_known_users(conn, rules, days) -> tuple[bool, dict]:
    # after an update, the purchases of the people it wrote (the others' did not change) who are no account: those
    # people first, so that only their purchases are read and only their ids are looked up
    accounts = "SELECT id_value FROM identity.id_graph WHERE id_type = 'user_id'"
    if days == UPDATED:
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE unknown_people AS
                SELECT person FROM ({PEOPLE}) AS updated WHERE person NOT IN ({accounts} AND id_value IN ({PEOPLE}))"""
        )
        purchases = purchases_now("SELECT person FROM unknown_people")
    else:
        purchases = f"SELECT * FROM ({purchases_now()}) AS purchase WHERE user_id NOT IN ({accounts})"
    unknown = conn.execute(
        f"SELECT customer_key, count(*) FROM ({purchases}) GROUP BY ALL ORDER BY 2 DESC, 1"
    ).fetchall()
    return not unknown, {
        "purchases_by_unknown_users": sum(n for _, n in unknown),
        "unknown_user_ids": ", ".join(user for user, _ in unknown[:20]),
    }


# The people whose recommendations the checks compute, a sample of those with interests drawn anew each run: a list
# costs its person's interests times the co-purchase counts behind them (~2 ms each after a year), so the sample is
# kept small enough that the checks do not grow the day with history.
CHECKED = """SELECT user_id AS person FROM customer.profiles WHERE len(activity_since_last_purchase) > 0
             ORDER BY hash(user_id, now()) LIMIT 100"""


@check("At most 5 per customer, ranked 1..n, never a product of interest (100 people with interests, drawn anew).")
def recommendations_are_well_formed(conn, rules, days) -> tuple[bool, dict]:
    wrong = count(
        conn,
        """SELECT 1 FROM rec_checked AS r JOIN customer.profile_360 AS p USING (user_id)
           WHERE r.rank NOT BETWEEN 1 AND 5 OR list_contains(p.activity_since_last_purchase, r.product_id)""",
    )
    return wrong == 0, {"bad_rows": wrong}


@check("No two rows share (user_id, rank) (the same 100 people).")
def unique_user_id_rank(conn, rules, days) -> tuple[bool, dict]:
    duplicated = count(conn, "SELECT user_id, rank FROM rec_checked GROUP BY ALL HAVING count(*) > 1")
    return duplicated == 0, {"duplicated_keys": duplicated}


@check("No two rows share (user_id, product_id) (the same 100 people).")
def unique_user_id_product_id(conn, rules, days) -> tuple[bool, dict]:
    duplicated = count(conn, "SELECT user_id, product_id FROM rec_checked GROUP BY ALL HAVING count(*) > 1")
    return duplicated == 0, {"duplicated_keys": duplicated}


@check(
    "The baskets recommendations count of the same 100 people equal their baskets rebuilt from their purchases "
    "(warning only): an update that missed someone.",
    blocking=False,
)
def baskets_match_purchases(conn, rules, days) -> tuple[bool, dict]:
    people = "SELECT person FROM rec_checked_people"
    wrong = rows_differing(
        conn,
        f"SELECT order_id, user_id, items FROM customer.rec_baskets WHERE user_id IN ({people})",
        recommend.baskets_sql(people),
    )
    return wrong == 0, {"rows_differing": wrong}


@check(
    "The serving store holds what the warehouse holds: as many cards (one per profile), identifiers and names as "
    "the warehouse, as of the same day; and the cards, identifiers and names of up to 1,000 people just published and "
    "1,000 people drawn anew each publish from everyone equal, byte for byte, those rebuilt from the warehouse."
)
def serving_copy_is_complete(conn, rules, days) -> tuple[bool, dict]:
    database = conn.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
    found = audit.differences(conn, serving_path(database[0][0]), rules.rules)
    return found["tables_differing"] == "none", found


PROFILE_KEY = dg.AssetKey(["customer", "profile_360"])
RECOMMENDATIONS_KEY = dg.AssetKey(["customer", "recommendations"])
SERVING_KEY = dg.AssetKey(["customer", "serving_snapshot"])
PROFILE_CHECKS = [
    profiles_agree_with_totals_and_ledger,
    purchases_by_known_users,
    duplicate_check(PROFILE_KEY, ["user_id"]),
]
RECOMMENDATIONS_CHECKS = [
    recommendations_are_well_formed,
    unique_user_id_rank,
    unique_user_id_product_id,
    baskets_match_purchases,
]
SERVING_CHECKS = [serving_copy_is_complete]


PROFILE_SPEC = dg.AssetSpec(
    PROFILE_KEY,
    group_name="customer",
    owners=OWNERS,
    kinds=PORTABLE_KINDS,
    deps=[
        raw_topics["users"],
        raw_topics["user_activity"],
        customers,
        enriched_purchases,
        SALES_TOTALS_KEY,
        PROMOTIONS_KEY,
        point_balances,
        id_graph,
    ],
    description="One row per known person: identity, spend, tier, points, products bought, activity since the last "
    "purchase; and customer.identifiers, the person each known identifier finds.",
)


def _profile_360(conn, rules: RulesResource, rebuild: bool) -> dg.MaterializeResult:
    """Profiles of the people touched since the last update (whole when there is none, the SQL or tiers changed,
    or on a rebuild), and the identifiers they hold, each in one transaction with its mark."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS customer")
    identifiers.update(conn, rebuild)  # first: the profiles' update and checks then use their own touched_people
    as_of = conn.execute(LAST_DAY).fetchall()[0][0]
    load_tiers(conn, rules.rules)
    tiers = [[tier.name, tier.above] for tier in rules.rules.tiers] + [rules.rules.default_tier]
    update = touched.start(
        conn,
        "customer.profiles",
        PROFILE_SOURCES,
        touched.rules_hash(profile_sql(), profile_sql(PEOPLE), tiers),
        rebuild,
    )
    people = None if update.whole else PEOPLE
    kept = people is not None and journeys.kept_totals_of(conn, as_of, people)
    if not kept:  # a rebuild, or no current copy: summed from the start
        totals_from_start(conn, as_of, people)
    conn.execute("CREATE TABLE IF NOT EXISTS customer.profile_as_of (as_of DATE)")
    touched.refresh(
        conn,
        "customer.profiles",
        profile_sql,
        {"as_of": as_of},
        update,
        also=[
            ("DELETE FROM customer.profile_as_of", {}),
            ("INSERT INTO customer.profile_as_of VALUES ($as_of)", {"as_of": as_of}),
        ],
    )
    conn.execute(PROFILE_360_VIEW)
    return dg.MaterializeResult(
        asset_key=PROFILE_KEY,
        metadata={
            **table_metadata(conn, "customer.profile_360"),
            "as_of": str(as_of),
            "update": "rebuilt whole" if update.whole else "incremental",
            "people_updated": count(conn, "SELECT 1 FROM customer.profiles" if update.whole else PEOPLE),
            "totals": "kept by the journeys" if kept else "summed from the start",
            "preview": preview(conn, "SELECT * FROM customer.profile_360 ORDER BY total_spend DESC, user_id"),
        },
        check_results=check_results(PROFILE_KEY, PROFILE_CHECKS, conn, rules, None if update.whole else UPDATED),
    )


RECOMMENDATIONS_SPEC = dg.AssetSpec(
    RECOMMENDATIONS_KEY,
    group_name="customer",
    owners=OWNERS,
    kinds=PORTABLE_KINDS,
    deps=[PROFILE_KEY, enriched_purchases],
    description="Top 5 products per customer, bought in other customers' orders together with what they looked at since their last purchase.",
    skippable=True,  # not built when the profile fails a blocking check
)


def _recommendations(conn, applied: recommend.Applied) -> dg.MaterializeResult:
    """The view over the state `applied` brought up to date, and its checks on a sample."""
    recommend.create_view(conn)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE rec_checked_people AS {CHECKED}")
    checked = recommend.recommendations_sql("SELECT person FROM rec_checked_people")
    conn.execute(f"CREATE OR REPLACE TEMP TABLE rec_checked AS {checked}")
    return dg.MaterializeResult(
        asset_key=RECOMMENDATIONS_KEY,
        metadata={
            "dagster/table_name": "customer.recommendations",
            "update": "rebuilt whole" if applied.whole else "incremental",
            "baskets_changed": applied.baskets_changed,
            "baskets": count(conn, "SELECT 1 FROM customer.rec_baskets"),
            "co_purchase_counts": count(conn, "SELECT 1 FROM customer.rec_counts"),
            "preview": preview(conn, "SELECT * FROM rec_checked ORDER BY user_id, rank", limit=20),
        },
        check_results=check_results(RECOMMENDATIONS_KEY, RECOMMENDATIONS_CHECKS, conn),
    )


SERVING_SPEC = dg.AssetSpec(
    SERVING_KEY,
    group_name="customer",
    owners=OWNERS,
    kinds={"duckdb", "sqlite"},
    deps=[PROFILE_KEY, RECOMMENDATIONS_KEY, point_balances, CAFFEINE_KEY, ACTIVATIONS_KEY],
    description="The serving store (a SQLite file beside the warehouse): one card per customer (what the 360 app "
    "shows) and the identifiers and names lookups find. Each publish replaces the rows of the people the change log "
    "holds, in one transaction (whole on a rebuild, new rules or a store that cannot be read): lookups never block "
    "on a run and never see half of one.",
    skippable=True,  # not published when a table it copies fails a blocking check
)


def _serving_snapshot(conn, target: Path, rules: RulesResource, rebuild: bool) -> dg.MaterializeResult:
    if target.is_dir():
        raise WarehouseError(f"{target} is a folder, where the serving copy goes: remove or rename it")
    done = publish.publish(conn, target, rules.rules, rebuild)
    return dg.MaterializeResult(
        asset_key=SERVING_KEY,
        metadata={**done, "path": str(target), "bytes": target.stat().st_size},
        check_results=check_results(SERVING_KEY, SERVING_CHECKS, conn, rules),
    )


@dg.multi_asset(
    name="customer_360",
    specs=[PROFILE_SPEC, RECOMMENDATIONS_SPEC, SERVING_SPEC],
    check_specs=check_specs(PROFILE_KEY, PROFILE_CHECKS)
    + check_specs(RECOMMENDATIONS_KEY, RECOMMENDATIONS_CHECKS)
    + check_specs(SERVING_KEY, SERVING_CHECKS),
    can_subset=True,
    pool=WAREHOUSE_POOL,
)
def customer_360(context: dg.AssetExecutionContext, warehouse: Warehouse, rules: RulesResource):
    """Profiles, then the state recommendations are computed from (on the chosen engine), then the serving copy (a
    SQLite file, read from DuckDB); a table failing a blocking check stops the step there (it fails after reporting
    it, as a blocking check does), so nothing wrong is served."""
    rebuild = context.run.tags.get(touched.REBUILD_TAG) == "true"
    with warehouse.get_connection() as conn:  # the 360 was a table before it was a view of customer.profiles
        if count(conn, "FROM duckdb_tables() WHERE schema_name = 'customer' AND table_name = 'profile_360'"):
            conn.execute("DROP TABLE customer.profile_360")
    applied = None
    with warehouse.get_connection(portable=True) as conn:
        if PROFILE_KEY in context.selected_asset_keys:
            result = _profile_360(conn, rules, rebuild)
            yield result
            if failed_blocking(result):
                return
        if RECOMMENDATIONS_KEY in context.selected_asset_keys:
            applied = recommend.update(conn, rebuild)
    with warehouse.get_connection() as conn:  # the view is DuckDB's on either engine
        if applied:
            result = _recommendations(conn, applied)
            yield result
            if failed_blocking(result):
                return
        if SERVING_KEY in context.selected_asset_keys:
            yield _serving_snapshot(conn, warehouse.serving_path(), rules, publish.rebuilding(context.run.tags))


customer_assets = [customer_360]
