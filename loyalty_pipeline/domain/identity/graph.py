"""One day of identity resolution, in SQL: which identifiers belong to one person (connected components).

Every record that names a person (a users message, a customers export row, a purchase, a redemption, a click) is a
set of identifiers. Strong identifiers (`identity.link_on`, and every event key) are matched by value across types,
so a purchase keyed by an email or an account id joins that account; all of a record's strong identifiers are linked.
A weak identifier (`identity.link_if_unique`, a name) links an event key of equal value to the one account carrying
it, and only to an account-less profile; a value carried by several accounts links nothing.

A day reads only the identifiers seen that day and the components they touch, so its cost follows its new
identifiers. The graph is insert-only and point-in-time: an identifier's row holds from its `linked_on` day until a
later row of the same identifier replaces it (a merge). A component's id is its earliest account id when it has one,
otherwise its earliest identifier.
"""

from datetime import date, timedelta

import duckdb

from loyalty_pipeline.domain.config import Identity
from loyalty_pipeline.domain.identity.identity import (
    CUSTOMERS_RECORD,
    PLACEHOLDERS,
    ids_as_of,
    is_placeholder,
    key_value,
)
from loyalty_pipeline.lib import touched
from loyalty_pipeline.lib.chain import Window, mark_built, publish
from loyalty_pipeline.lib.sql import load
from loyalty_pipeline.lib.warehouse import count, first_source_day_before

_SQL = load(__file__)  # graph.sql
SETTLED = _SQL["settled"]
CROWDED = _SQL["crowded"]
STRONG_EDGES = _SQL["strong_edges"]
ACCOUNT_VERTICES = _SQL["account_vertices"]
CANONICAL = _SQL["canonical"]
DAY_ROWS = _SQL["day_rows"]
DAY_MERGES = _SQL["day_merges"]
DAY_TOUCHED = _SQL["day_touched"]
DAY_IDENTIFIERS = _SQL["day_identifiers"]

# The identifiers of the day's records (the customers export: its rows not applied before, a row edited in place
# being a new record). An account id or key that is an email is also a key in lower-case, so it meets the email of
# an account whatever its case; the raw value stays beside it for display and lookups by what was keyed.
OBSERVED = f"""
CREATE OR REPLACE TEMP TABLE observed AS
WITH records AS (
    SELECT 'users:' || kafka_partition || ':' || kafka_offset AS record, event_ts AS seen_at,
           [{{'t': 'user_id', 'v': user_id}}, {{'t': 'email', 'v': email}}, {{'t': 'card_id', 'v': card_id}},
            {{'t': 'phone', 'v': phone}}, {{'t': 'name', 'v': name}}] AS ids
    FROM raw.users WHERE day = $day AND NOT tombstone
    UNION ALL
    SELECT record, $day::TIMESTAMP, [{{'t': 'user_id', 'v': user_id}}, {{'t': 'email', 'v': email}},
                                     {{'t': 'name', 'v': name}}]
    FROM (SELECT *, {CUSTOMERS_RECORD} AS record FROM raw.customers)
    WHERE record NOT IN (SELECT record FROM identity.export_records WHERE day < $day)
    UNION ALL
    SELECT 'purchases:' || kafka_partition || ':' || kafka_offset, event_ts,
           [{{'t': 'customer_key', 'v': user_id}}, {{'t': 'email', 'v': email}}, {{'t': 'card_id', 'v': card_id}},
            {{'t': 'phone', 'v': phone}}]
    FROM raw.purchases WHERE day = $day AND NOT tombstone
    UNION ALL
    SELECT 's3:' || s3_key || ':' || row_no, purchased_at, [{{'t': 'customer_key', 'v': user_id}}]
    FROM raw.historical_purchases WHERE day = $day
    UNION ALL
    SELECT 'redemptions:' || kafka_partition || ':' || kafka_offset, event_ts, [{{'t': 'customer_key', 'v': user_id}}]
    FROM raw.redemptions WHERE day = $day AND NOT tombstone
    UNION ALL
    SELECT 'user_activity:' || kafka_partition || ':' || kafka_offset, event_ts,
           [{{'t': 'customer_key', 'v': user_id}}]
    FROM raw.user_activity WHERE day = $day AND NOT tombstone
), identifiers AS (
    SELECT record, seen_at, id.t AS id_type,
           CASE WHEN id.t IN ('email', 'name') THEN lower(trim(id.v)) ELSE trim(id.v) END AS id_value,
           CASE WHEN list_contains($weak, id.t) THEN 'weak' ELSE 'strong' END AS strength
    FROM (SELECT record, seen_at, unnest(ids) AS id FROM records)
    WHERE (id.t = 'customer_key' OR list_contains($link_on, id.t) OR list_contains($weak, id.t))
      AND nullif(trim(id.v), '') IS NOT NULL
)
-- a name may be a word like "Na" or "Nil": names link only when one account carries them, so they need no list
SELECT * FROM identifiers WHERE id_type = 'user_id' OR NOT {is_placeholder("id_value", words="id_type <> 'name'")}
UNION ALL
SELECT record, seen_at, 'customer_key', {key_value("id_value")}, 'strong' FROM identifiers
WHERE id_type IN ('user_id', 'customer_key') AND {key_value("id_value")} <> id_value
  AND NOT {is_placeholder("id_value")}
"""


