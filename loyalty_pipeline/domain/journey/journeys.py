"""One day of journey orchestration (docs/decisions.md, Journeys), with set operations over customer sets, in SQL.

The state is sparse: one row per (journey, customer, node) with the first day the node was reached. A day reads
the state before it (`base`), collects what happens on the day (`today`), and appends the nodes reached for the
first time, in one transaction.
"""

from datetime import date, timedelta

import duckdb

from loyalty_pipeline.domain.config import Journey, Rules
from loyalty_pipeline.domain.customer.profiles import BEHAVIOUR, add_day_to_totals, totals_from_start
from loyalty_pipeline.domain.loyalty import tiers
from loyalty_pipeline.lib import touched
from loyalty_pipeline.lib.chain import Window, mark_built, publish
from loyalty_pipeline.lib.sql import load
from loyalty_pipeline.lib.warehouse import count, insert_rows

_SQL = load(__file__)  # journeys.sql
DDL = _SQL["ddl"]
ENTER = _SQL["enter"]
GOAL = _SQL["goal"]
EXIT = _SQL["exit"]
ADVANCE = _SQL["advance"]
BASE = _SQL["base"]
MERGED_ROWS = _SQL["merged_rows"]
DAY_PEOPLE = _SQL["day_people"]
PEOPLE_FROM = _SQL["people_from"]

DDL += touched.DDL  # the state logs the people whose journeys a day changes

TERMINAL = "('goal', 'exit', 'end')"


class CriterionFailed(ValueError):
    """A journey's criterion fails on the day's real profiles (an overflow the sample profiles of loading did not
    reach): the message names the journey, the field and the day."""


def _positions(rows: str) -> str:
    """Where each in-journey customer of `rows` is: current stage, its highest step reached and when."""
    return f"""
    WITH located AS (
        SELECT r.journey_id, r.customer_id, r.entered_at, n.kind, n.stage_index, n.step_index
        FROM ({rows}) AS r JOIN journey_nodes AS n USING (journey_id, node)
    ), finished AS (
        SELECT journey_id, customer_id FROM located WHERE kind IN {TERMINAL}
    ), stage_now AS (
        SELECT journey_id, customer_id, max(stage_index) AS stage_index FROM located WHERE kind = 'stage' GROUP BY ALL
    )
    SELECT s.journey_id, s.customer_id, s.stage_index,
           coalesce(max(l.step_index), 0) AS step_index, arg_max(l.entered_at, l.step_index) AS step_entered_at
    FROM stage_now AS s
    LEFT JOIN located AS l
           ON l.journey_id = s.journey_id AND l.customer_id = s.customer_id AND l.kind = 'step'
          AND l.stage_index = s.stage_index
    WHERE NOT EXISTS (SELECT 1 FROM finished AS f WHERE f.journey_id = s.journey_id AND f.customer_id = s.customer_id)
    GROUP BY ALL"""


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
                   WHERE m.journey_id = s.journey_id AND m.customer_id = s.customer_id AND m.node = s.node)""",
            {},
        ),
        (
            "INSERT INTO journey.journey_state SELECT journey_id, customer_id, node, entered_at, $day FROM merged_rows",
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
            (
                """INSERT INTO journey.reached_activations
                   SELECT DISTINCT t.journey_id, t.customer_id, n.activation, t.entered_at
                   FROM (SELECT * FROM today ANTI JOIN journey.journey_state USING (journey_id, customer_id, node)) AS t
                   JOIN journey_nodes AS n USING (journey_id, node)
                   WHERE n.activation IS NOT NULL""",
                {},
            ),
            (
                """INSERT INTO journey.journey_state
                   SELECT DISTINCT journey_id, customer_id, node, entered_at, NULL FROM today
                   ANTI JOIN journey.journey_state USING (journey_id, customer_id, node)""",
                {},
            ),
            (mark_built("journey.journey_days"), on_day),
        ],
    )


def load_definitions(conn: duckdb.DuckDBPyConnection, journeys: list[Journey]) -> None:
    """The journeys' structure as small temp tables: nodes, stages, exits."""
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE journey_nodes (journey_id VARCHAR, node VARCHAR, kind VARCHAR, position INTEGER, "
        "stage_index INTEGER, step_index INTEGER, wait_days INTEGER, activation VARCHAR)"
    )
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE journey_stages (journey_id VARCHAR, stage_index INTEGER, stage_id VARCHAR, "
        "step_count INTEGER, has_entry BOOLEAN)"
    )
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE journey_exits (journey_id VARCHAR, stage_index INTEGER, exit_order INTEGER, exit_name VARCHAR)"
    )
    nodes, stages, exits = [], [], []
    for journey in journeys:

        def node(name, kind, stage=None, step=None, wait=None, activation=None, journey_id=journey.id):
            nodes.append([journey_id, name, kind, len(nodes), stage, step, wait, activation])

        for i, stage in enumerate(journey.stages):
            stages.append([journey.id, i, stage.id, len(stage.steps), stage.entry is not None])
            node(f"stage:{stage.id}", "stage", i)
            for n, step in enumerate(stage.steps, start=1):
                node(
                    f"stage:{stage.id}:step:{n}",
                    "step",
                    i,
                    n,
                    getattr(step, "wait_days", None),
                    getattr(step, "activation", None),
                )
            for order, exit in enumerate(stage.exit_criteria):
                exits.append([journey.id, i, order, exit.name])
                node(f"stage:{stage.id}:exit:{exit.name}", "exit", i)
        node("goal", "goal")
        node("end", "end")
    insert_rows(conn, "journey_nodes", nodes)
    insert_rows(conn, "journey_stages", stages)
    insert_rows(conn, "journey_exits", exits)


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
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE hits (journey_id VARCHAR, criterion VARCHAR, stage_index INTEGER, "
        "exit_order INTEGER, customer_id VARCHAR)"
    )
    for journey in rules.journeys:
        for field, condition in journey.criteria().items():
            criterion, stage_index, exit_order = _criterion_of(field)
            try:
                conn.execute(  # `condition` is the checked re-rendering of the criterion, never the raw text
                    "INSERT INTO hits SELECT $journey, $criterion, $stage, $exit, user_id FROM journey_profile "
                    f"WHERE {condition}",
                    {"journey": journey.id, "criterion": criterion, "stage": stage_index, "exit": exit_order},
                )
            except duckdb.Error as error:  # e.g. an overflow only real values reach (load tries sample profiles)
                raise CriterionFailed(
                    f"journey {journey.id}, {field}: fails on the profiles of {day}: {str(error).splitlines()[0]}"
                ) from None


