"""The serving store: what lookups read (`loyalty-pipeline profile`, the customer 360 app), never the warehouse.

A SQLite file in WAL mode beside the warehouse, for many readers and one writer: a publish (`publish.py`) replaces
the rows of the people a run touched in one write transaction, and each lookup is one read transaction, so a
reader never blocks on a run and never sees half of one. Values that change with the calendar alone (when the
store was published, the day it is as of, the days since a last purchase) are kept once, in `info`, and put into a
card when it is read; so are its recommendations, computed from co-purchase counts the store keeps (a day's orders
change most lists, not most counts). Nothing here imports Dagster or DuckDB: the app starts in a fraction of a second.
"""

import json
import os
import sqlite3
import threading
import unicodedata
from pathlib import Path

SHAPE = 4  # the layout below: a store of another one is published again whole
STORE_DDL = """
CREATE TABLE info (shape INTEGER NOT NULL, published_at TEXT NOT NULL, as_of TEXT, seq INTEGER, rules_hash TEXT);
CREATE TABLE cards (  -- one per profile: the card (calendar values left null) and what search and candidates show
    user_id TEXT PRIMARY KEY, name TEXT, email TEXT, reward_level TEXT, last_purchase_on TEXT, card TEXT NOT NULL
);
-- without rowid: the key's index holds the row, so a search by prefix reads no table page
CREATE TABLE identifiers (id_type TEXT, id_value TEXT, user_id TEXT, PRIMARY KEY (id_type, id_value)) WITHOUT ROWID;
-- every profile's name and email folded (`folded`): what search and a lookup by name find
CREATE TABLE names (value TEXT NOT NULL, user_id TEXT NOT NULL, PRIMARY KEY (value, user_id)) WITHOUT ROWID;
-- what a card's recommendations are computed from when it is read (recommend.py): the co-purchase counts of the
-- small orders (an itemset is its products' hex(), comma-separated, in product order), every basket (its products
-- as a JSON array), and the products of the large ones
CREATE TABLE rec_counts (
    itemset TEXT, product_id TEXT, orders INTEGER NOT NULL, PRIMARY KEY (itemset, product_id)
) WITHOUT ROWID;
CREATE TABLE baskets (user_id TEXT, order_id TEXT, items TEXT NOT NULL, PRIMARY KEY (user_id, order_id)) WITHOUT ROWID;
CREATE TABLE large_items (
    product_id TEXT, order_id TEXT, user_id TEXT, PRIMARY KEY (product_id, order_id, user_id)
) WITHOUT ROWID;
"""
# Built after a whole publish's rows are in (faster than row by row), kept by every later publish.
STORE_INDEXES = """
CREATE INDEX identifiers_by_value ON identifiers (id_value);
CREATE INDEX identifiers_by_user ON identifiers (user_id);
CREATE INDEX names_by_user ON names (user_id);
CREATE INDEX cards_by_email ON cards (lower(trim(email)));
CREATE INDEX large_items_by_user ON large_items (user_id);
"""
NEEDED = ["baskets", "cards", "identifiers", "info", "large_items", "names", "rec_counts"]  # what a lookup reads

LEDGER_ROWS = 50  # the most recent ledger rows a card shows
RECENT_EVENTS = 10  # the most recent purchases and clicks a card shows


def warehouse_path(env: dict[str, str]) -> str:
    """The warehouse file the LOYALTY_* variables name (their defaults: README, Configuration)."""
    data_dir = env.get("LOYALTY_DATA_DIR", "").strip() or "data"
    return env.get("LOYALTY_WAREHOUSE", "").strip() or str(Path(data_dir) / "warehouse.duckdb")


def serving_path(database: str) -> Path:
    """The serving store beside the warehouse (warehouse.duckdb -> warehouse.serving.sqlite)."""
    path = Path(database)
    return path.with_name(path.stem + ".serving.sqlite")


