"""Co-purchase recommendations (SPEC §5.3), exact, without expanding customers x orders, updated by what changed.

score(u, c) = orders by other customers that contain c and at least one of u's products of interest S.
Joining every customer to every order holding one of their interests is billions of rows at 1M customers, so:

* customers share interest sets: score the distinct sets S once, then subtract each customer's own orders;
* for an order of at most SMALL_ORDER products, count co-occurrences N(T + c) = orders holding the itemset T and c
  (at most 2^SMALL_ORDER itemsets per order); then, by inclusion-exclusion over the itemsets T inside S,
  orders(S, c) = sum of (-1)^(|T|+1) N(T + c). Only itemsets some order holds are enumerated (level by level,
  like Apriori), so the work follows the data, not 2^|S|;
* the few larger orders are counted directly, set by set;
* sets are scored in batches, so each aggregation fits in memory;
* a customer's top 5 lies within the set's top 5 + k, k = candidates the customer's own orders lower, so only
  those ranks are joined back to customers.

An order is one customer's basket: (order_id, the person now). Products are their product_id, not numbers, so a
new product renumbers nothing, ties break by product_id, and the kept state equals a rebuild's.

The state is kept in the warehouse and updated by delta, so a run costs what changed, not the history:
customer.rec_baskets (every basket), customer.rec_large_baskets (those above SMALL_ORDER), customer.rec_counts
(N(T + c) of the small ones, unsigned) and customer.rec_interests (the interest sets the lists were computed from).
A run replaces the baskets of the people it touched (purchases, returns, merges), subtracts the counts of their old
baskets and adds the new ones'; then recomputes the lists of the people whose list can change: whose interests
changed, whose own baskets changed, or whose interest set holds a product of a basket that changed (the score of
(S, c) counts only baskets meeting S).
"""

from dataclasses import dataclass

from loyalty_pipeline import touched
from loyalty_pipeline.identity import purchases_now
from loyalty_pipeline.profiles import PROFILE_SOURCES, profile_sql
from loyalty_pipeline.warehouse import transaction

SMALL_ORDER = 6
TABLE = "customer.recommendations"
CONSUMER = TABLE
SOURCES = ["purchases", "identity"]  # what baskets read: purchases and returns, and who each belongs to now

DDL = """
CREATE SCHEMA IF NOT EXISTS customer;
CREATE TABLE IF NOT EXISTS customer.recommendations (
    user_id VARCHAR, product_id VARCHAR, score BIGINT, rank BIGINT
);
CREATE TABLE IF NOT EXISTS customer.rec_baskets (order_id VARCHAR, user_id VARCHAR, items VARCHAR[]);
CREATE TABLE IF NOT EXISTS customer.rec_large_baskets (order_id VARCHAR, user_id VARCHAR, items VARCHAR[]);
CREATE TABLE IF NOT EXISTS customer.rec_counts (itemset VARCHAR[], product_id VARCHAR, orders INTEGER);
CREATE TABLE IF NOT EXISTS customer.rec_interests (user_id VARCHAR, items VARCHAR[]);
"""
STATE = ["customer.rec_baskets", "customer.rec_large_baskets", "customer.rec_counts", "customer.rec_interests"]
TOUCHED = "SELECT person FROM touched_people"
RECOMPUTED = "SELECT user_id FROM rec_people"  # kept after an update: the people whose list it computed
# The people whose interests may have changed since the mark: those whose profile row may have.
INTEREST_PEOPLE = "SELECT person FROM rec_interest_people WHERE person IS NOT NULL"


