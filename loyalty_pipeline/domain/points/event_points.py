"""Points for events besides purchases (the `events` topic, `event_rules:`; docs/decisions.md, Event points)."""

from datetime import date

import duckdb

from loyalty_pipeline.domain.config import EARLIEST_START as EPOCH
from loyalty_pipeline.domain.config import Rules
from loyalty_pipeline.domain.points.campaigns import cap_period_start
from loyalty_pipeline.lib.sql import load
from loyalty_pipeline.lib.warehouse import insert_rows

DAY_EVENT_AWARDS = load(__file__)["day_event_awards"]  # event_points.sql


def _earliest(rules: Rules, day: date) -> date:
    """The first day whose awards a rule's `once` or cap looks back to from `day`: what the day reads of the ledger
    (all of it for `once: ever` and caps per campaign)."""
    starts = [day]
    for rule in rules.event_rules:
        periods = [rule.cap.per] if rule.cap else []
        periods += {"ever": ["campaign"], "per_year": ["year"]}.get(rule.once, [])
        starts += [cap_period_start(per, day) or EPOCH for per in periods]
    return min(starts)


def load_event_rules(conn: duckdb.DuckDBPyConnection, rules: Rules, day: date) -> dict:
    """Temp table `event_rules`, one row per rule; returns the parameters DAY_EVENT_AWARDS reads."""
    conn.execute(
        """CREATE OR REPLACE TEMP TABLE event_rules (type VARCHAR, points BIGINT, once VARCHAR, cap_points BIGINT,
               cap_from DATE, within_days INTEGER, referee_points BIGINT, has_criteria BOOLEAN)"""
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
                cap_period_start(rule.cap.per, day) if rule.cap else None,
                rule.within_days,
                rule.points if rule.referee_points is None else rule.referee_points,
                rule.criteria is not None,
            ]
            for rule in rules.event_rules
        ],
    )
    return {
        "referral_days": max([rule.within_days or 0 for rule in rules.event_rules], default=0),
        "earliest": _earliest(rules, day),
    }
