"""Publishing the serving store (serving.py): the cards built from the warehouse with DuckDB, written into SQLite.

A publish is one SQLite write transaction. It replaces the cards, identifiers and names of the people the change
log (touched.py) holds since the store's last publish, so a day costs its people, not the customer base; a store
with no mark, another shape or other rules, one that cannot be read, or a rebuild is published whole (still one
transaction, in place: readers keep the file they opened). The consumer's mark moves in the warehouse only after
the SQLite commit: a failed publish leaves both as they were, and a mark that failed to move after the commit
re-applies the same people next time, which changes nothing. The store also records the mark it holds, so a store
older than the mark (copied back, another warehouse's) is published whole.
"""

import json
import sqlite3
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from loyalty_pipeline.domain.customer import recommend
from loyalty_pipeline.domain.identity import identity
from loyalty_pipeline.domain.journey import journeys
from loyalty_pipeline.domain.points import ledger
from loyalty_pipeline.lib import touched
from loyalty_pipeline.lib.warehouse import count, insert_rows, transaction
from loyalty_pipeline.serve.serving import (
    LEDGER_ROWS,
    NEEDED,
    RECENT_EVENTS,
    RECOMMENDED,
    SHAPE,
    STORE_DDL,
    STORE_INDEXES,
    ranked,
)

CONSUMER = "serving"
BATCH = 10_000  # rows fetched from DuckDB and written to SQLite at a time
SAMPLE = 1_000  # people the check compares beyond the counts: this many just published, this many of everyone
PEOPLE = "SELECT person FROM touched_people"
STORE_TABLES = ["cards", "identifiers", "names", "rec_counts", "baskets"]
REC_SAMPLE = 50  # people whose recommendations the check computes both ways (~2 ms each after a year)
# Whose recommendation state (baskets) the store re-syncs: what changes baskets (purchases, merges), and the people
# whose baskets an update changed after the store's last publish. Not every touched person: a click changes a card,
# never a basket. (The baskets log alone misses a basket that a whole rebuild of the state, after an engine switch,
# compared with an older state than the store's.)
BASKET_SOURCES = ["purchases", "identity", "baskets"]


def _of(people: str | None, column: str) -> str:
    """A condition keeping the rows of `people` (a query of one column `person`; None: everyone)."""
    return "true" if people is None else f"{column} IN (SELECT person FROM ({people}))"