def basket_statements(people: str | None) -> list[str]:
    """The baskets of `people` (all: None) replaced, and the counts moved by those that changed."""
    mine = f"WHERE user_id IN ({people})" if people else ""
    return [
        f"""CREATE OR REPLACE TEMP TABLE rec_new_baskets AS
            SELECT order_id, user_id, list_sort(list(DISTINCT product_id)) AS items
            FROM ({purchases_now(people or "")}) GROUP BY order_id, user_id""",
        f"CREATE OR REPLACE TEMP TABLE rec_old_baskets AS SELECT order_id, user_id, items FROM customer.rec_baskets {mine}",
        # a basket is a changed one when it is not kept as it was: removed (-1) or added (+1)
        """CREATE OR REPLACE TEMP TABLE rec_changed AS
           SELECT order_id, user_id, items, -1 AS sign
           FROM (SELECT order_id, user_id, items FROM rec_old_baskets
                 EXCEPT SELECT order_id, user_id, items FROM rec_new_baskets) AS removed
           UNION ALL
           SELECT order_id, user_id, items, 1 AS sign
           FROM (SELECT order_id, user_id, items FROM rec_new_baskets
                 EXCEPT SELECT order_id, user_id, items FROM rec_old_baskets) AS added""",
        f"DELETE FROM customer.rec_baskets {mine}",
        "INSERT INTO customer.rec_baskets SELECT order_id, user_id, items FROM rec_new_baskets",
        # N(T + c) moved: every itemset T of a changed small basket and every other product c of it
        f"""CREATE OR REPLACE TEMP TABLE rec_delta AS
            WITH subsets AS (
                SELECT items, sign, list_filter(items, lambda x, i: (mask >> (i - 1)) & 1 = 1) AS itemset
                FROM (SELECT items, sign, unnest(range(1, (1 << array_length(items))::INTEGER)) AS mask
                      FROM rec_changed WHERE array_length(items) BETWEEN 2 AND {SMALL_ORDER})
            )
            SELECT itemset, product_id, sum(sign)::INTEGER AS orders
            FROM (SELECT itemset, sign, unnest(list_filter(items, lambda x: NOT list_contains(itemset, x))) AS product_id
                  FROM subsets)
            GROUP BY ALL HAVING sum(sign) <> 0""",
        # the moved itemsets' rows rewritten (few: the itemsets of the day's changed baskets)
        """CREATE OR REPLACE TEMP TABLE rec_recounted AS
           SELECT itemset, product_id, sum(orders)::INTEGER AS orders
           FROM (SELECT itemset, product_id, orders FROM customer.rec_counts
                 WHERE itemset IN (SELECT itemset FROM rec_delta)
                 UNION ALL
                 SELECT itemset, product_id, orders FROM rec_delta)
           GROUP BY ALL HAVING sum(orders) <> 0""",
        "DELETE FROM customer.rec_counts WHERE itemset IN (SELECT itemset FROM rec_delta)",
        "INSERT INTO customer.rec_counts SELECT itemset, product_id, orders FROM rec_recounted",
        # products whose counts changed: those of baskets of two or more products added or removed, but a basket
        # moved to another person by a merge (the same products once removed, once added) changes no count
        """CREATE OR REPLACE TEMP TABLE rec_changed_products AS
           SELECT DISTINCT unnest(items) AS product_id
           FROM (SELECT items FROM rec_changed WHERE array_length(items) >= 2 GROUP BY items HAVING sum(sign) <> 0)""",
    ]


def large_statements(people: str | None) -> tuple[str, list[str]]:
    """How many large baskets of `people` (all: None) are replaced, and the statements replacing them: run only when
    there are some (the Spark engine writes a file even for an empty table)."""
    mine = f"WHERE user_id IN ({people})" if people else ""
    large = f"FROM rec_new_baskets WHERE array_length(items) > {SMALL_ORDER}"
    return f"SELECT (SELECT count(*) FROM customer.rec_large_baskets {mine}) + (SELECT count(*) {large})", [
        f"DELETE FROM customer.rec_large_baskets {mine}",
        f"INSERT INTO customer.rec_large_baskets SELECT order_id, user_id, items {large}",
    ]


def _interests(where: str = "") -> str:
    """The interest sets (products viewed since the last purchase) of the profiles of `where`."""
    return f"""SELECT user_id, list_sort(list(DISTINCT product_id)) AS items
               FROM (SELECT user_id, unnest(activity_since_last_purchase) AS product_id
                     FROM customer.profile_360 {where}) AS viewed
               WHERE product_id IS NOT NULL GROUP BY user_id"""


