"""The change log of touched people: what lets a lifetime table cost what a run changed.

Every step that changes what a person's lifetime rows depend on (their purchases and returns, the id graph, the
ledger) appends (person, seq, source) rows to `changes.touched`: in the same transaction as its writes, or for the
ledger right after each day it writes (a run killed in between logs those days at its next start). A consumer
table (sales totals, balances, ...) keeps the last sequence it applied in `changes.applied`, with a hash of its
rules and SQL; in one transaction it deletes and recomputes the rows of the people logged after its mark, with the
same SQL as a full rebuild restricted to them, and advances its mark. A consumer with no mark, another hash, or
asked to rebuild (`loyalty-pipeline materialize --rebuild`) rebuilds whole.
"""

import hashlib
import json
from dataclasses import dataclass

import duckdb

from loyalty_pipeline.lib.warehouse import transaction

DDL = """
CREATE SCHEMA IF NOT EXISTS changes;
CREATE TABLE IF NOT EXISTS changes.touched (  -- people whose lifetime rows may have changed
    person VARCHAR NOT NULL, seq BIGINT NOT NULL, source VARCHAR NOT NULL  -- purchases | identity | ledger
);
CREATE TABLE IF NOT EXISTS changes.applied (  -- each consumer's last applied sequence, and what it was built with
    consumer VARCHAR NOT NULL, seq BIGINT NOT NULL, rules_hash VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS changes.logged (  -- a producer that logs after its own transactions: the last day logged
    producer VARCHAR NOT NULL, through DATE NOT NULL
);
"""

# The next sequence: above every logged and applied one, so pruning the log never reuses a number.
NEXT_SEQ = """(SELECT coalesce(max(seq), 0) + 1 FROM (
    SELECT seq FROM changes.touched UNION ALL SELECT seq FROM changes.applied))"""

# Who logs what (`source`): a consumer names the sources its rows read.
SOURCES = {
    "purchases": "enriched purchases and returns of the days a run wrote (old and new rows)",
    "identity": "both sides of a merge; every graph row of a rebuilt day",
    "identifiers": "the people a day's new graph rows link (a new email, card, ...)",
    "tiers": "members whose tier tables a rebuild, or a period or grace end, changed (tiers.py)",
    "ledger": "ledger rows of the days built, and lots that become available or expire on them",
    "activity": "clicks (raw.user_activity) of the days a run wrote (old and new rows)",
    "users": "users messages (raw.users) of the days a run wrote (old and new rows)",
    "customers": "customers export rows a run applied or withdrew",
    "journeys": "journey state and activations of the days a run wrote (old and new rows)",
    "baskets": "people whose baskets (what recommendations count, recommend.py) changed",
}

REBUILD_TAG = "loyalty/rebuild"  # a run tagged "true" rebuilds every consumer whole


def next_seq(conn: duckdb.DuckDBPyConnection) -> int:
    return conn.execute(f"SELECT {NEXT_SEQ}").fetchall()[0][0]


def log_sql(people: str, source: str, seq: str = "$touched_seq") -> str:
    """The statement logging the people of `people` (a query of one column `person`, constant SQL) under `source`
    (a constant) and `seq` (a parameter, or NEXT_SEQ for a one-statement log)."""
    return f"""INSERT INTO changes.touched
               SELECT DISTINCT person, {seq}, '{source}' FROM ({people}) AS logged WHERE person IS NOT NULL"""