# A card as published, with the calendar values of `info` filled in (json_set keeps every other byte and the keys'
# order): the same document a publish of every card on that day would hold.
CARD = """
SELECT json_set(card, '$.copy.published_at', info.published_at, '$.copy.as_of', info.as_of,
                '$.profile.days_since_last_purchase',
                CAST(julianday(info.as_of) - julianday(cards.last_purchase_on) AS INTEGER),
                '$.profile.as_of', info.as_of)
FROM cards, info WHERE cards.user_id = ?
"""
# A card's recommendations (docs/decisions.md, Customer 360), computed when it is read as recommend.py explains:
# the signed counts of the itemsets inside its interests (grown one product at a time, only through itemsets some
# order holds), plus the large orders meeting them, minus the customer's own orders meeting them. ?1: the card's
# user_id.
RECOMMENDED = """
WITH RECURSIVE interests(product_id) AS (
    SELECT DISTINCT value FROM cards, json_each(cards.card, '$.profile.activity_since_last_purchase')
    WHERE cards.user_id = ?1 AND value IS NOT NULL
), grown(itemset, last, size) AS (
    SELECT hex(product_id), product_id, 1 FROM interests
    WHERE EXISTS (SELECT 1 FROM rec_counts WHERE itemset = hex(interests.product_id))
    UNION ALL
    SELECT grown.itemset || ',' || hex(i.product_id), i.product_id, grown.size + 1
    FROM grown JOIN interests AS i ON i.product_id > grown.last
    WHERE EXISTS (SELECT 1 FROM rec_counts WHERE itemset = grown.itemset || ',' || hex(i.product_id))
), counted(product_id, orders) AS (
    SELECT c.product_id, CASE WHEN grown.size % 2 = 1 THEN c.orders ELSE -c.orders END
    FROM grown JOIN rec_counts AS c USING (itemset)
    UNION ALL
    SELECT item.value, 1
    FROM (SELECT DISTINCT order_id, user_id FROM large_items WHERE product_id IN (SELECT product_id FROM interests)) AS hit
    JOIN baskets USING (user_id, order_id), json_each(baskets.items) AS item
    UNION ALL
    SELECT item.value, -1 FROM baskets, json_each(baskets.items) AS item
    WHERE baskets.user_id = ?1
      AND EXISTS (SELECT 1 FROM json_each(baskets.items) AS x WHERE x.value IN (SELECT product_id FROM interests))
)
SELECT product_id, sum(orders) AS score FROM counted WHERE product_id NOT IN (SELECT product_id FROM interests)
GROUP BY product_id HAVING score > 0 ORDER BY score DESC, product_id LIMIT 5
"""


def ranked(rows: list[tuple]) -> list[dict]:
    """RECOMMENDED's rows as the card lists them, ranked as the warehouse's customer.recommendations ranks them."""
    return [{"product_id": product, "score": score, "rank": rank} for rank, (product, score) in enumerate(rows, 1)]


# The people an identifier that is no profile's id may find through the id graph: as given (trimmed) and lowered
# (emails and names are kept lower-case).
IDENTIFIED = "SELECT id_type, id_value, user_id FROM identifiers WHERE id_value IN (?, ?)"
# Every profile's name and email as a lookup finds them (`folded`): the id graph keeps a name (or a value many
# accounts share) for one person only, so two Sams need this to be seen.
NAMED = "SELECT user_id FROM names WHERE value = ?"
# The people a query names exactly by their profile's id or an email (not a name, which several people may carry,
# nor an older key, which is also a name in the source's data): one of them opens the card directly. ?1 the query
# trimmed, ?2 lowered.
EXACT = """
SELECT user_id FROM cards WHERE user_id = ?1
UNION SELECT user_id FROM identifiers WHERE id_type = 'email' AND id_value = ?2
UNION SELECT user_id FROM cards WHERE lower(trim(email)) = lower(?1)
"""
CANDIDATES = """SELECT user_id, name, email, reward_level FROM cards WHERE user_id IN (SELECT value FROM json_each(?))
ORDER BY user_id"""
PAGE = 20  # people a search lists; a hint says when more match
# The first PAGE + 1 people whose id, name or email starts with the query: ids as given, names and emails of the id
# graph lower-case (?1), every profile's name and email folded (?3); char(1114111) is the last code point, so the
# range is the prefix's.
SEARCH = """
SELECT user_id, name, email, reward_level FROM cards
WHERE user_id IN (
    SELECT user_id FROM identifiers
    WHERE id_type IN ('user_id', 'customer_key', 'email', 'name') AND id_value >= ?1 AND id_value < ?1 || char(1114111)
    UNION
    SELECT user_id FROM identifiers
    WHERE id_type IN ('user_id', 'customer_key') AND id_value >= ?2 AND id_value < ?2 || char(1114111)
    UNION
    SELECT user_id FROM names WHERE value >= ?3 AND value < ?3 || char(1114111)
)
ORDER BY user_id LIMIT 21
"""


class NotPublished(Exception):
    """No serving store yet, or one that cannot be read: the message says what to run."""


class Ambiguous(Exception):
    """An identifier that finds several people: `candidates` holds their user_id, name, email and reward_level."""

    def __init__(self, identifier: str, candidates: list[dict]):
        super().__init__(f"{identifier!r} finds {len(candidates)} customers: look one up by id")
        self.candidates = candidates


def _trimmed(text: str) -> str:
    return text.strip(" ")  # as the warehouse's trim() (spaces only)