def cards_sql(people: str | None = None) -> str:
    """One card per profile of `people` (a query of one column `person`, constant SQL; None: everyone): everything a
    service desk sees, as one JSON document, and the columns search shows. The calendar values (copy.published_at,
    copy.as_of, profile.days_since_last_purchase, profile.as_of) are left null: a lookup fills them in from the
    store's `info`. Reads the warehouse, with `card_tiers(name, above)` (`prepare`), `$stamp_product` and `$cycle`."""
    ids = "SELECT id_value, customer_id AS user_id FROM identity.current_ids"
    linked = "SELECT NULL::VARCHAR AS id_value WHERE false"
    if people is not None:  # the ids whose events may be theirs: their own, and every value ever linked to them
        linked = f"""SELECT person AS id_value FROM ({people})
                     UNION SELECT id_value FROM identity.id_graph WHERE {_of(people, "customer_id")}"""
        ids = """SELECT id_value, arg_max(customer_id, linked_on) AS user_id FROM identity.id_graph
                 WHERE strength = 'strong' AND id_value IN (SELECT id_value FROM linked) GROUP BY id_value"""

    def mine(column: str) -> str:
        return "true" if people is None else f"{column} IN (SELECT id_value FROM linked)"

    return f"""
WITH linked AS ({linked}), ids AS ({ids}),
ledger AS (
    SELECT user_id, list({{'occurred_at': occurred_at, 'points': points, 'kind': kind, 'expires_at': expires_at}}
                         ORDER BY occurred_at DESC, txn_id DESC)[:{LEDGER_ROWS}] AS rows
    FROM points.point_transactions WHERE {_of(people, "user_id")} GROUP BY user_id
), journeys AS (
    SELECT customer_id AS user_id,
           list({{'journey_id': journey_id, 'node': node, 'entered_at': entered_at}} ORDER BY journey_id) AS nodes
    FROM (SELECT journey_id, customer_id, arg_max(node, (entered_at, CASE WHEN node = 'end' THEN 4 WHEN node = 'goal'
                 THEN 3 WHEN node LIKE '%:exit:%' THEN 2 WHEN node LIKE '%:step:%' THEN 1 ELSE 0 END, node)) AS node,
                 max(entered_at) AS entered_at
          FROM journey.journey_state WHERE {_of(people, "customer_id")} GROUP BY ALL)
    GROUP BY customer_id
), activations AS (
    SELECT customer_id AS user_id,
           list({{'journey_id': journey_id, 'activation': activation, 'activated_on': activated_on}}
                ORDER BY activated_on DESC, journey_id, activation) AS rows
    FROM journey.activations WHERE {_of(people, "customer_id")} GROUP BY customer_id
), events AS (
    SELECT coalesce(ids.user_id, p.user_id) AS user_id, p.purchased_at AS happened_at,
           CASE WHEN p.returned_at IS NULL THEN 'purchase' ELSE 'purchase (returned)' END AS what, p.product_id, p.price,
           p.purchase_id AS event_id
    FROM loyalty.enriched_purchases AS p LEFT JOIN ids ON ids.id_value = p.user_id WHERE {mine("p.user_id")}
    UNION ALL
    SELECT coalesce(ids.user_id, a.user_id), a.event_ts, a.event_type, a.product_id, NULL,
           a.kafka_partition || ':' || a.kafka_offset
    FROM raw.user_activity AS a LEFT JOIN ids ON ids.id_value = a.user_id
    WHERE NOT a.tombstone AND {mine("a.user_id")}
), recent AS (  -- ties at one instant in a fixed order (the event's id), so every build writes the same card
    SELECT user_id, list({{'at': happened_at, 'what': what, 'product_id': product_id, 'price': price}}
                         ORDER BY happened_at DESC, what, product_id, event_id) AS rows
    FROM (SELECT * FROM events QUALIFY row_number() OVER (PARTITION BY user_id
                                                          ORDER BY happened_at DESC, what, product_id, event_id)
                                       <= {RECENT_EVENTS})
    GROUP BY user_id
), profile AS (
    SELECT * REPLACE (NULL AS days_since_last_purchase, NULL AS as_of) FROM customer.profile_360
    WHERE {_of(people, "user_id")}
)
SELECT profile.user_id, profile.name, profile.email, profile.reward_level,
       profile.last_purchase_at::DATE::VARCHAR AS last_purchase_on,
       json_object(
    'copy', json_object('published_at', NULL, 'as_of', NULL),
    'user_id', profile.user_id, 'name', profile.name, 'email', profile.email,
    'tier', json_object(
        'level', profile.reward_level, 'total_spend', profile.total_spend,
        'next', (SELECT json_object('name', name, 'above', above, 'to_go', above - profile.total_spend)
                 FROM card_tiers WHERE above >= profile.total_spend ORDER BY above LIMIT 1)),
    'stamps', json_object(
        'product_id', $stamp_product, 'cycle', $cycle, 'bought', coalesce(stamps.total, 0),
        'in_cycle', coalesce(stamps.sequence, 0), 'next_one_free', coalesce(stamps.next_one_free, false),
        'to_free', CASE WHEN stamps.next_one_free THEN 0 ELSE $cycle - 1 - coalesce(stamps.sequence, 0) END),
    'points', json_object(
        'balance', coalesce(balance.balance, 0), 'available', coalesce(balance.available, 0),
        'pending', coalesce(balance.pending, 0), 'debt', coalesce(balance.debt, 0),
        'next_expiry_at', balance.next_expiry_at, 'next_expiry_points', balance.next_expiry_points),
    'ledger', coalesce(ledger.rows, []),
    'journeys', coalesce(journeys.nodes, []),
    'activations', coalesce(activations.rows, []),
    'recommendations', []::VARCHAR[],  -- computed when read (serving.RECOMMENDED)
    'recent_activity', coalesce(recent.rows, []),
    'profile', to_json(profile)
)::VARCHAR AS card
FROM profile
LEFT JOIN (SELECT * FROM loyalty.caffeine_index WHERE {_of(people, "user_id")}) AS stamps USING (user_id)
LEFT JOIN (SELECT * FROM points.point_balances WHERE {_of(people, "user_id")}) AS balance USING (user_id)
LEFT JOIN ledger USING (user_id)
LEFT JOIN journeys USING (user_id)
LEFT JOIN activations USING (user_id)
LEFT JOIN recent USING (user_id)
"""


