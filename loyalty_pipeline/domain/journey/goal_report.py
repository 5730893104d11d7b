"""Whether a journey worked: goal conversion per journey, branch and variant, against the control and the holdout."""

import duckdb

from loyalty_pipeline.lib.sql import load

_SQL = load(__file__)  # goal_report.sql
DDL = _SQL["ddl"]


def rebuild(conn: duckdb.DuckDBPyConnection) -> None:
    """The report from the whole state (an aggregate: it costs a scan of the state, not a replay)."""
    conn.execute("DELETE FROM journey.goal_report")
    conn.execute(_SQL["report"])


def markdown(conn: duckdb.DuckDBPyConnection) -> str:
    """The report as a table for the UI: one line per arm, the lift as percentage points with its interval."""
    rows = conn.execute(
        """SELECT journey_id, step, arm, entered, reached_goal, conversion_rate, median_days_to_goal, compared_with,
                  lift, lift_low, lift_high
           FROM journey.goal_report ORDER BY journey_id, step, arm"""
    ).fetchall()
    if not rows:
        return "_nobody entered a journey yet_"
    lines = [
        "| journey | step | arm | entered | goal | conversion | median days | lift vs control (95% interval) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for journey, step, arm, entered, goal, rate, days, control, lift, low, high in rows:
        versus = f"{lift:+.1%} ({low:+.1%} to {high:+.1%}) vs {control}" if lift is not None else ""
        median = "" if days is None else f"{days:g}"
        lines.append(f"| {journey} | `{step or '-'}` | {arm} | {entered} | {goal} | {rate:.1%} | {median} | {versus} |")
    return "\n".join(lines)
