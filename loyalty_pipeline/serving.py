"""The serving copy: what lookups read (`loyalty-pipeline profile`, the customer 360 app), never the warehouse.

A publish writes a new file and renames it over the old one. A reader keeps the file it opened, and opens the new
one when the name points to another file, so it never blocks on a run and never sees half of one. Nothing here
imports Dagster: the app starts in a fraction of a second.
"""

import os
import threading
from pathlib import Path

import duckdb

# Copied as they are from the warehouse (the serving check compares them); `customer.cards` is built beside them.
SERVED_TABLES = ["customer.profile_360", "customer.recommendations", "customer.identifiers"]
LEDGER_ROWS = 50  # the most recent ledger rows a card shows
RECENT_EVENTS = 10  # the most recent purchases and clicks a card shows


def warehouse_path(env: dict[str, str]) -> str:
    """The warehouse file the LOYALTY_* variables name (SPEC §2 defaults)."""
    data_dir = env.get("LOYALTY_DATA_DIR", "").strip() or "data"
    return env.get("LOYALTY_WAREHOUSE", "").strip() or str(Path(data_dir) / "warehouse.duckdb")


def serving_path(database: str) -> Path:
    """The read-only copy of the 360 tables beside the warehouse (warehouse.duckdb -> warehouse.serving.duckdb)."""
    path = Path(database)
    return path.with_name(path.stem + ".serving" + path.suffix)


# One card per customer: everything a service desk sees, as one JSON document, built when a copy is published.
# Reads the warehouse, with `card_tiers(name, above)` and `$stamp_product`, `$cycle`, `$published_at` from the rules.
CARDS = f"""
WITH ids AS (SELECT id_value, customer_id AS user_id FROM identity.current_ids),
ledger AS (
    SELECT user_id, list({{'occurred_at': occurred_at, 'points': points, 'kind': kind, 'expires_at': expires_at}}
                         ORDER BY occurred_at DESC, txn_id DESC)[:{LEDGER_ROWS}] AS rows
    FROM points.point_transactions GROUP BY user_id
), journeys AS (
    SELECT customer_id AS user_id,
           list({{'journey_id': journey_id, 'node': node, 'entered_at': entered_at}} ORDER BY journey_id) AS nodes
    FROM (SELECT journey_id, customer_id, arg_max(node, (entered_at, CASE WHEN node = 'end' THEN 4 WHEN node = 'goal'
                 THEN 3 WHEN node LIKE '%:exit:%' THEN 2 WHEN node LIKE '%:step:%' THEN 1 ELSE 0 END, node)) AS node,
                 max(entered_at) AS entered_at
          FROM journey.journey_state GROUP BY ALL)
    GROUP BY customer_id
), activations AS (
    SELECT customer_id AS user_id,
           list({{'journey_id': journey_id, 'activation': activation, 'activated_on': activated_on}}
                ORDER BY activated_on DESC, journey_id, activation) AS rows
    FROM journey.activations GROUP BY customer_id
), recommended AS (
    SELECT user_id, list({{'product_id': product_id, 'score': score, 'rank': rank}} ORDER BY rank) AS rows
    FROM customer.recommendations GROUP BY user_id
), events AS (
    SELECT coalesce(ids.user_id, p.user_id) AS user_id, p.purchased_at AS happened_at,
           CASE WHEN p.returned_at IS NULL THEN 'purchase' ELSE 'purchase (returned)' END AS what, p.product_id, p.price
    FROM loyalty.enriched_purchases AS p LEFT JOIN ids ON ids.id_value = p.user_id
    UNION ALL
    SELECT coalesce(ids.user_id, a.user_id), a.event_ts, a.event_type, a.product_id, NULL
    FROM raw.user_activity AS a LEFT JOIN ids ON ids.id_value = a.user_id WHERE NOT a.tombstone
), recent AS (
    SELECT user_id, list({{'at': happened_at, 'what': what, 'product_id': product_id, 'price': price}}
                         ORDER BY happened_at DESC, what, product_id) AS rows
    FROM (SELECT * FROM events QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY happened_at DESC, what, product_id)
                                       <= {RECENT_EVENTS})
    GROUP BY user_id
)
SELECT profile.user_id, json_object(
    'copy', json_object('published_at', $published_at, 'as_of', profile.as_of),
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
    'recommendations', coalesce(recommended.rows, []),
    'recent_activity', coalesce(recent.rows, []),
    'profile', to_json(profile)
)::VARCHAR AS card
FROM customer.profile_360 AS profile
LEFT JOIN loyalty.caffeine_index AS stamps USING (user_id)
LEFT JOIN points.point_balances AS balance USING (user_id)
LEFT JOIN ledger USING (user_id)
LEFT JOIN journeys USING (user_id)
LEFT JOIN activations USING (user_id)
LEFT JOIN recommended USING (user_id)
LEFT JOIN recent USING (user_id)
ORDER BY profile.user_id
"""

CARD = "SELECT card FROM customer.cards WHERE user_id = $id"

