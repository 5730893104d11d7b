"""The customer profile as of the end of a day, in SQL: the columns journeys' criteria read, and the 360 view.

A profile is made of per-customer running totals of the events up to the day (`TOTALS`). Journeys carry them
from day to day (`add_day_to_totals` replaces the rows of the day's customers only) instead of re-reading history, and
`BEHAVIOUR` turns totals into the columns journey criteria read (README, Journeys) as of `$as_of`.
"""

from datetime import date

import duckdb

from loyalty_pipeline.domain.identity.identity import ids_as_of, linked_ids
from loyalty_pipeline.domain.loyalty.rules_sql import tier_as_of
from loyalty_pipeline.lib.sql import load

_SQL = load(__file__)  # profiles.sql
IDS_IN_RANGE = _SQL["ids_in_range"]
PROFILE_360_VIEW = _SQL["profile_360_view"]

# What a profile reads (touched.SOURCES): its events, returns and ledger rows, the id graph, and the users and
# customers records. A person logged by none of them has the same profile row.
PROFILE_SOURCES = ["purchases", "identity", "tiers", "ledger", "activity", "users", "customers"]


# The buyers of the purchases returned on $last (a return's day is its returned_at's): the day's returns, not a scan of
# every purchase's returned_at.
_RETURNED_ON_LAST = "SELECT user_id FROM loyalty.returns WHERE day = $last"

# The people whose totals cannot move on by adding the day $last: those merged on it, and those who returned a
# purchase on it (a return takes back a purchase of an earlier day).
RECOMPUTED = f"""
SELECT into_id AS user_id FROM identity.merges WHERE day = $last
UNION SELECT merged_id FROM identity.merges WHERE day = $last
UNION SELECT coalesce(ids.customer_id, returned.user_id) FROM ({_RETURNED_ON_LAST}) AS returned
      LEFT JOIN ({ids_as_of(_RETURNED_ON_LAST)}) AS ids ON ids.id_value = returned.user_id
"""


def _of_people(table: str, *columns: str) -> str:
    """`user_id` (the person) and `columns` of the rows of `table` (a constant name) in days [$first, $last]; with
    $everyone false, only the rows of the people RECOMPUTED on $last."""
    selected = ", ".join(["coalesce(people.customer_id, t.user_id) AS user_id", *(f"t.{c}" for c in columns)])
    return f"""SELECT {selected} FROM {table} AS t
               LEFT JOIN people ON people.id_value = t.user_id
               WHERE t.day BETWEEN $first AND $last
                 AND ($everyone OR coalesce(people.customer_id, t.user_id) IN (SELECT user_id FROM recomputed))"""


def totals_sql(ids: str = IDS_IN_RANGE, recomputed: str = RECOMPUTED) -> str:
    """Running totals of the events in days [$first, $last], one row per person seen in any of them; `known` says
    the id is a customer (a user message or a purchase; the customers export is joined in BEHAVIOUR) rather than
    only clicks or points. `ids` (a query of one column) holds every id to map to its person; with $everyone
    false, only the people of `recomputed` (a query of `user_id`) are summed."""
    return f"""
WITH people AS ({ids_as_of(ids)}), recomputed AS ({recomputed}), spend AS (
    SELECT user_id,
           sum(price) AS total_spend, count(*) AS purchase_count, count(price) AS priced_count,
           min(purchased_at) AS first_purchase_at, max(purchased_at) AS last_purchase_at,
           list_sort(list_distinct(list(product_id))) AS products_purchased
    FROM ({_of_people("loyalty.enriched_purchases", "price", "purchased_at", "product_id", "returned_at")})
    WHERE returned_at IS NULL OR returned_at >= $last + 1  -- net: returned by the end of $last, it no longer counts
    GROUP BY user_id
), points AS (
    SELECT user_id, sum(points)::BIGINT AS points_balance FROM ({_of_people("points.point_transactions", "points")})
    GROUP BY user_id
), activity AS (
    SELECT clicks.user_id, list_sort(list_distinct(list(clicks.product_id))) AS activity
    FROM ({_of_people("raw.user_activity", "product_id", "event_type", "tombstone", "event_ts")}) AS clicks
         LEFT JOIN spend USING (user_id)
    WHERE clicks.event_type IN ('view', 'add_to_cart') AND NOT clicks.tombstone
      AND (spend.last_purchase_at IS NULL OR clicks.event_ts > spend.last_purchase_at)
    GROUP BY clicks.user_id
), known AS (
    SELECT user_id FROM ({_of_people("raw.users")})
    UNION SELECT user_id FROM ({_of_people("loyalty.enriched_purchases")})  -- a buyer stays known after a return
)
SELECT user_id, known.user_id IS NOT NULL AS known,
       coalesce(spend.total_spend, 0)::DECIMAL(18,2) AS total_spend, coalesce(spend.purchase_count, 0) AS purchase_count,
       coalesce(spend.priced_count, 0) AS priced_count, spend.first_purchase_at, spend.last_purchase_at,
       coalesce(spend.products_purchased, []::VARCHAR[]) AS products_purchased,
       coalesce(points.points_balance, 0) AS points_balance, coalesce(activity.activity, []::VARCHAR[]) AS activity
FROM (SELECT user_id FROM known UNION SELECT user_id FROM points UNION SELECT user_id FROM activity) AS everyone
LEFT JOIN known USING (user_id)
LEFT JOIN spend USING (user_id)
LEFT JOIN points USING (user_id)
LEFT JOIN activity USING (user_id)
"""


