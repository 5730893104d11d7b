"""Points for events besides purchases (the `events` topic, `event_rules:`; docs/decisions.md, Event points)."""

import duckdb

from loyalty_pipeline.domain.config import Rules
from loyalty_pipeline.lib.sql import load
from loyalty_pipeline.lib.warehouse import insert_rows

DAY_EVENT_AWARDS = load(__file__)["day_event_awards"]  # event_points.sql


def load_event_rules(conn: duckdb.DuckDBPyConnection, rules: Rules) -> dict:
    """Temp table `event_rules`, one row per rule; returns the parameters DAY_EVENT_AWARDS reads."""
    conn.execute(
        """CREATE OR REPLACE TEMP TABLE event_rules (type VARCHAR, points BIGINT, once VARCHAR, cap_points BIGINT,
               cap_per VARCHAR, within_days INTEGER, referee_points BIGINT)"""
    )
    insert_rows(
        conn,
        "event_rules",
        [
            [
                rule.type,
                rule.points,
                rule.once,
                rule.cap.points if rule.cap else None,
                rule.cap.per if rule.cap else None,
                rule.within_days,
                rule.points if rule.referee_points is None else rule.referee_points,
            ]
            for rule in rules.event_rules
        ],
    )
    return {"referral_days": max([rule.within_days or 0 for rule in rules.event_rules], default=0)}
