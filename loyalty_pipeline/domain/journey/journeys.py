"""One day of journey orchestration (docs/decisions.md, Journeys), with set operations over customer sets, in SQL.

The state is sparse: one row per (journey, customer, node) with the first day the node was reached. A day reads
the state before it (`base`), collects what happens on the day (`today`), and appends the nodes reached for the
first time, in one transaction.
"""

from datetime import date, timedelta

import duckdb

from loyalty_pipeline.domain.config import Journey, Rules
from loyalty_pipeline.domain.customer.profiles import BEHAVIOUR, add_day_to_totals, totals_from_start
from loyalty_pipeline.domain.journey.flow import NODE_COLUMNS, flatten
from loyalty_pipeline.domain.loyalty import tiers
from loyalty_pipeline.lib import touched
from loyalty_pipeline.lib.chain import Window, mark_built, publish
from loyalty_pipeline.lib.sql import load
from loyalty_pipeline.lib.warehouse import count, insert_rows

_SQL = load(__file__)  # journeys.sql
DDL = _SQL["ddl"]
BASE_ENTRIES = _SQL["base_entries"]
ENTER = _SQL["enter"]
GOAL = _SQL["goal"]
EXIT = _SQL["exit"]
ADVANCE = _SQL["advance"]
DECIDE = _SQL["decide"]
ASSIGN = _SQL["assign"]
BASE = _SQL["base"]
MERGED_ROWS = _SQL["merged_rows"]
DAY_PEOPLE = _SQL["day_people"]
PEOPLE_FROM = _SQL["people_from"]

STATE_COLUMNS = "journey_id, customer_id, node, entered_at, merged_on, entry"
DDL += touched.DDL  # the state logs the people whose journeys a day changes

TERMINAL = "('goal', 'exit', 'end')"  # a decision's no_branch is an exit


class CriterionFailed(ValueError):
    """A journey's criterion fails on the day's real profiles (an overflow the sample profiles of loading did not
    reach): the message names the journey, the field and the day."""


def _positions(rows: str) -> str:
    """Where each customer with an open entry of `rows` is: the entry, its furthest node (the flow only moves to
    nodes of higher position), when it was reached, and its stage."""
    return f"""
    WITH located AS (
        SELECT r.journey_id, r.customer_id, r.entry, r.node, r.entered_at, n.kind, n.position, n.stage_index
        FROM ({rows}) AS r JOIN journey_nodes AS n USING (journey_id, node)
    ), current AS (
        SELECT journey_id, customer_id, max(entry) AS entry FROM located GROUP BY journey_id, customer_id
    )
    SELECT l.journey_id, l.customer_id, l.entry, arg_max(l.node, l.position) AS node,
           arg_max(l.entered_at, l.position) AS entered_at, arg_max(l.stage_index, l.position) AS stage_index
    FROM located AS l JOIN current AS c USING (journey_id, customer_id, entry)
    GROUP BY l.journey_id, l.customer_id, l.entry
    HAVING max(CASE WHEN l.kind IN {TERMINAL} THEN 1 ELSE 0 END) = 0"""


# Positions are computed once from the state before the day; during the day only the customers who moved
# (those with rows in `today`) are recomputed, so each move costs what moved, not the whole state.
BASE_POSITIONS = f"CREATE OR REPLACE TEMP TABLE base_positions AS {_positions('SELECT * FROM base')}"
_MOVED_ROWS = """
    SELECT * FROM base WHERE EXISTS (SELECT 1 FROM today AS t WHERE t.journey_id = base.journey_id
                                                               AND t.customer_id = base.customer_id)
    UNION ALL SELECT * FROM today"""
POSITIONS = f"""
CREATE OR REPLACE TEMP VIEW journey_positions AS
SELECT * FROM base_positions AS b
WHERE NOT EXISTS (SELECT 1 FROM today AS t WHERE t.journey_id = b.journey_id AND t.customer_id = b.customer_id)
UNION ALL
SELECT * FROM ({_positions(_MOVED_ROWS)})
"""