TOTALS = totals_sql()


def totals_from_start(conn: duckdb.DuckDBPyConnection, as_of: date, people: str | None = None) -> None:
    """Temp table `profile_totals`: the totals of every event up to the end of `as_of`; of the people of `people`
    (a query of one column `person`, constant SQL) only, read through the identifiers ever linked to them."""
    sql = TOTALS if people is None else totals_sql(linked_ids(people), f"SELECT person AS user_id FROM ({people})")
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE profile_totals AS {sql}",
        {"first": date.min, "last": as_of, "as_of": as_of, "everyone": people is None},
    )


def add_day_to_totals(conn: duckdb.DuckDBPyConnection, day: date) -> None:
    """Moves `profile_totals` from the end of the day before `day` to the end of `day`: the day's customers' totals
    up to the day before plus the day's (sums add, lists unite, a purchase on the day restarts the activity since
    the last purchase) replace their rows. People merged on the day, or who returned a purchase on it, are summed
    again from the start (RECOMPUTED)."""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE recomputed_people AS {RECOMPUTED}", {"last": day, "as_of": day})
    if conn.execute("SELECT count(*) FROM recomputed_people").fetchall()[0][0]:
        conn.execute("DELETE FROM profile_totals WHERE user_id IN (SELECT user_id FROM recomputed_people)")
        conn.execute(
            f"INSERT INTO profile_totals {TOTALS}", {"first": date.min, "last": day, "as_of": day, "everyone": False}
        )
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE profile_day AS
            SELECT user_id,
                   coalesce(before.known, false) OR day.known AS known,
                   (coalesce(before.total_spend, 0) + day.total_spend)::DECIMAL(18,2) AS total_spend,
                   coalesce(before.purchase_count, 0) + day.purchase_count AS purchase_count,
                   coalesce(before.priced_count, 0) + day.priced_count AS priced_count,
                   coalesce(before.first_purchase_at, day.first_purchase_at) AS first_purchase_at,
                   coalesce(day.last_purchase_at, before.last_purchase_at) AS last_purchase_at,
                   list_sort(list_distinct(list_concat(before.products_purchased, day.products_purchased)))
                       AS products_purchased,
                   coalesce(before.points_balance, 0) + day.points_balance AS points_balance,
                   CASE WHEN day.last_purchase_at IS NOT NULL THEN day.activity
                        ELSE list_sort(list_distinct(list_concat(before.activity, day.activity))) END AS activity
            FROM ({TOTALS}) AS day
            LEFT JOIN profile_totals AS before USING (user_id)
            WHERE user_id NOT IN (SELECT user_id FROM recomputed_people)""",
        {"first": day, "last": day, "as_of": day, "everyone": True},
    )
    conn.execute("DELETE FROM profile_totals WHERE user_id IN (SELECT user_id FROM profile_day)")
    conn.execute("INSERT INTO profile_totals SELECT * FROM profile_day")


def behaviour_sql(customers: str = "raw.customers") -> str:
    """The behaviour columns journey criteria read for every known customer (in the totals or the customers export
    `customers`, a table or subquery), from `profile_totals` as of the end of `$as_of`; the tier of each distinct
    the tier held then by `rules_sql.tier_as_of` (load_tiers)."""
    return f"""