# The people an identifier that is no profile's id may find through the id graph: `$as_is` (trimmed) and
# `$lowered` (emails and names are kept lower-case). Kept simple so the index on id_value answers it.
IDENTIFIED = "SELECT id_type, id_value, user_id FROM customer.identifiers WHERE id_value IN ($as_is, $lowered)"
# Every profile's name and email as a lookup finds them (trimmed, lower-case), built when a copy is published: the
# id graph keeps a name (or a value many accounts share) for one person only, so two Sams need this to be seen.
NAMES = """
SELECT lower(trim(name)) AS value, user_id FROM customer.profile_360 WHERE name IS NOT NULL
UNION ALL
SELECT lower(trim(email)), user_id FROM customer.profile_360 WHERE email IS NOT NULL
"""
NAMED = "SELECT user_id FROM customer.names WHERE value = $lowered"
CANDIDATES = """SELECT user_id, name, email, reward_level FROM customer.profile_360 WHERE list_contains($ids, user_id)
ORDER BY user_id"""
# What a lookup reads: a database without them was not published by `loyalty-pipeline materialize`.
NEEDED = ["customer.cards", "customer.copy_info", "customer.identifiers", "customer.names", "customer.profile_360"]

# Up to 20 people whose id, name or email starts with the query (names and emails lower-case).
SEARCH = """
SELECT user_id, name, email, reward_level FROM customer.profile_360
WHERE user_id IN (
    SELECT user_id FROM customer.identifiers
    WHERE id_type IN ('user_id', 'customer_key', 'email', 'name')
      AND id_value >= lower(trim($q)) AND id_value < lower(trim($q)) || chr(1114111)
    UNION
    SELECT user_id FROM customer.identifiers
    WHERE id_type IN ('user_id', 'customer_key') AND id_value >= trim($q) AND id_value < trim($q) || chr(1114111)
)
ORDER BY user_id LIMIT 20
"""


class NotPublished(Exception):
    """No serving copy yet, or one that cannot be read: the message says what to run."""


class Ambiguous(Exception):
    """An identifier that finds several people: `candidates` holds their user_id, name, email and reward_level."""

    def __init__(self, identifier: str, candidates: list[dict]):
        super().__init__(f"{identifier!r} finds {len(candidates)} customers: look one up by id")
        self.candidates = candidates


class ServingCopy:
    """Read-only lookups on the current serving copy. Each thread keeps a cursor on the copy it last saw, and moves
    to the new one when a publish renamed another file over the path (checked with one stat a lookup)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._opened: tuple[tuple, duckdb.DuckDBPyConnection] | None = None
        self._local = threading.local()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise NotPublished(f"no serving copy at {self.path}: run `loyalty-pipeline materialize` first") from None
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if getattr(self._local, "stamp", None) != stamp:
            with self._lock:
                if self._opened is None or self._opened[0] != stamp:
                    # attached to a new in-memory database: `connect(path)` would reuse the file it opened
                    conn = duckdb.connect(config={"threads": 1})
                    try:
                        conn.execute("ATTACH $path AS copy (READ_ONLY)", {"path": str(self.path)})
                        held = conn.execute(
                            "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE database_name = 'copy'"
                        ).fetchall()
                    except duckdb.Error as error:
                        conn.close()
                        raise self._unreadable(error) from None
                    if missing := sorted(set(NEEDED) - {name for (name,) in held}):
                        conn.close()
                        raise NotPublished(
                            f"the serving copy {self.path} has no {', '.join(missing)} (not a serving copy, or "
                            "one an older version published): "
                            "run `loyalty-pipeline materialize` to publish it again"
                        )
                    self._opened = (stamp, conn)  # the old copy closes when its last cursor goes
                self._local.stamp, self._local.cursor = stamp, self._opened[1].cursor()
                self._local.cursor.execute("USE copy")
        return self._local.cursor

    def _unreadable(self, error: duckdb.Error) -> NotPublished:
        return NotPublished(
            f"the serving copy {self.path} cannot be read ({str(error).splitlines()[0]}): "
            "run `loyalty-pipeline materialize` to publish it again"
        )

    def _rows(self, sql: str, params: dict | None = None) -> duckdb.DuckDBPyConnection:
        cursor = self._cursor()
        try:
            return cursor.execute(sql, params or {})
        except (duckdb.CatalogException, duckdb.BinderException) as error:  # a copy of another shape
            raise self._unreadable(error) from None

    def card(self, identifier: str) -> str | None:
        """The customer's card as JSON text, or None for an identifier nobody has; `Ambiguous` when it finds several
        people. A profile's own id (most lookups) is one indexed read and always finds that profile; any other
        identifier is looked up in the id graph and among the profiles' names and emails."""
        found = self._rows(CARD, {"id": identifier}).fetchall()
        if found:
            return found[0][0]
        as_is = identifier.strip()
        lowered = as_is.lower()
        people = {
            user_id
            for id_type, id_value, user_id in self._rows(IDENTIFIED, {"as_is": as_is, "lowered": lowered}).fetchall()
            if id_value == (lowered if id_type in ("email", "name") else as_is)
        }
        people |= {user_id for (user_id,) in self._rows(NAMED, {"lowered": lowered}).fetchall()}
        if len(people) > 1:
            cursor = self._rows(CANDIDATES, {"ids": sorted(people)})
            names = [column[0] for column in cursor.description]
            raise Ambiguous(identifier, [dict(zip(names, row, strict=True)) for row in cursor.fetchall()])
        found = self._rows(CARD, {"id": people.pop()}).fetchall() if people else []
        return found[0][0] if found else None

    def search(self, query: str) -> list[dict]:
        cursor = self._rows(SEARCH, {"q": query})
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def published_at(self) -> str:
        return str(self._rows("SELECT published_at FROM customer.copy_info").fetchall()[0][0])
