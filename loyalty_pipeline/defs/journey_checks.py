"""The journeys' asset keys and checks: the state's rules re-checked (for the customers written, or a sample), and the
activations against the state."""

import dagster as dg

from loyalty_pipeline.defs.checks import Days, check, in_days
from loyalty_pipeline.defs.resources import RulesResource
from loyalty_pipeline.domain.journey import flow, journeys
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


# The state of people, not of the profiles merged into them (whose rows the merged person carries on).
PEOPLE_STATE = "SELECT * FROM journey.journey_state WHERE customer_id NOT IN (SELECT merged_id FROM identity.merges)"
LOCATED = """SELECT s.*, n.kind, n.stage_index, n.position FROM checked_state AS s
             JOIN journey_nodes AS n USING (journey_id, node)"""
ENTRY = "journey_id, customer_id, entry"


@check("At most one terminal node (goal, exit or end) per entry of a customer into a journey.")
def one_terminal_node(conn, rules, days) -> tuple[bool, dict]:
    wrong = _invalid(
        conn,
        rules,
        f"SELECT {ENTRY} FROM ({LOCATED}) WHERE kind IN {journeys.TERMINAL} GROUP BY ALL HAVING count(*) > 1",
        days,
    )
    return wrong == 0, {"entries_wrong": wrong}


@check("No node is entered after its entry's terminal node.")
def nothing_after_terminal(conn, rules, days) -> tuple[bool, dict]:
    wrong = _invalid(
        conn,
        rules,
        f"""WITH located AS ({LOCATED}),
                 terminal AS (SELECT {ENTRY}, min(entered_at) AS ended FROM located WHERE kind IN {journeys.TERMINAL} GROUP BY ALL)
            SELECT 1 FROM located JOIN terminal USING ({ENTRY}) WHERE located.entered_at > terminal.ended""",
        days,
    )
    return wrong == 0, {"rows_after_terminal": wrong}


@check("One open entry per customer and journey: every entry but the last has ended.")
def one_open_entry(conn, rules, days) -> tuple[bool, dict]:
    wrong = _invalid(
        conn,
        rules,
        f"""SELECT journey_id, customer_id FROM (
                SELECT {ENTRY}, max(CASE WHEN kind IN {journeys.TERMINAL} THEN 1 ELSE 0 END) AS ended
                FROM ({LOCATED}) GROUP BY ALL)
            WHERE ended = 0 GROUP BY ALL HAVING count(*) > 1""",
        days,
    )
    return wrong == 0, {"customers_wrong": wrong}


# The flow only moves to nodes of higher position, on the same day or later, from the journey's first stage (or
# the holdout): nodes in position order have non-decreasing dates, and an entry holds its start.
ORDER_VIOLATIONS = f"""
WITH located AS ({LOCATED})
SELECT 1 FROM located AS earlier JOIN located AS later USING ({ENTRY})
WHERE earlier.position < later.position AND earlier.entered_at > later.entered_at
UNION ALL
SELECT 1 FROM located GROUP BY {ENTRY}
HAVING max(CASE WHEN kind = 'holdout' OR (kind = 'stage' AND stage_index = 0) THEN 1 ELSE 0 END) = 0
"""