WITH behaviour_rows AS (
    SELECT user_id, coalesce(total_spend, 0)::DECIMAL(18,2) AS total_spend,
           coalesce(purchase_count, 0) AS purchase_count,
           -- DuckDB's DOUBLE quotient rounded to cents as DuckDB rounds it, written so Spark computes the same
           CASE WHEN priced_count > 0
                THEN (CAST(round(CAST(total_spend AS DOUBLE) / priced_count * 100) AS BIGINT) * 0.01)::DECIMAL(18,2)
           END AS avg_purchase_price,
           first_purchase_at, last_purchase_at,
           date_diff('day', last_purchase_at::DATE, $as_of::DATE) AS days_since_last_purchase,
           coalesce(points_balance, 0) AS points_balance,
           coalesce(products_purchased, []::VARCHAR[]) AS products_purchased,
           coalesce(activity, []::VARCHAR[]) AS activity_since_last_purchase
    FROM profile_totals
    FULL JOIN (SELECT DISTINCT coalesce(ids.customer_id, c.user_id) AS user_id, true AS exported
               FROM {customers} AS c LEFT JOIN ({ids_as_of(f"SELECT user_id FROM {customers}")}) AS ids
                    ON ids.id_value = c.user_id) AS export
         USING (user_id)
    WHERE known OR exported
)
SELECT b.user_id, b.total_spend, b.purchase_count, b.avg_purchase_price, b.first_purchase_at, b.last_purchase_at,
       b.days_since_last_purchase, b.reward_level, b.points_balance, b.products_purchased,
       b.activity_since_last_purchase
FROM ({tier_as_of("SELECT * FROM behaviour_rows")}) AS b
"""


BEHAVIOUR = behaviour_sql()


def identity_sql(users: str = "raw.users", customers: str = "raw.customers") -> str:
    """Identity: the latest Kafka users message wins over the CSV export, field by field; newest first in each. The
    accounts of one person (merged) show the newest of them."""
    return f"""
WITH kafka AS (
    SELECT coalesce(ids.customer_id, u.user_id) AS user_id, name, email, tombstone AS account_closed
    FROM {users} AS u LEFT JOIN ({ids_as_of(f"SELECT user_id FROM {users}")}) AS ids ON ids.id_value = u.user_id
    WHERE day <= $as_of
    QUALIFY row_number() OVER (PARTITION BY coalesce(ids.customer_id, u.user_id)
                               ORDER BY event_ts DESC, kafka_offset DESC) = 1
), export AS (
    SELECT coalesce(ids.customer_id, c.user_id) AS user_id, name, email, signup_date
    FROM {customers} AS c LEFT JOIN ({ids_as_of(f"SELECT user_id FROM {customers}")}) AS ids
         ON ids.id_value = c.user_id
    QUALIFY row_number() OVER (PARTITION BY coalesce(ids.customer_id, c.user_id) ORDER BY s3_key DESC, row_no DESC) = 1
)
SELECT user_id,
       coalesce(kafka.name, export.name) AS name,
       coalesce(kafka.email, export.email) AS email,
       export.signup_date,
       coalesce(kafka.account_closed, false) AS account_closed
FROM kafka FULL JOIN export USING (user_id)
"""


def profile_sql(people: str | None = None) -> str:
    """The stored profiles (`customer.profiles`, as of `$as_of`, from `profile_totals`): everyone's, or only those of
    `people` (a query of one column `person`, constant SQL), reading only the rows of ids linked to them. Values
    that change with the calendar alone are not stored: the view `customer.profile_360` computes them when read."""
    customers, users, mine = "raw.customers", "raw.users", ""
    if people is not None:
        linked = linked_ids(people)
        customers = f"(SELECT * FROM raw.customers WHERE user_id IN ({linked}))"
        users = f"(SELECT * FROM raw.users WHERE user_id IN ({linked}))"
        mine = f"WHERE behaviour.user_id IN (SELECT person FROM ({people}))"
    return f"""
SELECT behaviour.user_id, identity.name, identity.email, behaviour.total_spend, behaviour.purchase_count,
       behaviour.avg_purchase_price, behaviour.first_purchase_at, behaviour.last_purchase_at,
       behaviour.reward_level, behaviour.points_balance,
       behaviour.products_purchased, behaviour.activity_since_last_purchase,
       coalesce(offers.promotions, []::VARCHAR[]) AS promotions,
       identity.signup_date, coalesce(identity.account_closed, false) AS account_closed
FROM ({behaviour_sql(customers)}) AS behaviour
LEFT JOIN ({identity_sql(users, customers)}) AS identity USING (user_id)
LEFT JOIN (SELECT user_id, list_sort(list(promotion_name)) AS promotions FROM loyalty.promotions GROUP BY user_id) AS offers
       USING (user_id)
{mine}
"""
