"""Self-dependent daily tables (the point ledger, the journey state): day D is built on the end of D-1.

A step builds a window of days in order. Whether it may, and what it rewrites, follows from the days already
built (a `<schema>.<x>_days` table of markers):

* a window may not start after a gap: its first day needs the previous day, unless nothing came before;
* a window that ends before the last built day may only rewrite its days identically, because the later days
  were built on them; a change is refused, naming the range to run instead;
* a window that reaches the last built day rebuilds everything from its first day. Its markers are dropped up
  front, so a run that fails part-way leaves a visible gap (which the sensors and the schedule fill) rather than
  later days built on rows that are gone.
"""

from dataclasses import dataclass
from datetime import date, timedelta

import duckdb

from loyalty_pipeline.lib.warehouse import rows_differing, transaction


class DayOrderError(RuntimeError):
    """A day cannot be built: its previous day is missing, or rebuilding it contradicts later days. `run_instead`
    is the range of days to materialize as one run instead."""

    def __init__(self, message: str, run_instead: tuple[date, date]):
        super().__init__(message)
        self.run_instead = run_instead


@dataclass(frozen=True)
class Window:
    """What one step may do to days [first, end) of a chain."""

    days_table: str  # the markers of the days built
    what: str  # "point ledger", for messages
    first: date
    end: date
    rebuilt: frozenset[date]  # days of the window built before: their changes are revisions
    later_until: date | None  # the last day built after the window, which was built on its old rows

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.end - self.first).days)]

    def begin(self, conn: duckdb.DuckDBPyConnection, drop_from_first: tuple[str, ...] = ()) -> None:
        """Before a rebuild that reaches the last day: drop the markers from the first day on, and run
        `drop_from_first` (statements given the first day as $1) in the same transaction."""
        if self.later_until is None:
            with transaction(conn):
                for statement in (f"DELETE FROM {self.days_table} WHERE day >= $1", *drop_from_first):
                    conn.execute(statement, [self.first])

    def refuse_change(self, conn: duckdb.DuckDBPyConnection, day: date, new_rows: str, old_rows: str) -> None:
        """Refuse to rewrite `day` differently when later days were built on it."""
        if self.later_until is None:
            return
        changed = rows_differing(conn, new_rows, old_rows, {"day": day})
        if changed:
            raise DayOrderError(
                f"{self.what}: rebuilding {day} changes {changed} row{'s' if changed > 1 else ''}, and the days after it up to "
                f"{self.later_until} were built on the old ones; materialize {day}..{self.later_until} as one run",
                (day, self.later_until),
            )


def open_window(
    conn: duckdb.DuckDBPyConnection,
    days_table: str,
    what: str,
    state: str,
    first: date,
    end: date,
    since: date | None,
) -> Window:
    """Checks that days [first, end) can be built on what is built (see Window.begin to start).

    `what` names the table in messages, `state` what a day is built on ("ledger").
    `since`: the first day something happened, when before `first` (the chain cannot start from nothing then)."""
    built = [day for (day,) in conn.execute(f"SELECT day FROM {days_table} ORDER BY day").fetchall()]
    before = [day for day in built if day < first]
    later = [day for day in built if day >= end]
    previous = first - timedelta(days=1)
    if (before or since) and previous not in before:
        start = before[-1] + timedelta(days=1) if before else since
        until = later[-1] if later else end - timedelta(days=1)
        raise DayOrderError(
            f"{what}: {first} needs the {state} at the end of {previous}, which is not materialized; "
            f"materialize {start}..{until} as one run",
            (start, until),
        )
    rebuilt = frozenset(day for day in built if first <= day < end)
    return Window(days_table, what, first, end, rebuilt, later[-1] if later else None)


def mark_built(days_table: str) -> str:
    """The statement (parameter $day) that marks a day built, once (portable: no INSERT OR IGNORE)."""
    return f"INSERT INTO {days_table} SELECT CAST($day AS DATE) WHERE CAST($day AS DATE) NOT IN (SELECT day FROM {days_table})"


def publish(conn: duckdb.DuckDBPyConnection, writes: list[tuple[str, dict]]) -> None:
    """Runs a day's writes, (statement, its parameters) pairs, in one transaction."""
    with transaction(conn):
        for statement, params in writes:
            conn.execute(statement, params)
