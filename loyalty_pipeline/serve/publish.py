"""Publishing the serving store (serving.py): the rows the warehouse holds for it (cards.py), written into SQLite.

A publish is one SQLite write transaction. It replaces the cards, identifiers and names of the people the change
log (touched.py) holds since the store's last publish, so a day costs its people, not the customer base; a store
with no mark, another shape or other rules, one that cannot be read, or a rebuild is published whole (still one
transaction, in place: readers keep the file they opened). The consumer's mark moves in the warehouse only after
the SQLite commit: a failed publish leaves both as they were, and a mark that failed to move after the commit
re-applies the same people next time, which changes nothing. The store also records the mark it holds, so a store
older than the mark (copied back, another warehouse's) is published whole.
"""

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from loyalty_pipeline.domain.customer import recommend
from loyalty_pipeline.lib import touched
from loyalty_pipeline.lib.sql import load
from loyalty_pipeline.lib.warehouse import count, transaction
from loyalty_pipeline.serve.cards import (
    AS_OF,
    IDENTIFIERS,
    ITEMSET_KEY,
    baskets_sql,
    cards_sql,
    counts_sql,
    large_items_sql,
    names_sql,
    prepare,
    values_sql,
)
from loyalty_pipeline.serve.serving import (
    NEEDED,
    SHAPE,
    STORE_DDL,
    STORE_INDEXES,
)

_SQL = load(__file__)  # publish.sql
UPSERT_CARD = _SQL["upsert_card"]
CHANGES = _SQL["changes"]
REC_CHANGES = _SQL["rec_changes"]
CHANGED_BASKETS = _SQL["changed_baskets"]
STAGED = _SQL["staged"]
REC_STAGED = _SQL["rec_staged"]

CONSUMER = "serving"


BATCH = 10_000  # rows fetched from DuckDB and written to SQLite at a time


PEOPLE = "SELECT person FROM touched_people"


# Whose recommendation state (baskets) the store re-syncs: what changes baskets (purchases, merges), and the people
# whose baskets an update changed after the store's last publish. Not every touched person: a click changes a card,
# never a basket. (The baskets log alone misses a basket that a whole rebuild of the state, after an engine switch,
# compared with an older state than the store's.)
BASKET_SOURCES = ["purchases", "identity", "baskets"]


def rebuilding(tags: dict) -> bool:
    """Whether a run asks every consumer to rebuild whole (`loyalty-pipeline materialize --rebuild`)."""
    return tags.get(touched.REBUILD_TAG) == "true"


def rules_hash(rules) -> str:
    """What the store's rows are built with: another hash publishes it whole."""
    tiers = [[tier.model_dump() for tier in rules.tiers], rules.tier_policy.model_dump()]
    return touched.rules_hash(
        SHAPE, STORE_DDL, cards_sql(), cards_sql(PEOPLE), names_sql(), IDENTIFIERS, tiers, rules.stamp_card.model_dump(),
        counts_sql(), baskets_sql(), large_items_sql(), recommend.RULES,
    )  # fmt: skip


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


# The touched people's and values' rows as the warehouse holds them now, staged (temp.new_*), then: the stored rows
# of them the warehouse no longer holds deleted, the new or changed ones written.
GONE = "DELETE FROM cards WHERE user_id IN (SELECT person FROM temp.gone)"


CHANGED = """SELECT unnest(from_json($changed, '[["VARCHAR"]]')) AS items"""


CHANGED_ITEMSETS = f"""CREATE OR REPLACE TEMP TABLE serving_itemsets AS SELECT DISTINCT itemset
FROM ({recommend.itemsets_sql(CHANGED)})"""


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