def names_sql(people: str | None = None) -> str:
    """Every profile's name and email as a lookup finds them (trimmed, lower-case)."""
    return f"""
SELECT lower(trim(name)) AS value, user_id FROM customer.profile_360 WHERE name IS NOT NULL AND {_of(people, "user_id")}
UNION
SELECT lower(trim(email)), user_id FROM customer.profile_360 WHERE email IS NOT NULL AND {_of(people, "user_id")}
"""


# The identifier values whose person may have changed: every value ever linked to one of `people`, and every value
# that found one of them.
def values_sql(people: str) -> str:
    return f"""SELECT id_value FROM identity.id_graph WHERE {_of(people, "customer_id")}
               UNION SELECT id_value FROM customer.identifiers WHERE {_of(people, "user_id")}"""


IDENTIFIERS = "SELECT id_type, id_value, user_id FROM customer.identifiers"


# What the store computes recommendations from (serving.RECOMMENDED): the counts of `itemsets` (a query of one
# column `itemset`; None: all) keyed as the store keys them, and the baskets and large orders' products of `people`.
ITEMSET_KEY = "array_to_string(list_transform(itemset, lambda x: hex(x)), ',')"


def counts_sql(itemsets: str | None = None) -> str:
    mine = "" if itemsets is None else f"WHERE itemset IN ({itemsets})"
    return f"SELECT {ITEMSET_KEY} AS itemset, product_id, orders FROM customer.rec_counts {mine}"


def baskets_sql(people: str | None = None) -> str:
    return f"""SELECT user_id, order_id, to_json(items)::VARCHAR AS items FROM customer.rec_baskets
               WHERE {_of(people, "user_id")}"""


def large_items_sql(people: str | None = None) -> str:
    return f"""SELECT DISTINCT unnest(items) AS product_id, order_id, user_id FROM customer.rec_large_baskets
               WHERE {_of(people, "user_id")}"""


AS_OF = "SELECT max(as_of)::VARCHAR FROM customer.profile_360"


def rebuilding(tags: dict) -> bool:
    """Whether a run asks every consumer to rebuild whole (`loyalty-pipeline materialize --rebuild`)."""
    return tags.get(touched.REBUILD_TAG) == "true"


def rules_hash(rules) -> str:
    """What the store's rows are built with: another hash publishes it whole."""
    tiers = [[tier.name, tier.above] for tier in rules.tiers]
    return touched.rules_hash(
        SHAPE, STORE_DDL, cards_sql(), cards_sql(PEOPLE), names_sql(), IDENTIFIERS, tiers, rules.stamp_card.model_dump(),
        counts_sql(), baskets_sql(), large_items_sql(), recommend.RULES,
    )  # fmt: skip


def prepare(conn: duckdb.DuckDBPyConnection, rules) -> dict:
    """The tables a card reads that a partial run may not have made, and `card_tiers`; returns the SQL parameters."""
    for statement in duckdb.extract_statements(ledger.DDL + journeys.DDL + identity.DDL + recommend.DDL):
        if statement.type == duckdb.StatementType.CREATE:  # not the ALTERs of the steps': on the Spark engine their
            conn.execute(statement.query)  # tables are views of the lake
    conn.execute("CREATE OR REPLACE TEMP TABLE card_tiers (name VARCHAR, above DECIMAL(18,2))")
    insert_rows(conn, "card_tiers", [[tier.name, tier.above] for tier in rules.tiers])
    return {"stamp_product": rules.stamp_card.product_id, "cycle": rules.stamp_card.cycle}


