"""Asset checks run inside their asset's step, on its connection: a rule, its spec, and factories for the rules
every table shares (uniqueness, quarantine, a sample of an update against a rebuild). Domain rules live beside their
assets."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import dagster as dg
import duckdb

from loyalty_pipeline.defs.resources import RulesResource, Warehouse
from loyalty_pipeline.lib.warehouse import count, rows_differing


def table_of(key: dg.AssetKey) -> str:
    """The warehouse table an asset writes: asset key ["raw", "users"] is table raw.users."""
    return ".".join(key.path)


Days = tuple[date, date] | None  # the window a step wrote, [first, end); None: the whole table


def in_days(column: str, days: Days) -> tuple[str, dict]:
    """A WHERE condition keeping rows of `days` (true for None) and its parameters."""
    if days is None:
        return "true", {}
    return f"{column} >= $first AND {column} < $end", {"first": days[0], "end": days[1]}


@dataclass(frozen=True)
class Check:
    """A rule a table holds. `evaluate(conn, rules, days)` returns (passed, metadata); the asset that writes the table
    declares `spec(key)` and reports `result(key, conn, rules, days)` from its own step. `days` is the window the
    step wrote, [first, end): a check of a partitioned table looks at those days only, the earlier ones having been
    checked when they were written (None: the whole table). Calling the check with a warehouse evaluates it on its
    own connection, over the whole table (to look at a table from a test or a notebook)."""

    name: str
    description: str
    evaluate: Callable[[duckdb.DuckDBPyConnection, RulesResource, Days], tuple[bool, dict]]
    blocking: bool = True  # False: a warning, which never stops downstream assets

    def spec(self, key: dg.AssetKey) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(self.name, asset=key, blocking=self.blocking, description=self.description)

    def result(
        self, key: dg.AssetKey | None, conn: duckdb.DuckDBPyConnection, rules: RulesResource | None = None, days=None
    ):
        passed, metadata = self.evaluate(conn, rules or RulesResource(), days)
        return dg.AssetCheckResult(
            asset_key=key,
            check_name=self.name,
            passed=passed,
            metadata=metadata,
            severity=dg.AssetCheckSeverity.ERROR if self.blocking else dg.AssetCheckSeverity.WARN,
        )

    def __call__(self, warehouse: Warehouse, rules: RulesResource | None = None) -> dg.AssetCheckResult:
        with warehouse.get_connection() as conn:
            return self.result(None, conn, rules)


def check(description: str, blocking: bool = True):
    """Decorator: a function (conn, rules) -> (passed, metadata) becomes a Check named after it."""
    return lambda evaluate: Check(evaluate.__name__, description, evaluate, blocking)


def check_specs(key: dg.AssetKey, checks: list[Check]) -> list[dg.AssetCheckSpec]:
    return [check.spec(key) for check in checks]


def check_results(
    key: dg.AssetKey, checks: list[Check], conn, rules: RulesResource | None = None, days: Days = None
) -> list:
    return [check.result(key, conn, rules, days) for check in checks]


def failed_blocking(result: dg.MaterializeResult) -> bool:
    """Whether a blocking check of `result` failed: what comes after it in the same step must not be built."""
    return any(not check.passed and check.severity == dg.AssetCheckSeverity.ERROR for check in result.check_results)


def duplicate_check(key: dg.AssetKey, columns: list[str], day_column: str | None = None) -> Check:
    """Blocking: no two rows share `columns`. For a partitioned table (`day_column`), in the days written: the key
    columns determine the day (a Kafka coordinate, a file row, a purchase), so a key cannot repeat across days."""
    columns_sql = ", ".join(columns)

    def evaluate(conn, rules, days) -> tuple[bool, dict]:
        where, params = in_days(day_column, days) if day_column else ("true", {})
        duplicated = count(
            conn, f"SELECT {columns_sql} FROM {table_of(key)} WHERE {where} GROUP BY ALL HAVING count(*) > 1", params
        )
        return duplicated == 0, {"duplicated_keys": duplicated}

    return Check(f"unique_{'_'.join(columns)}", f"No two rows share ({columns_sql}).", evaluate)


def rejected_rows_check(key: dg.AssetKey, source: str) -> Check:
    """Warns (never blocks) when input rows of `source` were quarantined (in the days written, and undated ones),
    with counts per reason."""

    def evaluate(conn, rules, days) -> tuple[bool, dict]:
        where, params = in_days("day", days)
        reasons = conn.execute(
            f"SELECT reason, count(*) FROM raw.rejected_records WHERE source = $source AND (day IS NULL OR {where}) "
            "GROUP BY ALL ORDER BY 2 DESC, 1",
            {"source": source, **params},
        ).fetchall()
        total = sum(rows for _, rows in reasons)
        return total == 0, {"rejected_rows": total, **{reason: rows for reason, rows in reasons[:10]}}

    return Check(
        "no_rejected_rows",
        f"Rows of {source} quarantined in raw.rejected_records (warning only: the good rows still load).",
        evaluate,
        blocking=False,
    )


# The `days` a lifetime table's step gives its checks after an incremental update: they look at the people it
# updated (temp table touched_people) rather than at every customer; None (a rebuild, a test) looks at all.
UPDATED = "updated people"


PEOPLE = "SELECT person FROM touched_people"


def is_updated(column: str, days) -> str:
    return f"{column} IN ({PEOPLE})" if days == UPDATED else "true"


SAMPLE = 1000  # people an update wrote that a sample takes, and rows of the events its stretch reads


def by_hash(people: str, limit: int) -> str:
    """The first `limit` of `people` (a query of `person`) by a hash that changes with every update."""
    return f"""SELECT DISTINCT person FROM ({people}) AS people
               ORDER BY md5(person || (SELECT CAST(coalesce(max(seq), 0) AS VARCHAR) FROM changes.applied)), person
               LIMIT {limit}"""


def matches_rebuild(key: dg.AssetKey, events: str, select, params=lambda rules: {}) -> Check:
    """Warns when a sample of people has rows in the table other than what their rows rebuilt from scratch would be:
    an incremental update that missed someone (a change not logged). The sample: up to 1,000 of the people the
    update wrote (after a whole build, of the table's), by a hash that changes every update; and a stretch of people
    it need not have written, who have rows in the table or in `events` (the table of their events, a constant name):
    from the first person drawn on, in id order wrapping round, as far as 1,000 rows of `events` go. Finding the
    stretch compares ids, so nobody else is hashed or sorted, and each person is about as likely to be in it (the start is
    a person the update wrote, another each update). `select(people)`: the table's SQL for those people, with
    `params(rules)`."""
    table = table_of(key)

    def evaluate(conn, rules, days) -> tuple[bool, dict]:
        written = PEOPLE if days == UPDATED else f"SELECT user_id AS person FROM {table}"
        conn.execute(f"CREATE OR REPLACE TEMP TABLE sample_written AS {by_hash(written, SAMPLE)}")
        # the start (nobody written: anyone with events, by the same hash)
        first = (
            conn.execute(by_hash("SELECT person FROM sample_written", 1)).fetchall()
            or conn.execute(by_hash(f"SELECT user_id AS person FROM {events}", 1)).fetchall()
        )
        start = first[0][0] if first else ""
        read, last, last_wrapped = conn.execute(
            f"""SELECT count(*), max(CASE WHEN NOT wrapped THEN user_id END), max(CASE WHEN wrapped THEN user_id END)
                FROM (SELECT user_id, user_id < $start AS wrapped FROM {events}
                      ORDER BY wrapped, user_id LIMIT {SAMPLE}) AS stretch""",
            {"start": start},
        ).fetchall()[0]
        if read < SAMPLE:  # the whole round
            stretch, bounds = "true", {}
        elif last_wrapped is None:
            stretch, bounds = "user_id >= $start AND user_id <= $end", {"start": start, "end": last}
        else:
            stretch, bounds = "(user_id >= $start OR user_id <= $end)", {"start": start, "end": last_wrapped}
        conn.execute(
            f"""CREATE OR REPLACE TEMP TABLE sampled_people AS
                SELECT person FROM sample_written
                UNION SELECT user_id FROM {table} WHERE {stretch}
                UNION SELECT user_id FROM {events} WHERE {stretch}""",
            bounds,
        )
        sample = "SELECT person FROM sampled_people"
        # a table first: the rebuilt rows' SQL may have a WITH, which Spark cannot repeat in one statement
        conn.execute(f"CREATE OR REPLACE TEMP TABLE sample_rebuilt AS {select(sample)}", params(rules))
        wrong = rows_differing(
            conn, f"SELECT * FROM {table} WHERE user_id IN ({sample})", "SELECT * FROM sample_rebuilt"
        )
        return wrong == 0, {"sampled_people": count(conn, sample), "rows_differing": wrong}

    return Check(
        "sample_matches_rebuild",
        f"A sample of people (up to 1,000 an update wrote, and a stretch of ids past them): their rows in {table} "
        "equal their rows rebuilt from scratch (warning only).",
        evaluate,
        blocking=False,
    )
