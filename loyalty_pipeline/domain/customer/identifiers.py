"""customer.identifiers: every identifier the id graph knows and the person it finds now, what a lookup by any id,
email or name reads; updated for the values of the people the change log holds."""

import duckdb

from loyalty_pipeline.lib import touched
from loyalty_pipeline.lib.sql import load
from loyalty_pipeline.lib.warehouse import transaction

_SQL = load(__file__)  # identifiers.sql
IDENTIFIERS = _SQL["identifiers"]
TOUCHED_VALUES = _SQL["touched_values"]
IDENTIFIERS_OF_VALUES = _SQL["identifiers_of_values"]


# The identifiers a lookup finds: new links, and every link of the people a merge or a rebuilt day moved.
IDENTIFIER_SOURCES = ["identity", "identifiers"]


def update(conn: duckdb.DuckDBPyConnection, rebuild: bool) -> None:
    """customer.identifiers for the values linked to the people touched since its last update (or whole)."""
    pending = touched.start(conn, "customer.identifiers", IDENTIFIER_SOURCES, touched.rules_hash(IDENTIFIERS), rebuild)
    with transaction(conn):
        if pending.whole:
            conn.execute(f"CREATE OR REPLACE TABLE customer.identifiers AS {IDENTIFIERS}")
        else:
            conn.execute(f"CREATE OR REPLACE TEMP TABLE touched_values AS {TOUCHED_VALUES}")
            conn.execute("DELETE FROM customer.identifiers WHERE id_value IN (SELECT id_value FROM touched_values)")
            conn.execute(f"INSERT INTO customer.identifiers BY NAME {IDENTIFIERS_OF_VALUES}")
        touched.finish(conn, pending)