def publish_day(conn: duckdb.DuckDBPyConnection, day: date) -> None:
    """The day's rows replace the state's rows of that day; a node reached earlier keeps its first day. Rows from
    the day's merges replace the merged-into person's later rows of the same nodes. The activations reached are
    logged apart, so that replacing a node's date never loses the activation sent on the later one."""
    on_day = {"day": day}
    merged = [
        (
            """DELETE FROM journey.journey_state AS s WHERE EXISTS (
                   SELECT 1 FROM merged_rows AS m
                   WHERE m.journey_id = s.journey_id AND m.customer_id = s.customer_id AND m.entry = s.entry
                     AND m.node = s.node)""",
            {},
        ),
        (  # the person's own rows of an arm the merge dropped (base keeps the other profile's earlier one)
            """DELETE FROM journey.journey_state AS s
               WHERE s.customer_id IN (SELECT into_id FROM identity.merges WHERE day = $day)
                 AND s.entered_at < $day AND (s.merged_on IS NULL OR s.merged_on < $day)
                 AND NOT EXISTS (SELECT 1 FROM base AS b WHERE b.journey_id = s.journey_id
                                 AND b.customer_id = s.customer_id AND b.entry = s.entry AND b.node = s.node)""",
            on_day,
        ),
        (
            f"INSERT INTO journey.journey_state ({STATE_COLUMNS}) "
            "SELECT journey_id, customer_id, node, entered_at, $day, entry FROM merged_rows",
            on_day,
        ),
    ]
    # Only on a day with merges: with DuckDB 2.0.0, an INSERT of no row before the day's large INSERT into the same
    # table lost the large one's rows at COMMIT (they showed up a commit later) when re-building days at 1M
    # (docs/decisions.md).
    if not count(conn, "SELECT 1 FROM merged_rows"):
        merged = []
    publish(
        conn,
        [
            (touched.log_sql(DAY_PEOPLE, "journeys", touched.NEXT_SEQ), on_day),
            (
                "DELETE FROM journey.journey_state WHERE (entered_at = $day AND merged_on IS NULL) OR merged_on = $day",
                on_day,
            ),
            *merged,
            ("DELETE FROM journey.reached_activations WHERE day = $day", on_day),
            (  # an entry in an A/B test's control gets none from the test on
                """INSERT INTO journey.reached_activations
                   SELECT DISTINCT t.journey_id, t.customer_id, n.activation, t.entered_at
                   FROM (SELECT * FROM today ANTI JOIN journey.journey_state USING (journey_id, customer_id, entry, node)) AS t
                   JOIN journey_nodes AS n USING (journey_id, node)
                   WHERE n.activation IS NOT NULL AND NOT EXISTS (
                       SELECT 1 FROM (SELECT * FROM base UNION ALL SELECT * FROM today) AS c
                       JOIN journey_nodes AS control ON control.journey_id = c.journey_id AND control.node = c.node
                       WHERE control.kind = 'control' AND control.position < n.position AND c.journey_id = t.journey_id
                         AND c.customer_id = t.customer_id AND c.entry = t.entry)""",
                {},
            ),
            (
                f"""INSERT INTO journey.journey_state ({STATE_COLUMNS})
                   SELECT DISTINCT journey_id, customer_id, node, entered_at, NULL, entry FROM today
                   ANTI JOIN journey.journey_state USING (journey_id, customer_id, entry, node)""",
                {},
            ),
            (mark_built("journey.journey_days"), on_day),
        ],
    )


def load_definitions(conn: duckdb.DuckDBPyConnection, journeys: list[Journey]) -> None:
    """The journeys' structure as small temp tables: nodes, exits, and each journey's entry rules."""
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE journey_nodes ({', '.join(f'{c} {t}' for c, t in NODE_COLUMNS.items())})"
    )
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE journey_exits (journey_id VARCHAR, stage_index INTEGER, exit_order INTEGER, "
        "node VARCHAR, criterion VARCHAR)"
    )
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE journey_rules (journey_id VARCHAR, first_node VARCHAR, reentry VARCHAR, "
        "after_days INTEGER, holdout_below VARCHAR, salt VARCHAR, journey_order INTEGER)"
    )
    nodes, exits, rules = [], [], []
    for journey in journeys:
        journey_nodes, journey_exits, journey_rules = flatten(journey)
        nodes += [[journey.id, *(node.get(column) for column in list(NODE_COLUMNS)[1:])] for node in journey_nodes]
        exits += [[journey.id, *exit] for exit in journey_exits]
        rules.append([journey.id, *journey_rules, len(rules)])
    insert_rows(conn, "journey_nodes", nodes)
    insert_rows(conn, "journey_exits", exits)
    insert_rows(conn, "journey_rules", rules)


