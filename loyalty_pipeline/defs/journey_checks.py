"""The journeys' asset keys and checks: the state's rules re-checked (for the customers written, or a sample), and the
activations against the state."""

import dagster as dg

from loyalty_pipeline.defs.checks import Days, check, in_days
from loyalty_pipeline.defs.resources import RulesResource
from loyalty_pipeline.domain.journey import journeys
from loyalty_pipeline.lib.warehouse import count

STATE_KEY = dg.AssetKey(["journey", "journey_state"])


def _invalid(conn, rules: RulesResource, sql: str, days: Days, sample: bool = False) -> int:
    """Rows of `sql`, which reads the state as `checked_state`: every row of the customers with a row entered in
    `days` (the others did not change), the whole table for None, or a 10% sample of it."""
    journeys.load_definitions(conn, rules.rules.journeys)
    where, params = in_days("entered_at", days)
    touched = f"(journey_id, customer_id) IN (SELECT journey_id, customer_id FROM journey.journey_state WHERE {where})"
    # a merged person's state unites two histories (two terminals, say): the rules hold for each, not for the union
    single = "customer_id NOT IN (SELECT customer_id FROM journey.journey_state WHERE merged_on IS NOT NULL)"
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE checked_state AS SELECT * EXCLUDE (merged_on) FROM journey.journey_state "
        + (f"TABLESAMPLE 10 PERCENT (bernoulli) WHERE {single}" if sample else f"WHERE {touched} AND {single}"),
        {} if sample else params,
    )
    return count(conn, sql)


LOCATED = """SELECT s.*, n.kind, n.stage_index, n.step_index, n.position FROM checked_state AS s
             JOIN journey_nodes AS n USING (journey_id, node)"""


@check("At most one terminal node (goal, exit or end) per customer and journey.")
def one_terminal_node(conn, rules, days) -> tuple[bool, dict]:
    wrong = _invalid(
        conn,
        rules,
        f"SELECT journey_id, customer_id FROM ({LOCATED}) WHERE kind IN {journeys.TERMINAL} GROUP BY ALL HAVING count(*) > 1",
        days,
    )
    return wrong == 0, {"customers_wrong": wrong}


@check("No node is entered after the customer's terminal node.")
def nothing_after_terminal(conn, rules, days) -> tuple[bool, dict]:
    wrong = _invalid(
        conn,
        rules,
        f"""WITH located AS ({LOCATED}),
                 terminal AS (SELECT journey_id, customer_id, min(entered_at) AS at FROM located WHERE kind IN {journeys.TERMINAL} GROUP BY ALL)
            SELECT 1 FROM located JOIN terminal USING (journey_id, customer_id) WHERE located.entered_at > terminal.at""",
        days,
    )
    return wrong == 0, {"rows_after_terminal": wrong}


ORDER_VIOLATIONS = f"""
WITH located AS ({LOCATED}),
stages AS (SELECT * FROM located WHERE kind = 'stage'),
steps AS (SELECT * FROM located WHERE kind = 'step')
SELECT 1 FROM stages AS later JOIN journey_stages AS st ON st.journey_id = later.journey_id AND st.stage_index = later.stage_index - 1
LEFT JOIN stages AS earlier ON earlier.journey_id = later.journey_id AND earlier.customer_id = later.customer_id
                           AND earlier.stage_index = later.stage_index - 1
WHERE earlier.entered_at IS NULL OR earlier.entered_at > later.entered_at
   OR (SELECT count(*) FROM steps WHERE steps.journey_id = later.journey_id AND steps.customer_id = later.customer_id
       AND steps.stage_index = later.stage_index - 1 AND steps.entered_at <= later.entered_at) <> st.step_count
"""


@check("Stages entered in order with non-decreasing dates, and every step of a stage before the next stage.")
def stages_in_order(conn, rules, days) -> tuple[bool, dict]:
    wrong = _invalid(conn, rules, ORDER_VIOLATIONS, days)
    return wrong == 0, {"stage_entries_out_of_order": wrong}


@check(
    "A 10% Bernoulli sample of the state re-checked for invalid rows (the cheap check for very large tables).",
    blocking=False,
)
def sampled_state_is_valid(conn, rules, days) -> tuple[bool, dict]:
    wrong = _invalid(
        conn,
        rules,
        f"""SELECT 1 FROM ({LOCATED}) AS sampled
            WHERE NOT EXISTS (SELECT 1 FROM journey.journey_state AS s JOIN journey_nodes AS n USING (journey_id, node)
                              WHERE s.journey_id = sampled.journey_id AND s.customer_id = sampled.customer_id
                                AND n.kind = 'stage' AND n.stage_index = 0 AND s.entered_at <= sampled.entered_at)""",
        None,
        sample=True,
    )
    return wrong == 0, {"invalid_sampled_rows": wrong}


@check(
    "Exactly one activation row per activation step reached in the state (in the days written), and each row a "
    "step its customer holds by then (a merge may have moved the step to an earlier date)."
)
def activations_match_state(conn, rules, days) -> tuple[bool, dict]:
    journeys.load_definitions(conn, rules.rules.journeys)
    on_entered, params = in_days("s.entered_at", days)
    on_activated, _ = in_days("a.activated_on", days)
    step = "SELECT journey_id, node, activation FROM journey_nodes WHERE activation IS NOT NULL"
    reached = f"""SELECT s.journey_id, s.customer_id, n.activation, s.entered_at FROM journey.journey_state AS s
                  JOIN ({step}) AS n USING (journey_id, node) WHERE s.merged_on IS NULL AND {on_entered}"""
    written = f"SELECT a.* FROM journey.activations AS a WHERE {on_activated}"
    missing = count(conn, f"({reached}) EXCEPT ALL ({written})", params)
    unexplained = count(
        conn,
        f"""SELECT 1 FROM ({written}) AS a WHERE NOT EXISTS (
                SELECT 1 FROM journey.journey_state AS s JOIN ({step}) AS n USING (journey_id, node)
                WHERE s.journey_id = a.journey_id AND s.customer_id = a.customer_id AND n.activation = a.activation
                  AND s.entered_at <= a.activated_on)""",
        params,
    )
    repeated = count(conn, f"({written}) EXCEPT ALL (SELECT DISTINCT * FROM ({written}))", params)
    wrong = missing + unexplained + repeated
    return wrong == 0, {"missing": missing, "unexplained": unexplained, "repeated": repeated}


ACTIVATIONS_KEY = dg.AssetKey(["journey", "activations"])
STATE_CHECKS = [one_terminal_node, nothing_after_terminal, stages_in_order, sampled_state_is_valid]
ACTIVATIONS_CHECKS = [activations_match_state]