def _criterion_of(field: str) -> tuple[str, int | None, int | None]:
    """'stages[1].exit_criteria[0].when' -> ('exit', 1, 0); 'audience' -> ('audience', None, None)."""
    if not field.startswith("stages["):
        return field, None, None
    stage_index = int(field[len("stages[") : field.index("]")])
    if field.endswith(".entry"):
        return "entry", stage_index, None
    return "exit", stage_index, int(field.split("exit_criteria[")[1].split("]")[0])


def build_day(
    conn: duckdb.DuckDBPyConnection, rules: Rules, window: Window, day: date, totals_as_of: date | None
) -> int:
    """Moves every customer for one day and publishes the new state; returns the number of advance rounds."""
    evaluate_criteria(conn, rules, day, totals_as_of)
    conn.execute(BASE, {"day": day})
    conn.execute(MERGED_ROWS, {"day": day})
    conn.execute("CREATE OR REPLACE TEMP TABLE today AS SELECT * FROM base LIMIT 0")
    conn.execute(BASE_POSITIONS)
    conn.execute(POSITIONS)
    for statement in (ENTER, GOAL, EXIT):
        conn.execute(statement, {"day": day})
    rounds, moved = 0, count(conn, "SELECT 1 FROM today")
    while True:  # until a round moves nobody (counted: Spark's INSERT gives no row count)
        conn.execute(ADVANCE, {"day": day})
        before, moved = moved, count(conn, "SELECT 1 FROM today")
        if moved == before:
            break
        rounds += 1
    window.refuse_change(
        conn,
        day,
        "SELECT * FROM today",
        "SELECT journey_id, customer_id, node, entered_at FROM journey.journey_state "
        "WHERE entered_at = $day AND merged_on IS NULL",
    )
    publish_day(conn, day)
    return rounds
