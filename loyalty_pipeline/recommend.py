"""Co-purchase recommendations (SPEC §5.3), exact and without expanding customers x orders.

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

An order is one customer's basket: (order_id, user_id). Products are numbered in product_id order, so ranking by
number breaks ties by product_id.
"""

from loyalty_pipeline.identity import PURCHASES_NOW

SMALL_ORDER = 6

STATEMENTS = [
    # products ever bought (interests outside them never meet an order and are never candidates)
    """CREATE TEMP TABLE rec_products AS
       SELECT product_id, row_number() OVER (ORDER BY product_id)::INTEGER AS pid
       FROM (SELECT DISTINCT product_id FROM loyalty.enriched_purchases WHERE product_id IS NOT NULL)""",
    f"""CREATE TEMP TABLE rec_order_items AS
       SELECT DISTINCT dense_rank() OVER (ORDER BY order_id, user_id) AS order_no, user_id, pid
       FROM ({PURCHASES_NOW}) JOIN rec_products USING (product_id)""",
    """CREATE TEMP TABLE rec_orders AS
       SELECT order_no, list_sort(list(pid)) AS items FROM rec_order_items GROUP BY order_no""",
    """CREATE TEMP TABLE rec_interest AS
       SELECT user_id, pid FROM (SELECT user_id, unnest(activity_since_last_purchase) AS product_id
                                 FROM customer.profile_360)
       JOIN rec_products USING (product_id)""",
    """CREATE TEMP TABLE rec_customers AS
       SELECT user_id, dense_rank() OVER (ORDER BY items) AS set_no, items
       FROM (SELECT user_id, list_sort(list(DISTINCT pid)) AS items FROM rec_interest GROUP BY user_id)""",
    """CREATE TEMP TABLE rec_set_items AS
       SELECT DISTINCT set_no, unnest(items) AS pid FROM rec_customers""",
    # N(T + c) for every itemset T of a small order and every other product c of it, signed for inclusion-exclusion
    f"""CREATE TEMP TABLE rec_pairs AS
        WITH subsets AS (
            SELECT items, list_filter(items, lambda x, i: (mask >> (i - 1)) & 1 = 1) AS itemset
            FROM (SELECT items, unnest(range(1, (1 << array_length(items))::INTEGER)) AS mask
                  FROM rec_orders WHERE array_length(items) BETWEEN 2 AND {SMALL_ORDER})
        )
        SELECT itemset, pid, count(*)::INTEGER AS orders
        FROM (SELECT itemset, unnest(list_filter(items, lambda x: NOT list_contains(itemset, x))) AS pid FROM subsets)
        GROUP BY ALL""",
    """CREATE TEMP TABLE rec_itemsets AS
       SELECT itemset, row_number() OVER (ORDER BY itemset)::INTEGER AS itemset_no
       FROM (SELECT DISTINCT itemset FROM rec_pairs)""",
    """CREATE TEMP TABLE rec_cooccurrence AS
       SELECT itemset_no, pid, CASE WHEN array_length(itemset) % 2 = 1 THEN orders ELSE -orders END AS signed_orders
       FROM rec_pairs JOIN rec_itemsets USING (itemset)""",
    # the itemsets inside each interest set, grown one product at a time (every subset of an itemset is one)
    f"""CREATE TEMP TABLE rec_set_itemsets AS
        WITH RECURSIVE grown(set_no, itemset, last) AS (
            SELECT set_no, [pid], pid FROM rec_set_items SEMI JOIN rec_itemsets ON rec_itemsets.itemset = [pid]
            UNION ALL
            SELECT grown.set_no, list_append(grown.itemset, m.pid), m.pid
            FROM grown JOIN rec_set_items AS m ON m.set_no = grown.set_no AND m.pid > grown.last
            JOIN rec_itemsets ON rec_itemsets.itemset = list_append(grown.itemset, m.pid)
            WHERE array_length(grown.itemset) < {SMALL_ORDER} - 1
        )
        SELECT set_no, itemset_no FROM grown JOIN rec_itemsets USING (itemset) ORDER BY set_no""",
    # the orders of more than SMALL_ORDER products, counted directly
    f"""CREATE TEMP TABLE rec_large_scores AS
        WITH large_orders AS (SELECT order_no, unnest(items) AS pid FROM rec_orders WHERE array_length(items) > {SMALL_ORDER})
        SELECT hits.set_no, large_orders.pid, count(*)::INTEGER AS orders
        FROM (SELECT DISTINCT s.set_no, o.order_no FROM rec_set_items AS s JOIN large_orders AS o USING (pid)) AS hits
        JOIN large_orders USING (order_no)
        GROUP BY ALL""",
    # the customer's own orders holding an interest: their products are counted in the set's score but must not be
    """CREATE TEMP TABLE rec_own AS
       SELECT mine.user_id, items.pid, count(*) AS orders
       FROM (SELECT DISTINCT o.user_id, o.order_no FROM rec_order_items AS o JOIN rec_interest USING (user_id, pid)) AS mine
       JOIN rec_order_items AS items USING (order_no)
       ANTI JOIN rec_interest ON rec_interest.user_id = mine.user_id AND rec_interest.pid = items.pid
       GROUP BY ALL""",
    """CREATE TEMP TABLE rec_lowered AS SELECT user_id, count(*) AS k FROM rec_own GROUP BY user_id""",
    """CREATE TEMP TABLE rec_depth AS
       SELECT set_no, 5 + max(coalesce(k, 0)) AS depth FROM rec_customers LEFT JOIN rec_lowered USING (user_id)
       GROUP BY set_no""",
    """CREATE TEMP TABLE rec_set_top (set_no BIGINT, pid INTEGER, orders BIGINT, set_rank BIGINT)""",
]

