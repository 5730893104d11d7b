"""Frequency caps across journeys (activations: max_per_day, max_per_week): which reached activations are delivered."""

from datetime import date, timedelta

import duckdb

from loyalty_pipeline.domain.config import Activations
from loyalty_pipeline.lib.sql import load

_SQL = load(__file__)  # caps.sql
DDL = _SQL["ddl"]
NO_CAP = 2**31  # a cap not set


def decide(conn: duckdb.DuckDBPyConnection, caps: Activations, first: date, end: date) -> None:
    """Temp `decided(journey_id, customer_id, activation, activated_on, reason)`: the window's reached activations,
    reason NULL for those delivered. Day by day: a day's week counts the days before it as delivered."""
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE decided (journey_id VARCHAR, customer_id VARCHAR, activation VARCHAR, "
        "activated_on DATE, reason VARCHAR)"
    )
    limits = {"per_day": caps.max_per_day or NO_CAP, "per_week": caps.max_per_week or NO_CAP, "first": first}
    for n in range((end - first).days):
        day = first + timedelta(days=n)
        conn.execute(_SQL["decide_day"], {**limits, "day": day, "week_start": day - timedelta(days=6)})