@check("Nodes reached in flow order with non-decreasing dates, each entry from the first stage (or the holdout).")
def stages_in_order(conn, rules, days) -> tuple[bool, dict]:
    wrong = _invalid(conn, rules, ORDER_VIOLATIONS, days)
    return wrong == 0, {"moves_out_of_order": wrong}


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
                                AND s.entry = sampled.entry AND s.entered_at <= sampled.entered_at
                                AND (n.kind = 'holdout' OR (n.kind = 'stage' AND n.stage_index = 0)))""",
        None,
        sample=True,
    )
    return wrong == 0, {"invalid_sampled_rows": wrong}


@check("A sample of A/B assignments and holdouts: the bucket recomputed from its hash falls in the node's range.")
def assignment_stable(conn, rules, days) -> tuple[bool, dict]:
    journeys.load_definitions(conn, rules.rules.journeys)
    where, params = in_days("s.entered_at", days)
    sample = conn.execute(  # not a merged person's: a merge keeps the earlier assignment, made under another id
        f"""SELECT s.journey_id, coalesce(t.node, 'holdout'), s.customer_id, coalesce(t.salt, r.salt),
                   coalesce(v.bucket_from, '0000'), CASE WHEN v.kind = 'holdout' THEN r.holdout_below ELSE v.bucket_below END
            FROM journey.journey_state AS s
            JOIN journey_nodes AS v USING (journey_id, node)
            JOIN journey_rules AS r USING (journey_id)
            LEFT JOIN journey_nodes AS t ON t.journey_id = v.journey_id AND t.node = v.choice_of
            WHERE v.kind IN ('variant', 'control', 'holdout') AND {where}
              AND s.customer_id NOT IN (SELECT customer_id FROM journey.journey_state WHERE merged_on IS NOT NULL)
            ORDER BY md5(s.customer_id || s.node) LIMIT 1000""",
        params,
    ).fetchall()
    wrong = [row for row in sample if not row[4] <= flow.assignment_bucket(*row[:4]) < (row[5] or "g")]
    return not wrong, {"sampled": len(sample), "wrong": len(wrong), "first_wrong": str(wrong[:3])}


@check(
    "Each A/B test's arms hold their weights' shares of its customers, within 4 standard deviations (from 100 on).",
    blocking=False,
)
def variant_shares(conn, rules, days) -> tuple[bool, dict]:
    journeys.load_definitions(conn, rules.rules.journeys)
    rows = conn.execute(
        f"""WITH arms AS (
               SELECT v.journey_id, v.choice_of AS test, v.node, v.bucket_from, v.bucket_below, count(s.customer_id) AS n
               FROM journey_nodes AS v LEFT JOIN ({PEOPLE_STATE}) AS s USING (journey_id, node)
               WHERE v.kind IN ('variant', 'control') GROUP BY ALL)
           SELECT node, n, sum(n) OVER (PARTITION BY journey_id, test), bucket_from, bucket_below FROM arms"""
    ).fetchall()
    off = {}
    for node, n, total, low, below in rows:
        share = ((int(below, 16) if below else flow.BUCKETS) - int(low, 16)) / flow.BUCKETS
        if total >= 100 and abs(n - total * share) > 4 * (total * share * (1 - share)) ** 0.5:
            off[node] = f"{n} of {total}, expected {total * share:.0f}"
    return not off, {"arms_off": str(off) if off else "none", "arms": len(rows)}


# An activation of a merged person was sent to one of the profiles, on its own path: a merge keeping the other
# profile's earlier branch or variant leaves it without its node in the person's state.
UNMERGED = """NOT EXISTS (SELECT 1 FROM journey.journey_state AS m WHERE m.journey_id = a.journey_id
                                AND m.customer_id = a.customer_id AND m.merged_on IS NOT NULL)"""


@check(
    "Exactly one activation row per activation step reached in the state (in the days written), and each row a "
    "step its customer holds by then (a merge may have moved the step to an earlier date)."
)
def activations_match_state(conn, rules, days) -> tuple[bool, dict]:
    journeys.load_definitions(conn, rules.rules.journeys)
    on_entered, params = in_days("s.entered_at", days)
    on_activated, _ = in_days("a.activated_on", days)
    step = "SELECT journey_id, node, activation, position FROM journey_nodes WHERE activation IS NOT NULL"
    reached = f"""SELECT s.journey_id, s.customer_id, n.activation, s.entered_at FROM journey.journey_state AS s
                  JOIN ({step}) AS n USING (journey_id, node) WHERE s.merged_on IS NULL AND {on_entered}
                    AND NOT EXISTS (SELECT 1 FROM journey.journey_state AS c JOIN journey_nodes AS k USING (journey_id, node)
                                    WHERE k.kind = 'control' AND k.position < n.position AND c.journey_id = s.journey_id
                                      AND c.customer_id = s.customer_id AND c.entry = s.entry)"""
    written = f"SELECT a.* FROM journey.activations AS a WHERE {on_activated}"
    on_day, _ = in_days("a.day", days)
    capped = f"SELECT journey_id, customer_id, activation, day FROM journey.capped_activations AS a WHERE {on_day}"
    missing = count(conn, f"({reached}) EXCEPT ALL ({written} UNION ALL {capped})", params)
    unexplained = count(
        conn,
        f"""SELECT 1 FROM ({written}) AS a WHERE NOT EXISTS (
                SELECT 1 FROM journey.journey_state AS s JOIN ({step}) AS n USING (journey_id, node)
                WHERE s.journey_id = a.journey_id AND s.customer_id = a.customer_id AND n.activation = a.activation
                  AND s.entered_at <= a.activated_on) AND {UNMERGED}""",
        params,
    )
    repeated = count(conn, f"({written}) EXCEPT ALL (SELECT DISTINCT * FROM ({written}))", params)
    wrong = missing + unexplained + repeated
    return wrong == 0, {"missing": missing, "unexplained": unexplained, "repeated": repeated}


ACTIVATIONS_KEY = dg.AssetKey(["journey", "activations"])
GOAL_REPORT_KEY = dg.AssetKey(["journey", "goal_report"])


@check(
    "No activation for a customer in the holdout, or in an A/B test's control from the test on, while that entry is "
    "open (an activation counts as after the control when all its steps are)."
)
def none_for_control_or_holdout(conn, rules, days) -> tuple[bool, dict]:
    journeys.load_definitions(conn, rules.rules.journeys)
    on_activated, params = in_days("a.activated_on", days)
    wrong = count(
        conn,
        f"""SELECT 1 FROM journey.activations AS a
            JOIN journey.journey_state AS s ON s.journey_id = a.journey_id AND s.customer_id = a.customer_id
            JOIN journey_nodes AS n ON n.journey_id = s.journey_id AND n.node = s.node
            WHERE n.kind IN ('control', 'holdout') AND s.entered_at <= a.activated_on AND {on_activated} AND {UNMERGED}
              AND n.position < (SELECT min(sent.position) FROM journey_nodes AS sent
                                WHERE sent.journey_id = a.journey_id AND sent.activation = a.activation)
              AND NOT EXISTS (SELECT 1 FROM journey.journey_state AS ended JOIN journey_nodes AS t USING (journey_id, node)
                              WHERE ended.journey_id = s.journey_id AND ended.customer_id = s.customer_id
                                AND ended.entry = s.entry AND t.kind IN {journeys.TERMINAL}
                                AND ended.entered_at < a.activated_on)""",
        params,
    )
    return wrong == 0, {"activations_wrong": wrong}


@check("The goal report's arms of each A/B test hold every entry that reached the test, once.")
def report_arms_add_up(conn, rules, days) -> tuple[bool, dict]:
    journeys.load_definitions(conn, rules.rules.journeys)
    wrong = count(
        conn,
        f"""SELECT 1 FROM (SELECT s.journey_id, s.node AS step, count(*) AS reached FROM ({PEOPLE_STATE}) AS s
                         JOIN journey_nodes AS n USING (journey_id, node) WHERE n.kind = 'ab_test' GROUP BY ALL) AS t
           FULL JOIN (SELECT journey_id, step, sum(entered) AS entered FROM journey.goal_report
                      WHERE arm LIKE 'variant:%' GROUP BY ALL) AS r USING (journey_id, step)
           WHERE t.reached IS DISTINCT FROM r.entered""",
    )
    return wrong == 0, {"tests_not_adding_up": wrong}


STATE_CHECKS = [
    one_terminal_node,
    nothing_after_terminal,
    one_open_entry,
    stages_in_order,
    sampled_state_is_valid,
    assignment_stable,
    variant_shares,
]
ACTIVATIONS_CHECKS = [activations_match_state, none_for_control_or_holdout]
GOAL_REPORT_CHECKS = [report_arms_add_up]
