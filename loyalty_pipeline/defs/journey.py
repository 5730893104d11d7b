"""Journey orchestration (docs/decisions.md, Journeys): state per customer and journey, and the activations
marketing tools pick up."""

from datetime import timedelta

import dagster as dg

from loyalty_pipeline.defs.automation.partitions import DECLARED, window_days
from loyalty_pipeline.defs.checks import check_results, check_specs, failed_blocking
from loyalty_pipeline.defs.customers import customers
from loyalty_pipeline.defs.errors import OneLineError
from loyalty_pipeline.defs.ingest import raw_topics
from loyalty_pipeline.defs.journey_checks import (
    ACTIVATIONS_CHECKS,
    ACTIVATIONS_KEY,
    GOAL_REPORT_CHECKS,
    GOAL_REPORT_KEY,
    STATE_CHECKS,
    STATE_KEY,
)
from loyalty_pipeline.defs.loyalty import enriched_purchases
from loyalty_pipeline.defs.metadata import (
    OWNERS,
    PORTABLE_KINDS,
    WAREHOUSE_POOL,
    bar_table,
    partition_metadata,
    preview,
    revision_of,
    table_metadata,
)
from loyalty_pipeline.defs.points import point_transactions
from loyalty_pipeline.defs.resources import RulesResource, Warehouse
from loyalty_pipeline.domain.identity import identity
from loyalty_pipeline.domain.journey import caps, goal_report, journeys, totals
from loyalty_pipeline.domain.loyalty.rules_sql import load_tiers
from loyalty_pipeline.domain.points import ledger
from loyalty_pipeline.lib import touched
from loyalty_pipeline.lib.chain import DayOrderError, mark_built, open_window
from loyalty_pipeline.lib.warehouse import count, transaction


def funnel_markdown(conn) -> str:
    """Customers per node for every journey, in node order, with a bar per node and the conversion to goal."""
    rows = conn.execute(
        """SELECT n.journey_id, n.node, count(s.customer_id) AS customers
           FROM journey_nodes AS n LEFT JOIN (  -- a holdout's goal is not the journey's
               SELECT s.journey_id, s.customer_id, s.node FROM journey.journey_state AS s
               LEFT JOIN (SELECT journey_id, customer_id, entry FROM journey.journey_state WHERE node = 'holdout') AS h
                      USING (journey_id, customer_id, entry)
               WHERE s.node = 'holdout' OR h.entry IS NULL) AS s USING (journey_id, node)
           GROUP BY n.journey_id, n.node, n.position ORDER BY n.journey_id, n.position"""
    ).fetchall()
    sections = []
    for journey_id in dict.fromkeys(row[0] for row in rows):
        nodes = [(node, n) for j, node, n in rows if j == journey_id]
        counts = dict(nodes)  # entries into the first stage (the holdout's are apart)
        entered, reached_goal = next(n for node, n in nodes if node.startswith("stage:")), counts.get("goal", 0)
        summary = (
            f"**{journey_id}**: {entered} entered, {reached_goal} reached the goal ({reached_goal / entered:.0%} conversion)"
            if entered
            else f"**{journey_id}**: nobody entered yet"
        )
        lines = [summary, "", bar_table(("node", "customers"), [(f"`{node}`", n) for node, n in nodes])]
        sections.append("\n".join(lines))
    return "\n\n".join(sections) or "_no journeys configured_"


STATE_SPEC = dg.AssetSpec(
    STATE_KEY,
    group_name="journey",
    owners=OWNERS,
    kinds=PORTABLE_KINDS,
    deps=[
        enriched_purchases,
        point_transactions,
        raw_topics["users"],
        raw_topics["user_activity"],
        customers,
        dg.AssetDep(
            STATE_KEY,
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
            ),
        ),
    ],
    description="Sparse journey state: the first day each customer reached each node (stage, step, exit, goal, end).",
)


