"""The profile totals the journeys' criteria read, kept between runs: a run starts from the day before its first,
not from history; the profiles read them too when nothing changed since."""

from datetime import date, timedelta

import duckdb

from loyalty_pipeline.domain.customer.profiles import PROFILE_SOURCES, TOTALS
from loyalty_pipeline.domain.journey.journeys import DDL
from loyalty_pipeline.lib import touched


def restore_profile_totals(conn: duckdb.DuckDBPyConnection, first: date) -> date | None:
    """Temp `profile_totals` as of the day before `first` from the copy kept by the last run, when it is exactly
    that day; returns the day it is as of, or None. A copy as of `first` or later is dropped: rebuilding an earlier
    day may change what it summed. Temp `profile_totals_changed` collects whose totals the run's days change."""
    conn.execute("CREATE OR REPLACE TEMP TABLE profile_totals_changed (user_id VARCHAR)")
    kept = conn.execute("SELECT max(as_of) FROM journey.profile_totals_as_of").fetchall()[0][0]
    if kept == first - timedelta(days=1):
        conn.execute("CREATE OR REPLACE TEMP TABLE profile_totals AS SELECT * FROM journey.profile_totals")
        return kept
    if kept is not None and kept >= first:
        conn.execute("DELETE FROM journey.profile_totals_as_of")
    return None


def keep_profile_totals(conn: duckdb.DuckDBPyConnection, day: date, restored: bool) -> None:
    """Keep the totals as of the last day built, for the next run to start from: when the run started from the kept
    copy, only the rows of the people whose totals its days changed are replaced; the copy's mark is the last change
    logged (the profiles read the copy when nothing was logged since). The day is cleared first and written last, so
    a run killed in between leaves no copy (the next run sums from the start) rather than a wrong one."""
    conn.execute("DELETE FROM journey.profile_totals_as_of")
    if restored:
        conn.execute("DELETE FROM journey.profile_totals WHERE user_id IN (SELECT user_id FROM profile_totals_changed)")
        conn.execute(
            "INSERT INTO journey.profile_totals BY NAME "
            "SELECT * FROM profile_totals WHERE user_id IN (SELECT user_id FROM profile_totals_changed)"
        )
    else:
        conn.execute("CREATE OR REPLACE TABLE journey.profile_totals AS SELECT * FROM profile_totals")
    touched.finish(conn, touched.Update(KEPT_TOTALS, TOTALS_HASH, touched.next_seq(conn) - 1, None))
    conn.execute("INSERT INTO journey.profile_totals_as_of VALUES ($day)", {"day": day})


# The kept totals hold every change logged through their mark (kept in the change log's marks, as a consumer's).
KEPT_TOTALS = "journey.profile_totals"
TOTALS_HASH = touched.rules_hash(TOTALS)


def kept_totals_of(conn: duckdb.DuckDBPyConnection, as_of: date, people: str) -> bool:
    """Temp `profile_totals` of `people` (a query of one column `person`) from the kept totals, when they are as of
    `as_of` and nothing they read was logged after their mark (a run's journeys are built after its ledger, before
    its profiles); False, and nothing made, otherwise. A kept row costs its person, where summing their events from
    the start reads history."""
    conn.execute(DDL)
    kept = conn.execute("SELECT max(as_of) FROM journey.profile_totals_as_of").fetchall()[0][0]
    changed_since = conn.execute(  # no mark: NULL; the log keeps every row after the mark (touched.start prunes)
        """SELECT (SELECT count(*) FROM changes.touched WHERE seq > mark.seq AND list_contains($sources, source))
           FROM (SELECT max(seq) AS seq FROM changes.applied WHERE consumer = $consumer AND rules_hash = $hash) AS mark
           WHERE mark.seq IS NOT NULL""",
        {"consumer": KEPT_TOTALS, "hash": TOTALS_HASH, "sources": PROFILE_SOURCES},
    ).fetchall()
    if kept != as_of or changed_since != [(0,)]:
        return False
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE profile_totals AS "
        f"SELECT * FROM journey.profile_totals WHERE user_id IN (SELECT person FROM ({people}))"
    )
    return True
