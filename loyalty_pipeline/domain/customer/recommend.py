"""Co-purchase recommendations (docs/decisions.md, Customer 360), exact, computed when read from co-purchase counts
kept up to date.

score(u, c) = orders by other customers that contain c and at least one of u's products of interest S. Every
order changes the counts behind most lists (a day's baskets cover nearly every product), so lists are not stored:
`customer.recommendations` is a view, and the serving store (publish.py, serving.py) computes a card's list at
lookup from the same counts, as the Rockset seed does at query time. A run only keeps the counts up to date:

* for an order of at most SMALL_ORDER products, N(T + c) = orders holding the itemset T and the product c (at most
  2^SMALL_ORDER itemsets per order); by inclusion-exclusion over the itemsets T inside S,
  orders(S, c) = sum of (-1)^(|T|+1) N(T + c). Only itemsets some order holds are enumerated (level by level,
  like Apriori), so the work follows the data, not 2^|S|;
* the few larger orders are counted directly;
* then the customer's own orders meeting S are subtracted.

An order is one customer's basket: (order_id, the person now). The state, updated by delta, is customer.rec_baskets
(every basket), customer.rec_large_baskets (those above SMALL_ORDER) and customer.rec_counts (N(T + c) of the small
ones). A run replaces the baskets of the people it touched (purchases, returns, merges), subtracts the counts of
their old baskets and adds the new ones': it costs the day's baskets, not the customer base.
"""

from dataclasses import dataclass

from loyalty_pipeline.domain.identity.identity import purchases_now
from loyalty_pipeline.lib import touched
from loyalty_pipeline.lib.sql import load
from loyalty_pipeline.lib.warehouse import transaction

_SQL = load(__file__)  # recommend.sql
DDL = _SQL["ddl"]

SMALL_ORDER = 6
CONSUMER = "customer.recommendations"
SOURCES = ["purchases", "identity"]  # what baskets read: purchases and returns, and who each belongs to now

STATE = ["customer.rec_baskets", "customer.rec_large_baskets", "customer.rec_counts"]
TOUCHED = "SELECT person FROM touched_people"


def itemsets_sql(baskets: str) -> str:
    """Every itemset T of the small baskets of `baskets` (a query with a list column `items`, and any others) with
    each other product c of the basket: N(T + c) is counted from these rows."""
    return f"""
SELECT * EXCLUDE (mask), unnest(list_filter(items, lambda x: NOT list_contains(itemset, x))) AS product_id
FROM (SELECT *, list_filter(items, lambda x, i: (mask >> (i - 1)) & 1 = 1) AS itemset
      FROM (SELECT *, unnest(range(1, (1 << array_length(items))::INTEGER)) AS mask
            FROM ({baskets}) AS baskets WHERE array_length(items) BETWEEN 2 AND {SMALL_ORDER}))"""


def baskets_sql(people: str | None) -> str:
    """The baskets of `people` (all: None) built from their purchases, returns left out."""
    return f"""SELECT order_id, user_id, list_sort(list(DISTINCT product_id)) AS items
               FROM ({purchases_now(people or "")}) GROUP BY order_id, user_id"""