def people_statements(whole: bool) -> list[str]:
    """rec_interests_now: everyone's interests today, re-read from the profiles only for the people whose profile may
    have changed (INTEREST_PEOPLE; the others' are the kept ones); rec_people: whose list is recomputed."""
    if whole:
        return [
            f"CREATE OR REPLACE TEMP TABLE rec_interests_now AS {_interests()}",
            "CREATE OR REPLACE TEMP TABLE rec_people AS SELECT user_id FROM rec_interests_now",
        ]
    theirs = f"WHERE user_id IN ({INTEREST_PEOPLE})"
    return [
        f"""CREATE OR REPLACE TEMP TABLE rec_interests_now AS
            SELECT user_id, items FROM customer.rec_interests WHERE user_id NOT IN ({INTEREST_PEOPLE})
            UNION ALL {_interests(theirs)}""",
        f"""CREATE OR REPLACE TEMP TABLE rec_people AS
           SELECT user_id FROM (SELECT user_id, items FROM rec_interests_now {theirs}
                                EXCEPT SELECT user_id, items FROM customer.rec_interests {theirs}) AS gained
           UNION SELECT user_id FROM (SELECT user_id, items FROM customer.rec_interests {theirs}
                                      EXCEPT SELECT user_id, items FROM rec_interests_now {theirs}) AS lost
           UNION SELECT user_id FROM rec_changed WHERE user_id IN (SELECT user_id FROM rec_interests_now)
           UNION SELECT viewed.user_id
                 FROM (SELECT user_id, unnest(items) AS product_id FROM rec_interests_now) AS viewed
                 JOIN rec_changed_products USING (product_id)""",
    ]


# The lists of rec_people, from the updated state, into rec_result.
SCORING = [
    """CREATE OR REPLACE TEMP TABLE rec_customers AS
       SELECT user_id, dense_rank() OVER (ORDER BY items) AS set_no, items
       FROM rec_interests_now WHERE user_id IN (SELECT user_id FROM rec_people)""",
    """CREATE OR REPLACE TEMP TABLE rec_set_items AS
       SELECT DISTINCT set_no, unnest(items) AS product_id FROM rec_customers""",
    # the itemsets counted that can lie in one of the sets (their first product is in one)
    """CREATE OR REPLACE TEMP TABLE rec_itemsets AS
       SELECT DISTINCT itemset FROM customer.rec_counts
       WHERE itemset[1] IN (SELECT product_id FROM rec_set_items)""",
    # the itemsets inside each interest set, grown one product at a time (every subset of an itemset is one)
    f"""CREATE OR REPLACE TEMP TABLE rec_set_itemsets AS
        WITH RECURSIVE grown(set_no, itemset, last) AS (
            SELECT set_no, [product_id], product_id FROM rec_set_items
            SEMI JOIN rec_itemsets ON rec_itemsets.itemset = [product_id]
            UNION ALL
            SELECT grown.set_no, list_append(grown.itemset, m.product_id), m.product_id
            FROM grown JOIN rec_set_items AS m ON m.set_no = grown.set_no AND m.product_id > grown.last
            JOIN rec_itemsets ON rec_itemsets.itemset = list_append(grown.itemset, m.product_id)
            WHERE array_length(grown.itemset) < {SMALL_ORDER} - 1
        )
        SELECT set_no, itemset FROM grown""",
    # the run numbers the itemsets and products it scores (products in product_id order, so ranks break ties
    # alike): integers join and group faster than lists and strings
    """CREATE OR REPLACE TEMP TABLE rec_itemset_nos AS
       SELECT itemset, row_number() OVER (ORDER BY itemset) AS itemset_no
       FROM (SELECT DISTINCT itemset FROM rec_set_itemsets)""",
    """CREATE OR REPLACE TEMP TABLE rec_counted AS
       SELECT n.itemset_no, c.product_id,
              CASE WHEN array_length(c.itemset) % 2 = 1 THEN c.orders ELSE -c.orders END AS signed_orders
       FROM customer.rec_counts AS c JOIN rec_itemset_nos AS n USING (itemset)""",
    # every candidate: a product counted with an itemset of a set, or in a large order
    """CREATE OR REPLACE TEMP TABLE rec_products AS
       SELECT product_id, row_number() OVER (ORDER BY product_id) AS pid
       FROM (SELECT product_id FROM rec_counted
             UNION SELECT unnest(items) AS product_id FROM customer.rec_large_baskets)""",
    """CREATE OR REPLACE TEMP TABLE rec_cooccurrence AS
       SELECT itemset_no, pid, signed_orders FROM rec_counted JOIN rec_products USING (product_id)""",
    """CREATE OR REPLACE TEMP TABLE rec_set_scored AS
       SELECT s.set_no, n.itemset_no FROM rec_set_itemsets AS s JOIN rec_itemset_nos AS n USING (itemset)
       ORDER BY s.set_no""",
    # a set's products that can be candidates: they are not
    """CREATE OR REPLACE TEMP TABLE rec_set_pids AS
       SELECT set_no, pid FROM rec_set_items JOIN rec_products USING (product_id)""",
    # the orders of more than SMALL_ORDER products, counted directly
    """CREATE OR REPLACE TEMP TABLE rec_large_scores AS
       WITH large_orders AS (
           SELECT order_id, user_id, pid
           FROM (SELECT order_id, user_id, unnest(items) AS product_id FROM customer.rec_large_baskets) AS items
           JOIN rec_products USING (product_id)
       )
       SELECT hits.set_no, large_orders.pid, count(*)::INTEGER AS orders
       FROM (SELECT DISTINCT s.set_no, o.order_id, o.user_id
             FROM rec_set_pids AS s JOIN large_orders AS o USING (pid)) AS hits
       JOIN large_orders USING (order_id, user_id)
       GROUP BY ALL""",
    # the customer's own orders holding an interest: their products are counted in the set's score but must not be
    """CREATE OR REPLACE TEMP TABLE rec_own AS
       SELECT user_id, product_id, count(*) AS orders
       FROM (SELECT b.user_id, unnest(list_filter(b.items, lambda x: NOT list_contains(c.items, x))) AS product_id
             FROM customer.rec_baskets AS b JOIN rec_customers AS c USING (user_id)
             WHERE list_has_any(b.items, c.items)) AS mine
       GROUP BY ALL""",
    """CREATE OR REPLACE TEMP TABLE rec_lowered AS SELECT user_id, count(*) AS k FROM rec_own GROUP BY user_id""",
    """CREATE OR REPLACE TEMP TABLE rec_depth AS
       SELECT set_no, 5 + max(coalesce(k, 0)) AS depth FROM rec_customers LEFT JOIN rec_lowered USING (user_id)
       GROUP BY set_no""",
    """CREATE OR REPLACE TEMP TABLE rec_set_top (set_no BIGINT, pid BIGINT, orders BIGINT, set_rank BIGINT)""",
]