def _journey_state(context: dg.AssetExecutionContext, conn, rules: RulesResource) -> dg.MaterializeResult:
    first, end = window_days(context)
    conn.execute(journeys.DDL + ledger.DDL + identity.DDL)
    load_tiers(conn, rules.rules)
    journeys.load_definitions(conn, rules.rules.journeys)
    ledger_first = conn.execute("SELECT min(day) FROM points.ledger_days").fetchall()[0][0]
    window = open_window(
        conn,
        "journey.journey_days",
        "journey state",
        "state",
        first,
        end,
        since=ledger_first if ledger_first and ledger_first < first else None,
    )
    _require_ledger(conn, first, end)
    window.begin(
        conn,
        drop_from_first=(
            touched.log_sql(journeys.PEOPLE_FROM, "journeys", touched.NEXT_SEQ),  # whose rows are dropped
            "DELETE FROM journey.journey_state WHERE entered_at >= $1 OR merged_on >= $1",
            "DELETE FROM journey.reached_activations WHERE day >= $1",
        ),
    )
    totals_as_of = totals.restore_profile_totals(conn, first)
    restored = totals_as_of is not None
    for day in window.days:  # in order: each day moves customers from where the previous day left them
        try:
            journeys.build_day(conn, rules.rules, window, day, totals_as_of)
        except journeys.CriterionFailed as error:  # a Failure: the UI shows the line first
            raise OneLineError(str(error)) from None
        totals_as_of = day
    if window.later_until is None:
        totals.keep_profile_totals(conn, totals_as_of, restored)
    return dg.MaterializeResult(
        asset_key=STATE_KEY,
        metadata={
            **table_metadata(conn, "journey.journey_state"),
            **partition_metadata(conn, "journey.journey_state", "entered_at", first, end, STATE_KEY),
            "customers_in_journeys": count(conn, "SELECT DISTINCT journey_id, customer_id FROM journey.journey_state"),
            "funnel": dg.MetadataValue.md(funnel_markdown(conn)),
            "preview": preview(
                conn,
                "SELECT * FROM journey.journey_state WHERE entered_at >= $1 AND entered_at < $2 "
                "ORDER BY entered_at, journey_id, customer_id",
                [first, end],
                limit=20,
            ),
        },
        check_results=check_results(STATE_KEY, STATE_CHECKS, conn, rules, (first, end)),
    )


def _require_ledger(conn, first, end) -> None:
    """Criteria read points balances: every day of the window needs its ledger day."""
    built = conn.execute(
        "SELECT count(*) FROM points.ledger_days WHERE day >= $1 AND day < $2", [first, end]
    ).fetchall()[0][0]
    if built < (end - first).days:
        raise DayOrderError(
            f"journey state: days {first}..{end - timedelta(days=1)} need the point ledger of those days, which is "
            f"not built for all of them; materialize points/point_transactions and journey/journey_state together "
            f"for {first}..{end - timedelta(days=1)} (one run)",
            (first, end - timedelta(days=1)),
        )


ACTIVATIONS_DDL = """
CREATE TABLE IF NOT EXISTS journey.activations (
    journey_id VARCHAR NOT NULL, customer_id VARCHAR NOT NULL, activation VARCHAR NOT NULL, activated_on DATE NOT NULL
);
CREATE TABLE IF NOT EXISTS journey.activation_days (day DATE PRIMARY KEY);  -- days handed to marketing tools
CREATE TABLE IF NOT EXISTS journey.activation_revisions (  -- activations of handed days a rebuild withdrew or added
    run_id VARCHAR NOT NULL, revised_at TIMESTAMP NOT NULL, reason VARCHAR NOT NULL,
    change VARCHAR NOT NULL,  -- withdrawn | added
    journey_id VARCHAR NOT NULL, customer_id VARCHAR NOT NULL, activation VARCHAR NOT NULL, activated_on DATE NOT NULL
);
"""

# Activations of days already handed out are not silently replaced: what changed is kept as a revision.
REVISE_ACTIVATIONS = """
INSERT INTO journey.activation_revisions
WITH handed AS (SELECT day FROM journey.activation_days WHERE day >= $first AND day < $end),
old AS (SELECT * FROM journey.activations WHERE activated_on IN (SELECT day FROM handed)),
new AS (SELECT * FROM new_activations WHERE activated_on IN (SELECT day FROM handed))
SELECT $run_id, $revised_at, $reason, 'withdrawn', * FROM (SELECT * FROM old EXCEPT ALL SELECT * FROM new)
UNION ALL
SELECT $run_id, $revised_at, $reason, 'added', * FROM (SELECT * FROM new EXCEPT ALL SELECT * FROM old)
"""


ACTIVATIONS_SPEC = dg.AssetSpec(
    ACTIVATIONS_KEY,
    group_name="journey",
    owners=OWNERS,
    kinds=PORTABLE_KINDS,
    deps=[STATE_KEY],
    skippable=True,  # not built when the state fails a blocking check
    description="One row per activation step a customer reached, on the day reached: what marketing tools send.",
)


