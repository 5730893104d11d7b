"""One day of the point ledger, in SQL.

Each earn is a lot; uses, expiries and clawbacks take points from lots, and every piece they take is a row of
`points.lot_allocations`. What a return takes back depends on what is left of its own lot, and a refused use
changes what every later event sees, so the day is a fold over each customer's events in order (a recursive CTE
that runs all customers' n-th events in one step): its state is the customer's open lots and unpaid clawbacks.
"""

from datetime import date

import duckdb

from loyalty_pipeline.domain.config import Rules
from loyalty_pipeline.domain.loyalty import tiers
from loyalty_pipeline.domain.points import campaigns, event_points
from loyalty_pipeline.domain.points.fold import (
    DAY_ACTIVE,
    DAY_FOLD,
    DAY_FOLD_PIECES,
    DAY_LIST_FOLDED,
    DAY_OPEN_DEBTS,
    DAY_OPEN_LOTS,
    DAY_QUEUE,
    DAY_RUN,
    DAY_START,
    DAY_STEPS,
    DAY_TIMELINE,
    is_debt,
)
from loyalty_pipeline.lib.chain import Window, mark_built, publish
from loyalty_pipeline.lib.sql import load
from loyalty_pipeline.lib.warehouse import columns_of, count, first_source_day_before, row_json

_SQL = load(__file__)  # ledger.sql
DDL = _SQL["ddl"]
DAY_PEOPLE = _SQL["day_people"]
DAY_MOVES = _SQL["day_moves"]
DAY_REDEMPTIONS = _SQL["day_redemptions"]
DAY_EARNS = _SQL["day_earns"]
DAY_RETURNS = _SQL["day_returns"]
DAY_EVENTS = _SQL["day_events"]
NEW_ROWS = _SQL["new_rows"]
DAY_ALLOCATIONS = _SQL["day_allocations"]
REVISE_DAY = _SQL["revise_day"]


def _by_person(conn: duckdb.DuckDBPyConnection, table: str, into: str, day: date) -> None:
    """Temp table `into`: the rows of `table` on `day`, every column, with `user_id` the person their key resolves to
    (`day_people`)."""
    selected = ", ".join(
        "coalesce(p.customer_id, r.user_id) AS user_id" if name == "user_id" else f"r.{name}"
        for name, _ in columns_of(conn, table)
    )
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {into} AS SELECT {selected} FROM {table} AS r "
        "LEFT JOIN day_people AS p ON p.id_value = r.user_id WHERE r.day = $day",
        {"day": day},
    )


# A merge moves the merged profile's unpaid debts too: a `merge` pair (`merge-out:<debt>` settles it on the merged
# profile, `merge:<debt>` owes it on the person), taken at 00:00 from the person's open lots like a clawback, and
# what they cannot cover is the person's debt.
DAY_DEBT_MOVES = f"""
CREATE OR REPLACE TEMP TABLE day_debt_moves AS
SELECT debt.txn_id AS debt_txn_id, debt.user_id, merged.into_id, -debt.points - coalesce(sum(paid.points), 0) AS owed
FROM points.point_transactions AS debt
JOIN identity.merges AS merged ON merged.merged_id = debt.user_id AND merged.day = $day
LEFT JOIN points.lot_allocations AS paid ON paid.txn_id = debt.txn_id AND paid.day < $day
WHERE debt.day < $day AND {is_debt("debt")}
GROUP BY debt.txn_id, debt.user_id, merged.into_id, debt.points HAVING owed > 0
"""


def write_day(day: date) -> list[tuple[str, dict]]:
    """The day's rows replace the ledger's rows of that day: (statement, parameters) pairs for `publish`."""
    on_day = {"day": day}
    return [
        ("DELETE FROM points.point_transactions WHERE day = $day", on_day),
        ("DELETE FROM points.lot_allocations WHERE day = $day", on_day),
        ("DELETE FROM raw.rejected_records WHERE source = 'points:redemptions' AND day = $day", on_day),
        ("INSERT INTO points.point_transactions SELECT * FROM day_rows", {}),
        ("INSERT INTO points.lot_allocations SELECT * FROM day_allocations", {}),
        (
            """INSERT INTO raw.rejected_records
               SELECT 'points:redemptions', location, coalesce(refusal, 'insufficient_points'), raw, $day
               FROM day_redemptions
               WHERE refusal IS NOT NULL
                  OR redemption_id IN (SELECT e.ref FROM day_steps WHERE e.kind = 'use' AND refused)""",
            on_day,
        ),
        (mark_built("points.ledger_days"), on_day),
    ]