def _connect(path: Path) -> tuple[sqlite3.Connection, tuple | None]:
    """The store's writing connection, and (shape, seq, rules_hash) of what it holds (None: nothing)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    try:
        conn.execute("PRAGMA journal_mode = WAL")  # readers read the last commit while a publish writes
        conn.execute("PRAGMA synchronous = FULL")  # a commit is on disk before the warehouse's mark moves
        conn.execute("PRAGMA journal_size_limit = 67108864")  # a whole publish's WAL shrinks back once checkpointed
        conn.execute("PRAGMA temp_store = MEMORY")  # what a publish stages
        conn.execute("PRAGMA cache_size = -262144")  # 256 MB: a whole publish's indexes stay in memory
        try:
            return conn, conn.execute("SELECT shape, seq, rules_hash FROM info").fetchone()
        except sqlite3.OperationalError:  # no info, or one of another shape: published whole
            return conn, None
    except sqlite3.DatabaseError:
        conn.close()
        raise


def open_store(path: Path) -> tuple[sqlite3.Connection, tuple | None]:
    """`_connect`; a file that is no SQLite database (or a broken one) is removed first: nobody can read it, and
    SQLite cannot repair it in place."""
    try:
        return _connect(path)
    except sqlite3.DatabaseError:
        for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)
    return _connect(path)


def _copy(conn: duckdb.DuckDBPyConnection, sql: str, params: dict, store: sqlite3.Connection, insert: str) -> int:
    """Streams the rows of `sql` (DuckDB) into `insert` (SQLite) a batch at a time; returns the rows it changed."""
    rows = conn.execute(sql, params)
    before = store.total_changes
    while batch := rows.fetchmany(BATCH):
        store.executemany(insert, batch)
    return store.total_changes - before


# A card written only when it differs from the one stored: an unchanged person costs a read, not a write.
UPSERT_CARD = """
INSERT INTO cards VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET
    name = excluded.name, email = excluded.email, reward_level = excluded.reward_level,
    last_purchase_on = excluded.last_purchase_on, card = excluded.card
WHERE (name, email, reward_level, last_purchase_on, card)
      IS NOT (excluded.name, excluded.email, excluded.reward_level, excluded.last_purchase_on, excluded.card)
"""
# The touched people's and values' rows as the warehouse holds them now, staged (temp.new_*), then: the stored rows
# of them the warehouse no longer holds deleted, the new or changed ones written.
GONE = "DELETE FROM cards WHERE user_id IN (SELECT person FROM temp.gone)"
CHANGES = """
DELETE FROM identifiers
WHERE (user_id IN (SELECT person FROM temp.people) OR id_value IN (SELECT id_value FROM temp.touched_values))
  AND NOT EXISTS (SELECT 1 FROM temp.new_identifiers AS n WHERE n.id_type = identifiers.id_type
                                                            AND n.id_value = identifiers.id_value);
INSERT INTO identifiers SELECT * FROM temp.new_identifiers WHERE true
ON CONFLICT (id_type, id_value) DO UPDATE SET user_id = excluded.user_id WHERE user_id IS NOT excluded.user_id;
DELETE FROM names WHERE user_id IN (SELECT person FROM temp.people)
  AND NOT EXISTS (SELECT 1 FROM temp.new_names AS n WHERE n.value = names.value AND n.user_id = names.user_id);
INSERT INTO names SELECT * FROM temp.new_names WHERE true ON CONFLICT DO NOTHING
"""
# The recommendation state of the people whose baskets changed (temp.basket_people) likewise: their baskets and
# large orders, and the counts of the itemsets their changed baskets held.
REC_CHANGES = """
DELETE FROM baskets WHERE user_id IN (SELECT person FROM temp.basket_people)
  AND NOT EXISTS (SELECT 1 FROM temp.new_baskets AS n WHERE n.user_id = baskets.user_id AND n.order_id = baskets.order_id);
INSERT INTO baskets SELECT * FROM temp.new_baskets WHERE true
ON CONFLICT (user_id, order_id) DO UPDATE SET items = excluded.items WHERE items <> excluded.items;
DELETE FROM large_items WHERE user_id IN (SELECT person FROM temp.basket_people)
  AND NOT EXISTS (SELECT 1 FROM temp.new_large_items AS n WHERE n.product_id = large_items.product_id
                  AND n.order_id = large_items.order_id AND n.user_id = large_items.user_id);
INSERT INTO large_items SELECT * FROM temp.new_large_items WHERE true ON CONFLICT DO NOTHING;
DELETE FROM rec_counts WHERE itemset IN (SELECT itemset FROM temp.recounted)
  AND NOT EXISTS (SELECT 1 FROM temp.new_counts AS n
                  WHERE n.itemset = rec_counts.itemset AND n.product_id = rec_counts.product_id);