def _activations(context: dg.AssetExecutionContext, conn, rules: RulesResource) -> dg.MaterializeResult:
    first, end = window_days(context)
    window = {"first": first, "end": end}
    conn.execute(journeys.DDL + ACTIVATIONS_DDL + caps.DDL)
    journeys.load_definitions(conn, rules.rules.journeys)
    limits = rules.rules.activations
    if limits.max_per_day or limits.max_per_week:
        caps.decide(conn, limits, first, end)
    else:
        conn.execute(
            """CREATE OR REPLACE TEMP TABLE decided AS SELECT journey_id, customer_id, activation,
               day AS activated_on, NULL::VARCHAR AS reason FROM journey.reached_activations
               WHERE day >= $first AND day < $end""",
            window,
        )
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE new_activations AS "
        "SELECT journey_id, customer_id, activation, activated_on FROM decided WHERE reason IS NULL"
    )
    revision = revision_of(context)
    replaced = """SELECT customer_id AS person FROM journey.activations WHERE activated_on >= $first AND activated_on < $end
                  UNION ALL SELECT customer_id FROM new_activations"""
    with transaction(conn):
        conn.execute(REVISE_ACTIVATIONS, {**window, **revision})
        conn.execute(touched.log_sql(replaced, "journeys", touched.NEXT_SEQ), window)  # old and new rows' people
        conn.execute("DELETE FROM journey.activations WHERE activated_on >= $first AND activated_on < $end", window)
        conn.execute("INSERT INTO journey.activations SELECT * FROM new_activations")
        conn.execute("DELETE FROM journey.capped_activations WHERE day >= $first AND day < $end", window)
        conn.execute("INSERT INTO journey.capped_activations SELECT * FROM decided WHERE reason IS NOT NULL")
        for n in range((end - first).days):
            conn.execute(mark_built("journey.activation_days"), {"day": first + timedelta(days=n)})
    window_rows = "SELECT * FROM journey.activations WHERE activated_on >= $first AND activated_on < $end"
    revised = "SELECT 1 FROM journey.activation_revisions WHERE run_id = $1 AND change = $2"
    return dg.MaterializeResult(
        asset_key=ACTIVATIONS_KEY,
        metadata={
            **table_metadata(conn, "journey.activations"),
            **partition_metadata(conn, "journey.activations", "activated_on", first, end, ACTIVATIONS_KEY),
            "activations_withdrawn": count(conn, revised, [revision["run_id"], "withdrawn"]),
            "activations_withdrawn_preview": revised_preview(conn, revision["run_id"], "withdrawn"),
            "activations_added_late": count(conn, revised, [revision["run_id"], "added"]),
            "activations_added_late_preview": revised_preview(conn, revision["run_id"], "added"),
            "preview": preview(conn, window_rows + " ORDER BY ALL", window, limit=20),
            "over_a_cap": count(conn, "SELECT 1 FROM decided WHERE reason IS NOT NULL"),
            "over_a_cap_preview": preview(
                conn, "SELECT * FROM decided WHERE reason IS NOT NULL ORDER BY activated_on, customer_id", {}, limit=20
            ),
        },
        check_results=check_results(ACTIVATIONS_KEY, ACTIVATIONS_CHECKS, conn, rules, (first, end)),
    )


def revised_preview(conn, run_id: str, change: str) -> dg.MetadataValue:
    """Which activations of days already handed out this run withdrew or added: what marketing tools must correct."""
    return preview(
        conn,
        "SELECT activated_on, journey_id, customer_id, activation FROM journey.activation_revisions "
        "WHERE run_id = $1 AND change = $2 ORDER BY ALL",
        [run_id, change],
        limit=20,
    )


GOAL_REPORT_SPEC = dg.AssetSpec(
    GOAL_REPORT_KEY,
    group_name="journey",
    owners=OWNERS,
    kinds=PORTABLE_KINDS,
    deps=[STATE_KEY],
    skippable=True,
    description="Whether each journey worked: entries, goal conversion and days to goal per journey, branch, variant "
    "and control, with the lift against the A/B test's control (the holdout, for the journey) and its 95% interval.",
)


def _goal_report(conn, rules: RulesResource) -> dg.MaterializeResult:
    conn.execute(journeys.DDL + identity.DDL + goal_report.DDL)
    journeys.load_definitions(conn, rules.rules.journeys)
    with transaction(conn):
        goal_report.rebuild(conn)
    return dg.MaterializeResult(
        asset_key=GOAL_REPORT_KEY,
        metadata={
            **table_metadata(conn, "journey.goal_report"),
            "report": dg.MetadataValue.md(goal_report.markdown(conn)),
        },
        check_results=check_results(GOAL_REPORT_KEY, GOAL_REPORT_CHECKS, conn, rules),
    )


@dg.multi_asset(
    name="journeys",
    specs=[STATE_SPEC, ACTIVATIONS_SPEC, GOAL_REPORT_SPEC],
    check_specs=check_specs(STATE_KEY, STATE_CHECKS)
    + check_specs(ACTIVATIONS_KEY, ACTIVATIONS_CHECKS)
    + check_specs(GOAL_REPORT_KEY, GOAL_REPORT_CHECKS),
    partitions_def=DECLARED,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
    pool=WAREHOUSE_POOL,
)
def journeys_step(context: dg.AssetExecutionContext, warehouse: Warehouse, rules: RulesResource):
    """The state, then the activations it reaches and the goal report, on one connection; a state failing a blocking check stops there
    (the step fails after reporting it, as a blocking check does)."""
    with warehouse.get_connection(portable=True) as conn:
        if STATE_KEY in context.selected_asset_keys:
            state = _journey_state(context, conn, rules)
            yield state
            if failed_blocking(state):
                return
        if ACTIVATIONS_KEY in context.selected_asset_keys:
            yield _activations(context, conn, rules)
        if GOAL_REPORT_KEY in context.selected_asset_keys:
            yield _goal_report(conn, rules)


journey_assets = [journeys_step]
