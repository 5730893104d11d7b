"""Customer 360's asset keys and checks: profiles against the totals and the ledger, recommendations of a sample of
people, the serving store against the warehouse."""

import dagster as dg

from loyalty_pipeline.defs.checks import PEOPLE, UPDATED, check, duplicate_check, is_updated
from loyalty_pipeline.domain.customer import recommend
from loyalty_pipeline.domain.identity.identity import purchases_now
from loyalty_pipeline.lib.warehouse import count, rows_differing
from loyalty_pipeline.serve import audit
from loyalty_pipeline.serve.serving import serving_path


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