# orders(S, c) for the sets in [$first, $last], kept down to the depth any of the set's customers can reach
SET_TOP = """
INSERT INTO rec_set_top
SELECT set_no, pid, orders, row_number() OVER (PARTITION BY set_no ORDER BY orders DESC, pid) AS set_rank
FROM (
    SELECT set_no, pid, sum(orders) AS orders
    FROM (SELECT s.set_no, c.pid, c.signed_orders AS orders
          FROM rec_set_itemsets AS s JOIN rec_cooccurrence AS c USING (itemset_no)
          WHERE s.set_no BETWEEN $first AND $last
          UNION ALL
          SELECT set_no, pid, orders FROM rec_large_scores WHERE set_no BETWEEN $first AND $last)
    ANTI JOIN rec_set_items USING (set_no, pid)
    GROUP BY ALL
) JOIN rec_depth USING (set_no)
QUALIFY set_rank <= depth
"""

RESULT = """
WITH scored AS (
    SELECT cust.user_id, top.pid, top.orders - coalesce(own.orders, 0) AS score
    FROM rec_customers AS cust
    LEFT JOIN rec_lowered USING (user_id)
    JOIN rec_set_top AS top ON top.set_no = cust.set_no AND top.set_rank <= 5 + coalesce(rec_lowered.k, 0)
    LEFT JOIN rec_own AS own ON own.user_id = cust.user_id AND own.pid = top.pid
)
SELECT user_id, product_id, score, row_number() OVER (PARTITION BY user_id ORDER BY score DESC, pid)::BIGINT AS rank
FROM scored JOIN rec_products USING (pid)
WHERE score > 0
QUALIFY rank <= 5
"""

# sets scored per batch: each batch's aggregation stays in memory
ITEMSETS_PER_BATCH = 500_000


def build(conn, table: str) -> None:
    """Write the recommendations to `table` (replacing it); the working tables live in the connection's temp."""
    for statement in STATEMENTS:
        conn.execute(statement)
    sets, itemsets = conn.execute("SELECT count(*), (SELECT count(*) FROM rec_set_itemsets) FROM rec_depth").fetchall()[
        0
    ]
    batches = max(1, itemsets // ITEMSETS_PER_BATCH)
    for batch in range(batches):  # set_no runs 1..sets
        conn.execute(SET_TOP, {"first": batch * sets // batches + 1, "last": (batch + 1) * sets // batches})
    conn.execute(f"CREATE OR REPLACE TABLE {table} AS {RESULT}")
    for statement in STATEMENTS:  # each is CREATE TEMP TABLE rec_...
        conn.execute(f"DROP TABLE {statement.split()[3]}")
