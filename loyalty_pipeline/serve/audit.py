"""Whether the serving store holds what the warehouse holds: the check run after each publish."""

import json
import sqlite3
from collections import Counter
from pathlib import Path

import duckdb

from loyalty_pipeline.domain.customer import recommend
from loyalty_pipeline.lib.warehouse import count
from loyalty_pipeline.serve.cards import AS_OF, IDENTIFIERS, cards_sql, names_sql, of_people, prepare
from loyalty_pipeline.serve.serving import (
    RECOMMENDED,
    ranked,
)

SAMPLE = 1_000  # people the check compares beyond the counts: this many just published, this many of everyone


STORE_TABLES = ["cards", "identifiers", "names", "rec_counts", "baskets"]


REC_SAMPLE = 50  # people whose recommendations the check computes both ways (~2 ms each after a year)


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
        of_sample = f"WHERE {of_people(sample, 'user_id')}"
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