# orders(S, c) for the sets in [$first, $last], kept down to the depth any of the set's customers can reach
SET_TOP = """
INSERT INTO rec_set_top
SELECT set_no, pid, orders, row_number() OVER (PARTITION BY set_no ORDER BY orders DESC, pid) AS set_rank
FROM (
    SELECT set_no, pid, sum(orders) AS orders
    FROM (SELECT s.set_no, c.pid, c.signed_orders AS orders
          FROM rec_set_scored AS s JOIN rec_cooccurrence AS c USING (itemset_no)
          WHERE s.set_no BETWEEN $first AND $last
          UNION ALL
          SELECT set_no, pid, orders FROM rec_large_scores WHERE set_no BETWEEN $first AND $last)
    ANTI JOIN rec_set_pids USING (set_no, pid)
    GROUP BY ALL
) JOIN rec_depth USING (set_no)
QUALIFY set_rank <= depth
"""

RESULT = """
CREATE OR REPLACE TEMP TABLE rec_result AS
WITH scored AS (
    SELECT cust.user_id, rec_products.product_id, top.pid, top.orders - coalesce(own.orders, 0) AS score
    FROM rec_customers AS cust
    LEFT JOIN rec_lowered USING (user_id)
    JOIN rec_set_top AS top ON top.set_no = cust.set_no AND top.set_rank <= 5 + coalesce(rec_lowered.k, 0)
    JOIN rec_products USING (pid)
    LEFT JOIN rec_own AS own ON own.user_id = cust.user_id AND own.product_id = rec_products.product_id
)
SELECT user_id, product_id, score, row_number() OVER (PARTITION BY user_id ORDER BY score DESC, pid)::BIGINT AS rank
FROM scored
WHERE score > 0
QUALIFY rank <= 5
"""