def basket_statements(people: str | None) -> list[str]:
    """The baskets of `people` (all: None) replaced, and the counts moved by those that changed."""
    mine = f"WHERE user_id IN ({people})" if people else ""
    return [
        f"CREATE OR REPLACE TEMP TABLE rec_new_baskets AS {baskets_sql(people)}",
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
        # N(T + c) moved by the changed small baskets
        f"""CREATE OR REPLACE TEMP TABLE rec_delta AS
            SELECT itemset, product_id, sum(sign)::INTEGER AS orders
            FROM ({itemsets_sql("SELECT items, sign FROM rec_changed")})
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


def recommendations_sql(people: str | None = None) -> str:
    """The top 5 (user_id, product_id, score, rank) of the profiles of `people` (a query of one column `person`,
    constant SQL; None: everyone), from the state. Customers share interest sets: each set is scored once, then each
    customer's own orders are subtracted; a customer's top 5 lies within the set's top 5 + k (k: the candidates the
    customer's own orders lower), so only those ranks are joined back to customers."""
    mine = "" if people is None else f"WHERE user_id IN (SELECT person FROM ({people}))"
    return f"""
WITH RECURSIVE interests AS (
    SELECT user_id, list_sort(list(DISTINCT product_id)) AS items
    FROM (SELECT user_id, unnest(activity_since_last_purchase) AS product_id FROM customer.profile_360 {mine}) AS viewed
    WHERE product_id IS NOT NULL GROUP BY user_id
), set_items AS (
    SELECT DISTINCT items, unnest(items) AS product_id FROM interests
), itemsets AS (  -- the itemsets counted that can lie in one of the sets (their first product is in one)
    SELECT DISTINCT itemset FROM customer.rec_counts WHERE itemset[1] IN (SELECT product_id FROM set_items)
), grown(items, itemset, last) AS (  -- the itemsets inside each set, grown one product at a time
    SELECT items, [product_id], product_id FROM set_items SEMI JOIN itemsets ON itemsets.itemset = [product_id]
    UNION ALL
    SELECT grown.items, list_append(grown.itemset, m.product_id), m.product_id
    FROM grown JOIN set_items AS m ON m.items = grown.items AND m.product_id > grown.last
    JOIN itemsets ON itemsets.itemset = list_append(grown.itemset, m.product_id)
    WHERE array_length(grown.itemset) < {SMALL_ORDER} - 1
), large_items AS (
    SELECT order_id, user_id, unnest(items) AS product_id FROM customer.rec_large_baskets
), set_scores AS (
    SELECT items, product_id, sum(orders) AS orders
    FROM (SELECT grown.items, c.product_id,
                 CASE WHEN array_length(c.itemset) % 2 = 1 THEN c.orders ELSE -c.orders END AS orders
          FROM grown JOIN customer.rec_counts AS c USING (itemset)
          UNION ALL  -- the large orders meeting a set, counted directly
          SELECT hits.items, large_items.product_id, 1
          FROM (SELECT DISTINCT s.items, o.order_id, o.user_id
                FROM set_items AS s JOIN large_items AS o USING (product_id)) AS hits
          JOIN large_items USING (order_id, user_id)) AS counted
    WHERE NOT list_contains(items, product_id)
    GROUP BY ALL
), own AS (  -- the customer's own orders meeting their interests: counted in the set's score, but must not be
    SELECT user_id, product_id, count(*) AS orders
    FROM (SELECT b.user_id, unnest(list_filter(b.items, lambda x: NOT list_contains(i.items, x))) AS product_id
          FROM customer.rec_baskets AS b JOIN interests AS i USING (user_id)
          WHERE list_has_any(b.items, i.items)) AS mine
    GROUP BY ALL
), depth AS (
    SELECT items, 5 + max(coalesce(k, 0)) AS depth
    FROM interests LEFT JOIN (SELECT user_id, count(*) AS k FROM own GROUP BY user_id) AS lowered USING (user_id)
    GROUP BY items
), set_top AS (
    SELECT items, product_id, orders FROM set_scores JOIN depth USING (items)
    QUALIFY row_number() OVER (PARTITION BY items ORDER BY orders DESC, product_id) <= max(depth) OVER (PARTITION BY items)
), scored AS (
    SELECT i.user_id, t.product_id, t.orders - coalesce(own.orders, 0) AS score
    FROM interests AS i JOIN set_top AS t USING (items)
    LEFT JOIN own ON own.user_id = i.user_id AND own.product_id = t.product_id
)
SELECT user_id, product_id, score,
       row_number() OVER (PARTITION BY user_id ORDER BY score DESC, product_id)::BIGINT AS rank
FROM scored WHERE score > 0
QUALIFY rank <= 5
"""


VIEW = f"CREATE OR REPLACE VIEW customer.recommendations AS {recommendations_sql()}"

# The hash covers what the state is built with: the SQL and SMALL_ORDER (another one rebuilds whole).
RULES = touched.rules_hash(DDL, basket_statements(TOUCHED), large_statements(TOUCHED), SMALL_ORDER)
TEMP_TABLES = ["rec_new_baskets", "rec_old_baskets", "rec_changed", "rec_delta", "rec_recounted"]


@dataclass(frozen=True)
class Applied:
    whole: bool
    baskets_changed: int  # baskets added or removed (a basket whose products changed is both)


def update(conn, rebuild: bool = False) -> Applied:
    """Brings the state up to date, in one transaction with the mark: whole when there is no mark, the SQL or
    SMALL_ORDER changed, or on `rebuild`; else for the touched people."""
    conn.execute(DDL)
    mark = touched.start(conn, CONSUMER, SOURCES, RULES, rebuild)
    logged_seq = {"touched_seq": touched.next_seq(conn)}
    with transaction(conn):
        if mark.whole:  # (large baskets: by large_statements, only when there are some)
            for table in ["customer.rec_baskets", "customer.rec_counts"]:
                conn.execute(f"DELETE FROM {table}")
        people = None if mark.whole else TOUCHED
        for statement in basket_statements(people):
            conn.execute(statement)
        replaced, statements = large_statements(people)
        if conn.execute(replaced).fetchall()[0][0]:
            for statement in statements:
                conn.execute(statement)
        # for the serving store, which keeps the baskets too (it may publish before or after this update)
        conn.execute(touched.log_sql("SELECT user_id AS person FROM rec_changed", "baskets"), logged_seq)
        touched.finish(conn, mark)
    changed = conn.execute("SELECT count(*) FROM rec_changed").fetchall()[0][0]
    for table in TEMP_TABLES:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    return Applied(mark.whole, changed)


def create_view(conn) -> None:
    """`customer.recommendations` as a view of the state (it was a table before lists were computed when read)."""
    if conn.execute(
        "FROM duckdb_tables() WHERE schema_name = 'customer' AND table_name = 'recommendations'"
    ).fetchall():
        conn.execute("DROP TABLE customer.recommendations")
    conn.execute("DROP TABLE IF EXISTS customer.rec_interests")
    conn.execute(VIEW)