def evaluate_criteria(conn: duckdb.DuckDBPyConnection, rules: Rules, day: date, totals_as_of: date | None) -> None:
    """Temp table `hits(journey_id, criterion, stage_index, exit_order, customer_id)`: who meets what at the end of day.

    The profile's totals move on by the day's events when they are as of the day before, else are summed from the
    start (the first day of a run without a kept copy)."""
    if totals_as_of == day - timedelta(days=1):
        add_day_to_totals(conn, day)
        conn.execute(  # whose totals the day changed: the rows the run keeps (totals.keep_profile_totals)
            "INSERT INTO profile_totals_changed SELECT user_id FROM recomputed_people UNION SELECT user_id FROM profile_day"
        )
    else:
        totals_from_start(conn, day)
    values = {**tiers.params(rules, day), "as_of": day}
    progress = any(
        "to_next_tier" in condition for journey in rules.journeys for condition in journey.criteria().values()
    )
    for statement in (  # the period's purchases are summed only for a criterion that reads what the next tier takes
        f"CREATE OR REPLACE TEMP TABLE journey_base AS {tiers.with_expiry(BEHAVIOUR)}",
        "CREATE OR REPLACE TEMP TABLE journey_profile AS "
        + (
            tiers.with_progress("journey_base")
            if progress
            else "SELECT *, NULL::DECIMAL(18,2) AS to_next_tier FROM journey_base"
        ),
    ):
        conn.execute(statement, {key: value for key, value in values.items() if f"${key}" in statement})
    conn.execute("CREATE OR REPLACE TEMP TABLE hits (journey_id VARCHAR, criterion VARCHAR, customer_id VARCHAR)")
    for journey in rules.journeys:
        for field, condition in journey.criteria().items():
            try:
                conn.execute(  # `condition` is the checked re-rendering of the criterion, never the raw text
                    f"INSERT INTO hits SELECT $journey, $criterion, user_id FROM journey_profile WHERE {condition}",
                    {"journey": journey.id, "criterion": field},
                )
            except duckdb.Error as error:  # e.g. an overflow only real values reach (load tries sample profiles)
                raise CriterionFailed(
                    f"journey {journey.id}, {field}: fails on the profiles of {day}: {str(error).splitlines()[0]}"
                ) from None


def build_day(
    conn: duckdb.DuckDBPyConnection, rules: Rules, window: Window, day: date, totals_as_of: date | None
) -> int:
    """Moves every customer for one day and publishes the new state; returns the number of advance rounds."""
    evaluate_criteria(conn, rules, day, totals_as_of)
    conn.execute(BASE, {"day": day})
    conn.execute(MERGED_ROWS, {"day": day})
    conn.execute("CREATE OR REPLACE TEMP TABLE today AS SELECT * FROM base LIMIT 0")
    conn.execute(BASE_ENTRIES)
    conn.execute(BASE_POSITIONS)
    conn.execute(POSITIONS)
    for statement in (ENTER, GOAL, EXIT):
        conn.execute(statement, {"day": day})
    rounds, moved = 0, count(conn, "SELECT 1 FROM today")
    kinds = {kind for (kind,) in conn.execute("SELECT DISTINCT kind FROM journey_nodes").fetchall()}
    moves = [ADVANCE] + [DECIDE] * ("decision" in kinds) + [ASSIGN] * ("ab_test" in kinds)  # the kinds there are
    while True:  # until a round moves nobody (counted: Spark's INSERT gives no row count)
        for statement in moves:  # each moves customers at other kinds of node
            conn.execute(statement, {"day": day})
        before, moved = moved, count(conn, "SELECT 1 FROM today")
        if moved == before:
            break
        rounds += 1
    window.refuse_change(
        conn,
        day,
        "SELECT * FROM today",
        "SELECT journey_id, customer_id, entry, node, entered_at FROM journey.journey_state "
        "WHERE entered_at = $day AND merged_on IS NULL",
    )
    publish_day(conn, day)
    return rounds