def replace_statements(whole: bool) -> list[str]:
    """rec_people's rows and interests replaced; rec_logged: the people whose rows changed."""
    mine = "" if whole else "WHERE user_id IN (SELECT user_id FROM rec_people)"
    return [
        f"""CREATE OR REPLACE TEMP TABLE rec_logged AS
            SELECT DISTINCT user_id AS person
            FROM ((SELECT user_id, product_id, score, rank FROM customer.recommendations {mine}
                   EXCEPT SELECT user_id, product_id, score, rank FROM rec_result)
                  UNION ALL
                  (SELECT user_id, product_id, score, rank FROM rec_result
                   EXCEPT SELECT user_id, product_id, score, rank FROM customer.recommendations {mine})) AS changed""",
        f"DELETE FROM customer.recommendations {mine}",
        "INSERT INTO customer.recommendations SELECT user_id, product_id, score, rank FROM rec_result",
        f"DELETE FROM customer.rec_interests {mine}",
        """INSERT INTO customer.rec_interests
           SELECT user_id, items FROM rec_interests_now WHERE user_id IN (SELECT user_id FROM rec_people)""",
    ]


# sets scored per batch: each batch's aggregation stays in memory
ITEMSETS_PER_BATCH = 500_000

# The hash covers what the rows are built with: the SQL and SMALL_ORDER (another one rebuilds whole).
RULES = touched.rules_hash(
    DDL,
    basket_statements(TOUCHED),
    large_statements(TOUCHED),
    people_statements(False),
    SCORING,
    SET_TOP,
    RESULT,
    replace_statements(False),
    SMALL_ORDER,
    profile_sql(),  # interests are re-read only where a profile may have changed: not so when profiles change SQL
    PROFILE_SOURCES,
)

TEMP_TABLES = [
    "rec_new_baskets", "rec_old_baskets", "rec_changed", "rec_delta", "rec_recounted", "rec_changed_products",
    "rec_interests_now", "rec_customers", "rec_set_items", "rec_itemsets", "rec_set_itemsets", "rec_itemset_nos",
    "rec_counted", "rec_products", "rec_cooccurrence", "rec_set_scored", "rec_set_pids", "rec_large_scores", "rec_own", "rec_lowered", "rec_depth", "rec_set_top", "rec_result",
    "rec_logged", "rec_interest_people",
]  # fmt: skip


@dataclass(frozen=True)
class Applied:
    whole: bool
    recomputed: int  # people whose list was computed
    logged: int  # people whose rows changed (logged under "recommendations")


def update(conn, rebuild: bool = False) -> Applied:
    """Brings customer.recommendations and its state up to date, in one transaction with the mark: whole when there
    is no mark, the SQL or SMALL_ORDER changed, or on `rebuild`; else by what the touched people changed."""
    conn.execute(DDL)
    mark = touched.start(conn, CONSUMER, SOURCES, RULES, rebuild)
    if not mark.whole:
        touched.collect(conn, mark, PROFILE_SOURCES, "rec_interest_people")
    logged_seq = {"touched_seq": touched.next_seq(conn)}
    with transaction(conn):
        if mark.whole:
            for table in ["customer.rec_baskets", "customer.rec_counts", "customer.rec_interests"]:
                conn.execute(f"DELETE FROM {table}")
        people = None if mark.whole else TOUCHED
        for statement in basket_statements(people):
            conn.execute(statement)
        replaced, statements = large_statements(people)
        if conn.execute(replaced).fetchall()[0][0]:
            for statement in statements:
                conn.execute(statement)
        for statement in people_statements(mark.whole):
            conn.execute(statement)
        for statement in SCORING:
            conn.execute(statement)
        sets, itemsets = conn.execute(
            "SELECT count(*), (SELECT count(*) FROM rec_set_scored) FROM rec_depth"
        ).fetchall()[0]
        batches = max(1, itemsets // ITEMSETS_PER_BATCH)
        for batch in range(batches):  # set_no runs 1..sets
            conn.execute(SET_TOP, {"first": batch * sets // batches + 1, "last": (batch + 1) * sets // batches})
        conn.execute(RESULT)
        for statement in replace_statements(mark.whole):
            conn.execute(statement)
        conn.execute(touched.log_sql("SELECT person FROM rec_logged", "recommendations"), logged_seq)
        touched.finish(conn, mark)
    recomputed, logged = conn.execute(
        "SELECT (SELECT count(*) FROM rec_people), (SELECT count(*) FROM rec_logged)"
    ).fetchall()[0]
    for table in TEMP_TABLES:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    return Applied(mark.whole, recomputed, logged)