def first_event_before(conn: duckdb.DuckDBPyConnection, day: date) -> date | None:
    """The first day with a ledger event before `day`: the ledger cannot start at `day` from nothing after one.
    Loaded events say so, and so do the sources (on an empty warehouse, a run of a later day must not start the
    ledger from zero)."""
    return conn.execute(
        """SELECT min(day) FROM (
               SELECT min(day) AS day FROM loyalty.enriched_purchases WHERE day < $1
               UNION ALL SELECT min(day) FROM raw.redemptions WHERE day < $1
               UNION ALL SELECT min(day) FROM raw.users WHERE tombstone AND day < $1
               UNION ALL SELECT min(day) FROM raw.events WHERE day < $1
               UNION ALL SELECT $2)""",
        [day, first_source_day_before(conn, day, ["purchases", "redemptions", "users", "events"])],
    ).fetchall()[0][0]


def build_day(conn: duckdb.DuckDBPyConnection, window: Window, day: date, rules: Rules, revision: dict) -> dict:
    """Computes and writes one day of the ledger in one transaction; returns counts for metadata."""
    on_day = {"day": day}
    conn.execute(DAY_PEOPLE, on_day)
    conn.execute(DAY_MOVES, on_day)
    conn.execute(DAY_DEBT_MOVES, on_day)
    for table, into in (
        ("raw.redemptions", "day_redemptions_by_person"),
        ("raw.users", "day_users_by_person"),
        ("loyalty.returns", "day_returns_by_person"),
        ("raw.events", "day_events_by_person"),
    ):
        _by_person(conn, table, into, day)
    conn.execute(DAY_REDEMPTIONS.format(raw=row_json(conn, "day_redemptions_by_person", "r")), on_day)
    tiers.load_levels(conn, rules)  # an earn is multiplied by the tier held before its purchase
    campaigns.load_campaigns(conn, rules, day)
    earn_rate = {"earn_rate": str(rules.points.earn_rate)}
    conn.execute(campaigns.DAY_BOUGHT, on_day)
    campaigns.check_criteria(conn, rules, day)
    conn.execute(campaigns.DAY_BONUSES, {**on_day, **earn_rate, **campaigns.day_params(day)})
    conn.execute(event_points.DAY_EVENT_AWARDS, {**on_day, **event_points.load_event_rules(conn, rules, day)})
    conn.execute(
        DAY_EARNS,
        {
            **on_day,
            **earn_rate,
            "validity_days": rules.points.validity_days,
            "pending_days": rules.points.pending_days,
        },
    )
    conn.execute(DAY_RETURNS, {**on_day, "window_days": rules.returns.window_days})
    for statement in (
        DAY_EVENTS,
        DAY_ACTIVE,
        DAY_OPEN_LOTS,
        DAY_OPEN_DEBTS,
        DAY_TIMELINE,
        DAY_QUEUE,
        DAY_LIST_FOLDED,
        DAY_RUN,
        DAY_FOLD,
        DAY_FOLD_PIECES,
        DAY_START,
        DAY_STEPS,
    ):
        conn.execute(statement, on_day if "$day" in statement else {})
    conn.execute(NEW_ROWS, on_day)
    conn.execute(DAY_ALLOCATIONS, on_day)
    window.refuse_change(
        conn, day, "SELECT * FROM day_rows", "SELECT * FROM points.point_transactions WHERE day = $day"
    )
    revise = [(REVISE_DAY, {"day": day, **revision})] if day in window.rebuilt else []
    publish(conn, revise + write_day(day))
    return {
        "steps": conn.execute("SELECT coalesce(max(n), 0) FROM day_steps").fetchall()[0][0],
        "refused": count(conn, "SELECT 1 FROM day_redemptions WHERE refusal IS NOT NULL")
        + count(conn, "SELECT 1 FROM day_steps WHERE e.kind = 'use' AND refused"),
    }