INSERT INTO rec_counts SELECT * FROM temp.new_counts WHERE true
ON CONFLICT (itemset, product_id) DO UPDATE SET orders = excluded.orders WHERE orders <> excluded.orders
"""
# The items of their baskets the store holds and the warehouse no longer does, or the other way
# round (as one JSON array): the itemsets whose counts they moved are recounted.
CHANGED_BASKETS = """
SELECT json_group_array(json(items)) FROM (
    SELECT items FROM (SELECT user_id, order_id, items FROM baskets WHERE user_id IN (SELECT person FROM temp.basket_people)
                       EXCEPT SELECT user_id, order_id, items FROM temp.new_baskets)
    UNION ALL
    SELECT items FROM (SELECT user_id, order_id, items FROM temp.new_baskets
                       EXCEPT SELECT user_id, order_id, items FROM baskets
                       WHERE user_id IN (SELECT person FROM temp.basket_people)))
"""
CHANGED = """SELECT unnest(from_json($changed, '[["VARCHAR"]]')) AS items"""
CHANGED_ITEMSETS = f"""CREATE OR REPLACE TEMP TABLE serving_itemsets AS SELECT DISTINCT itemset
FROM ({recommend.itemsets_sql(CHANGED)})"""
STAGED = """
CREATE TEMP TABLE people (person TEXT PRIMARY KEY);
CREATE TEMP TABLE gone (person TEXT PRIMARY KEY);
CREATE TEMP TABLE touched_values (id_value TEXT PRIMARY KEY);
CREATE TEMP TABLE new_identifiers (id_type TEXT, id_value TEXT, user_id TEXT, PRIMARY KEY (id_type, id_value));
CREATE TEMP TABLE new_names (value TEXT, user_id TEXT, PRIMARY KEY (value, user_id))
"""
REC_STAGED = """
CREATE TEMP TABLE basket_people (person TEXT PRIMARY KEY);
CREATE TEMP TABLE new_baskets (user_id TEXT, order_id TEXT, items TEXT, PRIMARY KEY (user_id, order_id));
CREATE TEMP TABLE new_large_items (product_id TEXT, order_id TEXT, user_id TEXT);
CREATE TEMP TABLE recounted (itemset TEXT PRIMARY KEY);
CREATE TEMP TABLE new_counts (itemset TEXT, product_id TEXT, orders INTEGER, PRIMARY KEY (itemset, product_id))
"""


def _stage(conn: duckdb.DuckDBPyConnection, sql: str, params: dict, store: sqlite3.Connection, table: str) -> None:
    """The rows of `sql` (DuckDB) into the store's temp table `table`."""
    marks = ", ".join("?" * len(conn.execute(f"DESCRIBE {sql}", params).fetchall()))
    _copy(conn, sql, params, store, f"INSERT INTO temp.{table} VALUES ({marks})")


def _whole(conn: duckdb.DuckDBPyConnection, store: sqlite3.Connection, params: dict) -> int:
    """Every row anew, in tables made again (indexes built after the rows: faster than row by row); returns the
    cards written."""
    for table in NEEDED:
        store.execute(f"DROP TABLE IF EXISTS {table}")
    for statement in _statements(STORE_DDL):
        store.execute(statement)
    cards = _copy(conn, cards_sql(), params, store, UPSERT_CARD)
    _copy(conn, IDENTIFIERS, {}, store, "INSERT INTO identifiers VALUES (?, ?, ?)")
    _copy(conn, names_sql(), {}, store, "INSERT INTO names VALUES (?, ?)")
    rec_whole(conn, store)
    for statement in _statements(STORE_INDEXES):
        store.execute(statement)
    return cards