# The people the day's strong values belonged to before the day.
KNOWN = f"""
CREATE OR REPLACE TEMP TABLE known AS {ids_as_of("SELECT id_value FROM observed WHERE strength = 'strong'")}
"""


def components(conn: duckdb.DuckDBPyConnection, into: str) -> None:
    """Temp table `into(vertex, component)`: every vertex of `edges` labelled with the least vertex it reaches. Each
    round gives a vertex the least label of its neighbours, until none changes: as many rounds as the longest path,
    a few in an id graph (a recursive UNION, which stops on cycles, is not portable: Spark recurses by UNION ALL)."""
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE component_links AS "
        "SELECT a, b FROM edges UNION SELECT b, a FROM edges UNION SELECT a, a FROM edges UNION SELECT b, b FROM edges"
    )
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {into} AS SELECT DISTINCT a AS vertex, a AS component FROM component_links"
    )
    while True:
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE component_round AS
                SELECT link.a AS vertex, min(neighbour.component) AS component
                FROM component_links AS link JOIN {into} AS neighbour ON neighbour.vertex = link.b GROUP BY link.a"""
        )
        changed = count(
            conn, f"SELECT 1 FROM component_round AS r JOIN {into} AS l USING (vertex) WHERE r.component <> l.component"
        )
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {into} AS SELECT vertex, component FROM component_round")
        if not changed:
            return


# Weak values of the day (seen on an account, or equal to an event key) and the people carrying them, as components
# after the strong links (`carrier`): one person makes the value usable, several make it ambiguous for good (so a
# common name is not looked at again).
WEAK_CARRIERS = f"""
CREATE OR REPLACE TEMP TABLE weak_carriers AS
WITH values_today AS (  -- weak values on today's accounts, and today's keys without an account so far
    (SELECT DISTINCT id_value FROM observed WHERE strength = 'weak'
     UNION
     SELECT DISTINCT lower(o.id_value) FROM observed AS o JOIN first_pass AS p ON p.vertex = 'v:' || o.id_value
     WHERE o.id_type = 'customer_key' AND p.component NOT IN (SELECT component FROM account_components))
    EXCEPT SELECT id_value FROM identity.ambiguous_values WHERE day < $day
), carried AS (  -- accounts carrying them: before the day, and today
    SELECT id_type, id_value, account FROM identity.weak_values
    WHERE day < $day AND id_value IN (SELECT id_value FROM values_today)
    UNION
    SELECT w.id_type, w.id_value, a.id_value FROM observed AS w
    JOIN observed AS a ON a.record = w.record AND a.id_type = 'user_id'
    WHERE w.strength = 'weak' AND w.id_value IN (SELECT id_value FROM values_today)
), carriers AS (
    SELECT c.id_value, coalesce(today.component, 'c:' || before.customer_id) AS carrier
    FROM carried AS c
    LEFT JOIN first_pass AS today ON today.vertex = 'v:' || c.account
    LEFT JOIN ({ids_as_of("SELECT account FROM carried")}) AS before ON before.id_value = c.account
)
SELECT id_value, count(DISTINCT carrier) AS people, any_value(carrier) AS carrier FROM carriers GROUP BY id_value
"""


WEAK_UNIQUE = "CREATE OR REPLACE TEMP TABLE weak_unique AS SELECT id_value, carrier FROM weak_carriers WHERE people = 1"


# Weak links: the account-less profiles keyed by such a value join its person.
WEAK_EDGES = f"""
INSERT INTO edges
WITH keys AS (  -- event keys equal to such a value: seen today, or known before
    SELECT DISTINCT id_value AS key FROM observed WHERE id_type = 'customer_key'
    UNION SELECT id_value FROM identity.id_graph
          WHERE id_type = 'customer_key' AND linked_on < $day AND lower(id_value) IN (SELECT id_value FROM weak_unique)
), key_components AS (
    SELECT keys.key, coalesce(today.component, 'c:' || before.customer_id) AS component
    FROM keys
    LEFT JOIN first_pass AS today ON today.vertex = 'v:' || keys.key
    LEFT JOIN ({ids_as_of("SELECT key FROM keys")}) AS before ON before.id_value = keys.key
)
SELECT DISTINCT k.component, u.carrier, true
FROM key_components AS k JOIN weak_unique AS u ON u.id_value = lower(k.key)
WHERE k.component <> u.carrier
  AND k.component NOT IN (SELECT vertex FROM account_vertices)  -- only an account-less profile takes a weak link
  AND k.component NOT IN (SELECT component FROM account_components)