def folded(text: str) -> str:
    """Trimmed, lower-case and without accents, as the warehouse's strip_accents(lower(trim(x))) writes `names`
    (both decompose and drop the combining marks): "Zoë" and "ZOE" find each other."""
    decomposed = unicodedata.normalize("NFD", _trimmed(text).lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


class ServingCopy:
    """Read-only lookups on the serving store. Each thread keeps one read-only connection; each lookup is one read
    transaction, so it sees the last publish committed when it began, whole. A store file replaced by another (a
    new file at the path) is opened anew, checked with one stat a lookup."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise NotPublished(f"no serving copy at {self.path}: run `loyalty-pipeline materialize` first") from None
        local = self._local
        if getattr(local, "file", None) != (stat.st_dev, stat.st_ino):
            if getattr(local, "conn", None) is not None:
                local.conn.close()
                local.conn = None
            local.conn, local.file = self._open(), (stat.st_dev, stat.st_ino)
        return local.conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path.absolute().as_uri() + "?mode=ro", uri=True, isolation_level=None, timeout=10)
        try:
            held = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = sorted(set(NEEDED) - held)
            shape = None if missing else conn.execute("SELECT max(shape) FROM info").fetchone()[0]
        except sqlite3.Error as error:
            conn.close()
            raise self._unreadable(error) from None
        if missing or shape != SHAPE:
            conn.close()
            lacking = f"has no {', '.join(missing)}" if missing else f"is of shape {shape}, not {SHAPE}"
            raise NotPublished(
                f"the serving copy {self.path} {lacking} (not a serving copy, or one an older version published): "
                "run `loyalty-pipeline materialize` to publish it again"
            )
        return conn

    def _unreadable(self, error: sqlite3.Error) -> NotPublished:
        return NotPublished(
            f"the serving copy {self.path} cannot be read ({str(error).splitlines()[0]}): "
            "run `loyalty-pipeline materialize` to publish it again"
        )

    def _read(self, lookup):
        """`lookup(query)` in one read transaction; `query(sql, params)` returns the rows and their column names."""
        conn = self._connection()
        try:
            conn.execute("BEGIN")
            try:

                def query(sql: str, params=()) -> tuple[list[tuple], list[str]]:
                    cursor = conn.execute(sql, params)
                    return cursor.fetchall(), [column[0] for column in cursor.description]

                return lookup(query)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as error:  # a store of another shape, or a broken file
            raise self._unreadable(error) from None

    def card(self, identifier: str) -> str | None:
        """The customer's card as JSON text, or None for an identifier nobody has; `Ambiguous` when it finds several
        people. A profile's own id (most lookups) is one indexed read and always finds that profile; any other
        identifier is looked up in the id graph and among the profiles' names and emails. Its recommendations are
        computed now, from the counts the store holds."""

        def card_of(query, user_id: str) -> str | None:
            found = query(CARD, (user_id,))[0]
            if not found:
                return None
            listed = json.dumps(ranked(query(RECOMMENDED, (user_id,))[0]))
            return query("SELECT json_set(?, '$.recommendations', json(?))", (found[0][0], listed))[0][0][0]

        def lookup(query):
            if found := card_of(query, identifier):
                return found
            as_is = identifier.strip()
            lowered = as_is.lower()
            people = {
                user_id
                for id_type, id_value, user_id in query(IDENTIFIED, (as_is, lowered))[0]
                if id_value == (lowered if id_type in ("email", "name") else as_is)
            }
            people |= {user_id for (user_id,) in query(NAMED, (folded(identifier),))[0]}
            if len(people) > 1:
                rows, names = query(CANDIDATES, (json.dumps(sorted(people)),))
                raise Ambiguous(identifier, [dict(zip(names, row, strict=True)) for row in rows])
            return card_of(query, people.pop()) if people else None

        return self._read(lookup)

    def exact(self, query: str) -> str | None:
        """The card of the one person whose id or email the query is, else None (nobody, or several)."""

        people = self._read(lambda run: run(EXACT, (_trimmed(query), _trimmed(query).lower()))[0])
        return self.card(people[0][0]) if len(people) == 1 else None

    def search(self, query: str) -> tuple[list[dict], bool]:
        """The first PAGE people whose id, name or email starts with the query, and whether more do."""
        params = (_trimmed(query).lower(), _trimmed(query), folded(query))
        rows, names = self._read(lambda run: run(SEARCH, params))
        return [dict(zip(names, row, strict=True)) for row in rows[:PAGE]], len(rows) > PAGE

    def published_at(self) -> str:
        return self._read(lambda run: run("SELECT published_at FROM info")[0])[0][0]