def _changes(conn: duckdb.DuckDBPyConnection, store: sqlite3.Connection, params: dict) -> int:
    """The rows of the people of `touched_people` (and of the identifier values that found or may find them);
    returns the cards written (changed, new or deleted)."""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE touched_values AS {values_sql(PEOPLE)}")
    for statement in _statements(STAGED):
        store.execute(statement)
    staged = {
        "people": PEOPLE,
        "gone": f"{PEOPLE} EXCEPT SELECT user_id FROM customer.profile_360",
        "touched_values": "SELECT id_value FROM touched_values",
        "new_identifiers": f"{IDENTIFIERS} WHERE id_value IN (SELECT id_value FROM touched_values)",
        "new_names": names_sql(PEOPLE),
    }
    for table, sql in staged.items():
        _stage(conn, sql, {}, store, table)
    cards = _copy(conn, cards_sql(PEOPLE), params, store, UPSERT_CARD)
    cards += store.execute(GONE).rowcount
    for statement in _statements(CHANGES):
        store.execute(statement)
    rec_changes(conn, store, "SELECT person FROM basket_people")
    for table in staged:
        store.execute(f"DROP TABLE temp.{table}")
    return cards


def rec_whole(conn: duckdb.DuckDBPyConnection, store: sqlite3.Connection) -> None:
    """Every row of the recommendation state, into the store's empty tables."""
    _copy(conn, counts_sql(), {}, store, "INSERT INTO rec_counts VALUES (?, ?, ?)")
    _copy(conn, baskets_sql(), {}, store, "INSERT INTO baskets VALUES (?, ?, ?)")
    _copy(conn, large_items_sql(), {}, store, "INSERT INTO large_items VALUES (?, ?, ?)")


def rec_changes(conn: duckdb.DuckDBPyConnection, store: sqlite3.Connection, people: str) -> None:
    """The recommendation state of `people` (a query of one column `person`: those whose baskets changed) replaced:
    their baskets and large orders, and the counts of every itemset a basket of theirs that changed holds."""
    for statement in _statements(REC_STAGED):
        store.execute(statement)
    staged = {"basket_people": people, "new_baskets": baskets_sql(people), "new_large_items": large_items_sql(people)}
    for table, sql in staged.items():
        _stage(conn, sql, {}, store, table)
    changed = store.execute(CHANGED_BASKETS).fetchone()[0]
    conn.execute(CHANGED_ITEMSETS, {"changed": changed})
    recounted = {
        "recounted": f"SELECT {ITEMSET_KEY} FROM serving_itemsets",
        "new_counts": counts_sql("SELECT itemset FROM serving_itemsets"),
    }
    for table, sql in recounted.items():
        _stage(conn, sql, {}, store, table)
    for statement in _statements(REC_CHANGES):
        store.execute(statement)
    for table in staged | recounted:
        store.execute(f"DROP TABLE temp.{table}")
    conn.execute("DROP TABLE serving_itemsets")


def publish(conn: duckdb.DuckDBPyConnection, path: Path, rules, rebuild: bool = False) -> dict:
    """Brings the store at `path` up to date with the warehouse (see the module's doc); returns what it did: the
    people published, and the cards it wrote (new, changed or deleted: an unchanged card is not written again).
    Leaves temp table `serving_published(person)` (None: everyone) for the check."""
    params = prepare(conn, rules)
    update = touched.start(conn, CONSUMER, list(touched.SOURCES), rules_hash(rules), rebuild)
    store, held = open_store(path)
    try:
        if not update.whole and not (
            held
            and held[0] == SHAPE
            and held[2] == update.rules_hash
            and update.since <= (held[1] or -1) <= update.upto
        ):
            update = replace(update, since=None)
        if not update.whole:
            touched.collect(conn, update, BASKET_SOURCES, "basket_people")
        # as a TIMESTAMP reads in DuckDB's JSON (the card's format before the store)
        published_at = conn.execute("SELECT $now::TIMESTAMP::VARCHAR", {"now": datetime.now(UTC).replace(tzinfo=None)})
        published_at = published_at.fetchall()[0][0]
        as_of = conn.execute(AS_OF).fetchall()[0][0]
        conn.execute(
            "CREATE OR REPLACE TEMP TABLE serving_published AS "
            + ("SELECT NULL::VARCHAR AS person" if update.whole else PEOPLE)
        )
        store.execute("BEGIN IMMEDIATE")
        try:
            cards = (_whole if update.whole else _changes)(conn, store, params)
            store.execute("DELETE FROM info")
            store.execute(
                "INSERT INTO info VALUES (?, ?, ?, ?, ?)",
                (SHAPE, published_at, as_of, update.upto, update.rules_hash),
            )
            store.execute("COMMIT")
        except BaseException:
            store.execute("ROLLBACK")
            raise
    finally:
        store.close()
    with transaction(conn):  # only now: the store holds these people
        touched.finish(conn, update)
    people = count(conn, "SELECT 1 FROM customer.profile_360" if update.whole else PEOPLE)
    return {"update": "rebuilt whole" if update.whole else "incremental", "people": people, "cards_written": cards}