def rules_hash(*parts) -> str:
    """What a consumer's rows are built with (its SQL, its rule values): another hash rebuilds it whole."""
    return hashlib.md5(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Update:
    consumer: str
    rules_hash: str
    upto: int  # the last sequence logged when the update started
    since: int | None  # the consumer's mark; None: rebuild whole

    @property
    def whole(self) -> bool:
        return self.since is None


def start(
    conn: duckdb.DuckDBPyConnection,
    consumer: str,
    sources: list[str],
    rules: str,
    rebuild: bool = False,
    collect_people: bool = True,
) -> Update:
    """What `consumer` must apply. Incremental: temp table `touched_people(person)` holds the people logged by
    `sources` since its mark, and the person each of them resolves to now (a merge moves their rows); unless
    `collect_people` is false (the caller collects them, or has them already)."""
    conn.execute(DDL)
    # the engine too: the other engine keeps the table elsewhere (DuckDB or the lake), so a switch rebuilds whole;
    # read through any wrapper (a timed connection is the same engine)
    rules = rules_hash(rules, getattr(conn, "engine", "duckdb"))
    # what every consumer applied is no longer needed
    conn.execute("DELETE FROM changes.touched WHERE seq <= (SELECT min(seq) FROM changes.applied)")
    upto = next_seq(conn) - 1
    marks = conn.execute(
        "SELECT seq FROM changes.applied WHERE consumer = $consumer AND rules_hash = $hash",
        {"consumer": consumer, "hash": rules},
    ).fetchall()
    since = None if rebuild or not marks else marks[0][0]
    update = Update(consumer, rules, upto, since)
    if collect_people and not update.whole:
        collect(conn, update, sources)
    return update


def collect(conn: duckdb.DuckDBPyConnection, update: Update, sources: list[str], table: str = "touched_people") -> None:
    """Temp table `table(person)`: the people logged by `sources` in the stretch `update` applies, and the person
    each of them resolves to now (a merge moves their rows)."""
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE {table} AS
            WITH logged AS (
                SELECT DISTINCT person FROM changes.touched
                WHERE seq > $since AND seq <= $upto AND list_contains($sources, source)
            )
            SELECT person FROM logged
            UNION  -- the person each resolves to now (identity.current_ids, read for these values only)
            SELECT arg_max(customer_id, linked_on) FROM identity.id_graph
            WHERE strength = 'strong' AND id_value IN (SELECT person FROM logged) GROUP BY id_value""",
        {"since": update.since, "upto": update.upto, "sources": sources},
    )


def finish(conn: duckdb.DuckDBPyConnection, update: Update) -> None:
    """Advances the consumer's mark (run it in the transaction that wrote its rows)."""
    conn.execute("DELETE FROM changes.applied WHERE consumer = $consumer", {"consumer": update.consumer})
    conn.execute(
        "INSERT INTO changes.applied VALUES ($consumer, $seq, $hash)",
        {"consumer": update.consumer, "seq": update.upto, "hash": update.rules_hash},
    )


def refresh(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    select,
    params: dict,
    update: Update,
    also: list[tuple[str, dict]] = (),
) -> None:
    """Brings `table` (rows keyed by `user_id`) up to date in one transaction: whole from `select(None)`, or the
    touched people's rows replaced by `select("SELECT person FROM touched_people")`; runs the statements `also`
    (what must change with the rows); then advances the mark."""
    with transaction(conn):
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {table.split('.')[0]}")
        if update.whole:
            conn.execute(f"CREATE OR REPLACE TABLE {table} AS {select(None)}", params)
        else:
            conn.execute(f"DELETE FROM {table} WHERE user_id IN (SELECT person FROM touched_people)")
            conn.execute(f"INSERT INTO {table} BY NAME {select('SELECT person FROM touched_people')}", params)
        for statement, statement_params in also:
            conn.execute(statement, statement_params)
        finish(conn, update)


def logged_through(conn: duckdb.DuckDBPyConnection, producer: str):
    """The last day whose people `producer` logged (None: none)."""
    return conn.execute(
        "SELECT max(through) FROM changes.logged WHERE producer = $producer", {"producer": producer}
    ).fetchall()[0][0]


def set_logged_through(conn: duckdb.DuckDBPyConnection, producer: str, day) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM changes.logged WHERE producer = $producer", {"producer": producer})
        conn.execute("INSERT INTO changes.logged VALUES ($producer, $day)", {"producer": producer, "day": day})