"""


def build_day(conn: duckdb.DuckDBPyConnection, identity: Identity, window: Window, day: date) -> dict:
    """Resolves the day's identifiers and writes its rows in one transaction; returns counts for metadata."""
    on_day = {"day": day}
    params = {"day": day, "as_of": day - timedelta(days=1)}
    conn.execute(
        OBSERVED,
        {
            **on_day,
            "link_on": identity.link_on,
            "weak": identity.link_if_unique,
            "placeholders": PLACEHOLDERS,
            "ignore": identity.ignore_values,
        },
    )
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE export_today AS SELECT DISTINCT record FROM observed WHERE record LIKE 'customers:%'"
    )
    conn.execute(
        "DELETE FROM observed WHERE strength = 'strong' AND id_type <> 'user_id' "
        "AND id_value IN (SELECT id_value FROM identity.crowded_values WHERE day < $day)",
        on_day,
    )
    conn.execute(SETTLED, on_day)
    conn.execute(KNOWN, {"as_of": params["as_of"]})
    conn.execute(CROWDED, {**on_day, "max_accounts": identity.max_accounts_per_value})
    conn.execute(
        "DELETE FROM observed WHERE strength = 'strong' AND id_type <> 'user_id' "
        "AND id_value IN (SELECT id_value FROM crowded)"
    )
    conn.execute("DELETE FROM known WHERE id_value NOT IN (SELECT id_value FROM observed WHERE strength = 'strong')")
    conn.execute(STRONG_EDGES)
    conn.execute(ACCOUNT_VERTICES, on_day)
    components(conn, "first_pass")
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE account_components AS "
        "SELECT DISTINCT component FROM first_pass WHERE vertex IN (SELECT vertex FROM account_vertices)"
    )
    conn.execute(WEAK_CARRIERS, params)
    conn.execute(WEAK_UNIQUE)
    conn.execute(WEAK_EDGES, params)
    if count(conn, "SELECT 1 FROM edges WHERE weak"):
        components(conn, "final_pass")
    else:
        conn.execute("CREATE OR REPLACE TEMP TABLE final_pass AS FROM first_pass")
    conn.execute(CANONICAL, on_day)
    conn.execute(DAY_MERGES, on_day)
    conn.execute(DAY_ROWS, on_day)
    window.refuse_change(conn, day, "SELECT * FROM day_graph", "SELECT * FROM identity.id_graph WHERE linked_on = $day")
    publish(
        conn,
        [
            (touched.log_sql(DAY_TOUCHED, "identity", touched.NEXT_SEQ), on_day),
            # the sequence read before the transaction: Spark cannot read the log back after the write above
            (touched.log_sql(DAY_IDENTIFIERS, "identifiers"), {**on_day, "touched_seq": touched.next_seq(conn)}),
            ("DELETE FROM identity.id_graph WHERE linked_on = $day", on_day),
            ("DELETE FROM identity.weak_values WHERE day = $day", on_day),
            ("DELETE FROM identity.merges WHERE day = $day", on_day),
            ("DELETE FROM identity.ambiguous_values WHERE day = $day", on_day),
            ("DELETE FROM identity.crowded_values WHERE day = $day", on_day),
            ("INSERT INTO identity.crowded_values SELECT id_value, accounts, $day FROM crowded", on_day),
            ("INSERT INTO identity.ambiguous_values SELECT id_value, $day FROM weak_carriers WHERE people > 1", on_day),
            ("DELETE FROM identity.export_records WHERE day = $day", on_day),
            ("INSERT INTO identity.id_graph SELECT * FROM day_graph", {}),
            (
                """INSERT INTO identity.weak_values
                   SELECT DISTINCT w.id_type, w.id_value, a.id_value, w.record, $day FROM observed AS w
                   JOIN observed AS a ON a.record = w.record AND a.id_type = 'user_id' WHERE w.strength = 'weak'""",
                on_day,
            ),
            ("INSERT INTO identity.merges SELECT * FROM day_merges", {}),
            ("INSERT INTO identity.export_records SELECT record, $day FROM export_today", on_day),
            (mark_built("identity.graph_days"), on_day),
        ],
    )
    return {"merges": conn.execute("SELECT count(*) FROM day_merges").fetchall()[0][0]}


def first_event_before(conn: duckdb.DuckDBPyConnection, day: date) -> date | None:
    """The first day before `day` with a record naming a person, loaded or in the sources: the graph cannot start at
    `day` from nothing then."""
    return conn.execute(
        """SELECT min(day) FROM (
               SELECT min(day) AS day FROM raw.users WHERE day < $1
               UNION ALL SELECT min(day) FROM raw.purchases WHERE day < $1
               UNION ALL SELECT min(day) FROM raw.historical_purchases WHERE day < $1
               UNION ALL SELECT min(day) FROM raw.redemptions WHERE day < $1
               UNION ALL SELECT min(day) FROM raw.user_activity WHERE day < $1
               UNION ALL SELECT $2)""",
        [
            day,
            first_source_day_before(conn, day, ["users", "purchases", "redemptions", "user_activity"]),
        ],
    ).fetchall()[0][0]