def _statements(script: str) -> list[str]:
    return [statement for statement in script.split(";") if statement.strip()]


def differences(conn: duckdb.DuckDBPyConnection, path: Path, rules) -> dict:
    """Where the store and the warehouse differ (`tables_differing`, "none" when nowhere): the cards' and
    identifiers' row counts (and the counts' and baskets' recommendations are computed from) against the warehouse's
    tables, the day it is as of, and, byte for byte, the cards, identifiers and names of up to SAMPLE people just
    published (`serving_published`) and SAMPLE people of everyone (drawn anew each publish), rebuilt from the
    warehouse; and the recommendations of REC_SAMPLE of them, computed by a lookup and by the warehouse's view."""
    params = prepare(conn, rules)
    try:
        store = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True, isolation_level=None, timeout=60)
        store.execute("BEGIN")
        held = {table: store.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] for table in STORE_TABLES}
        published_at, as_of = store.execute("SELECT published_at, as_of FROM info").fetchone()
    except sqlite3.Error as error:
        return {"tables_differing": f"the store cannot be read ({error})", "people_compared": 0}
    try:
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS serving_published (person VARCHAR)")
        conn.execute(
            """CREATE OR REPLACE TEMP TABLE serving_sample AS
               SELECT person FROM (SELECT person FROM serving_published WHERE person IS NOT NULL
                                   ORDER BY hash(person, $salt) LIMIT $n)
               UNION SELECT user_id FROM (SELECT user_id FROM customer.profile_360 ORDER BY hash(user_id, $salt) LIMIT $n)""",
            {"salt": published_at, "n": SAMPLE},
        )
        sample = "SELECT person FROM serving_sample"
        people = [person for (person,) in conn.execute(f"{sample} ORDER BY person").fetchall()]
        wanted = json.dumps(people)
        # the tables the store copies (names are derived from the profiles: compared for the sample only, as
        # counting them means reading every profile's name and email)
        warehouse = {
            "cards": count(conn, "SELECT 1 FROM customer.profiles"),
            "identifiers": count(conn, "SELECT 1 FROM customer.identifiers"),
            "rec_counts": count(conn, "SELECT 1 FROM customer.rec_counts"),
            "baskets": count(conn, "SELECT 1 FROM customer.rec_baskets"),
        }
        differing = [table for table in warehouse if held[table] != warehouse[table]]
        if as_of != conn.execute(AS_OF).fetchall()[0][0]:
            differing.append("info")
        of_sample = f"WHERE {_of(sample, 'user_id')}"
        compared = {
            "cards": (cards_sql(sample), params),
            "identifiers": (f"{IDENTIFIERS} {of_sample}", {}),
            "names": (f"SELECT * FROM ({names_sql(sample)})", {}),
        }
        for table, (sql, sql_params) in compared.items():
            stored = store.execute(
                f"SELECT * FROM {table} WHERE user_id IN (SELECT value FROM json_each(?))", (wanted,)
            ).fetchall()
            if Counter(stored) != Counter(conn.execute(sql, sql_params).fetchall()) and table not in differing:
                differing.append(table)
        # the recommendations of some of them, computed from the store as a lookup does and from the warehouse
        stored = [
            (person, r["product_id"], r["score"], r["rank"])
            for person in people[:REC_SAMPLE]
            for r in ranked(store.execute(RECOMMENDED, (person,)).fetchall())
        ]
        of_ranked = f"SELECT person FROM serving_sample ORDER BY person LIMIT {REC_SAMPLE}"
        if (
            sorted(stored)
            != conn.execute(f"SELECT * FROM ({recommend.recommendations_sql(of_ranked)}) ORDER BY ALL").fetchall()
        ):
            differing.append("recommendations")
    finally:
        store.close()
    return {"tables_differing": ", ".join(differing) or "none", "people_compared": len(people)}
