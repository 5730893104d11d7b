"""One day of journey orchestration (docs/decisions.md, Journeys), with set operations over customer sets, in SQL.

The state is sparse: one row per (journey, customer, node) with the first day the node was reached. A day reads
the state before it (`base`), collects what happens on the day (`today`), and appends the nodes reached for the
first time, in one transaction.
"""

import hashlib
from datetime import date, timedelta

import duckdb

from loyalty_pipeline.domain.config import (
    AbTestStep,
    ActivationStep,
    DecisionStep,
    Journey,
    JumpStep,
    Rules,
    WaitStep,
    WaitUntilStep,
)
from loyalty_pipeline.domain.customer.profiles import BEHAVIOUR, add_day_to_totals, totals_from_start
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
BUCKETS = 65536  # an A/B test's or a holdout's bucket: the first 4 hex digits of an md5


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


NODE_COLUMNS = {  # journey_nodes: a journey's flow, one row per node (docs/decisions.md, Journeys)
    "journey_id": "VARCHAR",
    "node": "VARCHAR",
    "kind": "VARCHAR",  # stage step wait_until jump decision branch ab_test variant control exit goal end holdout
    "position": "INTEGER",  # pre-order: every move goes to a higher position
    "stage_index": "INTEGER",
    "next_node": "VARCHAR",  # the successor once complete (decisions and A/B tests choose theirs)
    "next_gate": "VARCHAR",  # the criterion the successor waits for (a stage's entry)
    "wait_days": "INTEGER",
    "max_days": "INTEGER",  # wait_until's, a decision's max_wait_days
    "activation": "VARCHAR",
    "criterion": "VARCHAR",  # where the node's criterion is written: a branch's when, wait_until
    "choice_of": "VARCHAR",  # a branch's decision, a variant's A/B test
    "choice_order": "INTEGER",
    "bucket_from": "VARCHAR",  # a variant's range of buckets, as 4 hex digits (below: NULL to the end)
    "bucket_below": "VARCHAR",
    "salt": "VARCHAR",  # an A/B test's
}


def assignment_bucket(journey_id: str, step: str, person: str, salt: str) -> str:
    """What the SQL computes for an A/B test's step (or 'holdout'): md5(journey|step|person|salt)'s first 4 hex
    digits."""
    return hashlib.md5(f"{journey_id}|{step}|{person}|{salt}".encode()).hexdigest()[:4]


def bucket(fraction: float) -> str:
    """The bucket at `fraction` of the range, as the 4 lowercase hex digits the SQL compares."""
    return f"{int(BUCKETS * fraction):04x}"


def flatten(journey: Journey) -> tuple[list[dict], list[list], list]:
    """The journey's nodes, its exits (stage_index, order, node, criterion) and its rules row, for the SQL."""
    nodes, exits = [], []
    stages = journey.stages

    def add(name: str, kind: str, stage_index: int | None, **fields) -> None:
        nodes.append({"node": name, "kind": kind, "position": len(nodes), "stage_index": stage_index, **fields})

    def first_of(steps: list, prefix: str, after: tuple) -> tuple:
        return (f"{prefix}:step:1", None) if steps else after

    def add_steps(steps: list, prefix: str, path: str, i: int, after: tuple) -> None:
        """`after`: (node, gate) the list continues to."""
        for n, step in enumerate(steps, start=1):
            name, here = f"{prefix}:step:{n}", f"{path}[{n - 1}]"
            next_node, next_gate = (f"{prefix}:step:{n + 1}", None) if n < len(steps) else after
            successor = {"next_node": next_node, "next_gate": next_gate}
            if isinstance(step, ActivationStep):
                add(name, "step", i, activation=step.activation, **successor)
            elif isinstance(step, WaitStep):
                add(name, "step", i, wait_days=step.wait_days, **successor)
            elif isinstance(step, WaitUntilStep):
                add(name, "wait_until", i, criterion=f"{here}.wait_until", max_days=step.max_days, **successor)
            elif isinstance(step, JumpStep):
                add(name, "jump", i, next_node=f"stage:{step.jump}")
            elif isinstance(step, DecisionStep):
                decision = step.decision
                add(name, "decision", i, max_days=decision.max_wait_days)
                branches = [(b, f"{here}.decision.branches[{n}]") for n, b in enumerate(decision.branches)]
                if decision.else_:
                    branches.append((decision.else_, f"{here}.decision.else"))
                for order, (branch, branch_path) in enumerate(branches):
                    node = f"{name}:branch:{branch.name}"
                    criterion = f"{branch_path}.when" if branch.when else None
                    target, gate = first_of(branch.steps, node, after=(next_node, next_gate))
                    add(
                        node,
                        "branch",
                        i,
                        next_node=target,
                        next_gate=gate,
                        criterion=criterion,
                        choice_of=name,
                        choice_order=order,
                    )
                    add_steps(branch.steps, node, f"{branch_path}.steps", i, (next_node, next_gate))
                add(f"{name}:no_branch", "exit", i)
            elif isinstance(step, AbTestStep):
                test = step.ab_test
                add(name, "ab_test", i, salt=test.salt)
                start = 0
                arms = [(v.name, v.weight, v.steps, "variant") for v in test.variants]
                if test.control:
                    arms.append(("control", test.control, [], "control"))
                for order, (arm, weight, arm_steps, kind) in enumerate(arms):
                    node = f"{name}:variant:{arm}"
                    target, gate = first_of(arm_steps, node, after=(next_node, next_gate))
                    add(
                        node,
                        kind,
                        i,
                        next_node=target,
                        next_gate=gate,
                        choice_of=name,
                        choice_order=order,
                        bucket_from=bucket(start / 100),
                        bucket_below=None if start + weight == 100 else bucket((start + weight) / 100),
                    )
                    start += weight
                    add_steps(arm_steps, node, f"{here}.ab_test.variants[{order}].steps", i, (next_node, next_gate))

    add("holdout", "holdout", None)
    for i, stage in enumerate(stages):
        after = (
            (f"stage:{stages[i + 1].id}", f"stages[{i + 1}].entry" if stages[i + 1].entry else None)
            if i + 1 < len(stages)
            else ("end", None)
        )
        target, gate = first_of(stage.steps, f"stage:{stage.id}", after)
        add(f"stage:{stage.id}", "stage", i, next_node=target, next_gate=gate)
        add_steps(stage.steps, f"stage:{stage.id}", f"stages[{i}].steps", i, after)
        for order, exit in enumerate(stage.exit_criteria):
            node = f"stage:{stage.id}:exit:{exit.name}"
            exits.append([i, order, node, f"stages[{i}].exit_criteria[{order}].when"])
            add(node, "exit", i)
    add("goal", "goal", None)
    add("end", "end", None)
    rules = [
        f"stage:{stages[0].id}",
        journey.reentry,
        journey.after_days or 0,
        bucket(float(journey.holdout_pct) / 100),
        journey.salt,
    ]
    criteria = journey.criteria()
    for node in nodes:  # a node's criterion is one the journey's criteria() checked, by the same path
        assert all(node.get(key) in criteria for key in ("criterion", "next_gate") if node.get(key)), node
    return nodes, exits, rules


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
    while True:  # until a round moves nobody (counted: Spark's INSERT gives no row count)
        for statement in (ADVANCE, DECIDE, ASSIGN):  # each moves customers at other kinds of node
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
