"""Tier periods and downgrades (docs/decisions.md, Tier periods): each member's tier is a fold over their events in
time order (period ends, grace ends, purchases, returns), in SQL. What a member's tier history is follows from their
purchases, returns and the calendar alone, so a member's rows are recomputed whole from their purchases when they
change, and so are the rows of members a period end or grace end has passed for since."""

from datetime import datetime
from decimal import Decimal

import duckdb

from loyalty_pipeline.domain.config import Rules
from loyalty_pipeline.domain.identity.identity import ids_as_of, purchases_now
from loyalty_pipeline.lib.sql import load
from loyalty_pipeline.lib.warehouse import insert_rows

_SQL = load(__file__)  # tiers.sql
DDL = _SQL["ddl"]
HISTORY = _SQL["history"]
STATUS = _SQL["status"]

# Members whose rows time alone changes by `$as_of`: their tier's expiry, or their period's end, has passed.
DUE = "SELECT user_id AS person FROM loyalty.tier_status WHERE tier_expires_at < $as_of"


def with_expiry(profiles: str) -> str:
    """`profiles` (a query with `reward_level` and `first_purchase_at`) with `tier_expires_in_days`: days from the
    end of day `$as_of` to the tier's next evaluation, its period's end (a pending grace not counted); NULL for the
    default tier and lifetime tiers; and `tier_period_start`, the day the period holding `$as_of` began (NULL:
    lifetime). Parameters `$trunc`, `$months`, `$days` of `params`; `load_levels` first."""
    step = "{k} * $months * INTERVAL 1 MONTH + {k} * $days * INTERVAL 1 DAY"
    return f"""
SELECT * EXCLUDE (anchor, k, before, b0, b1),
       CASE WHEN reward_level <> (SELECT name FROM tier_levels WHERE rank = 0) AND $months + $days > 0
            THEN date_diff('day', $as_of::DATE, CASE WHEN b0 > $as_of::DATE THEN b0 ELSE b1 END) END
           AS tier_expires_in_days,
       CASE WHEN $months + $days > 0 THEN CASE WHEN b0 > $as_of::DATE THEN before ELSE b0 END END AS tier_period_start
FROM (SELECT *, CAST(anchor + {step.format(k="(k - 1)")} AS DATE) AS before, CAST(anchor + {step.format(k="k")} AS DATE) AS b0,
             CAST(anchor + {step.format(k="(k + 1)")} AS DATE) AS b1
      FROM (SELECT *, CAST(floor(CAST(CASE WHEN $months > 0 THEN date_diff('month', anchor, $as_of::DATE)
                                           ELSE date_diff('day', anchor, $as_of::DATE) END AS DOUBLE)
                                 / greatest($months + $days, 1)) AS BIGINT) AS k
            FROM (SELECT *, CAST(date_trunc($trunc, CASE $trunc WHEN 'day' THEN first_purchase_at
                                                                ELSE $as_of::TIMESTAMP END) AS DATE) AS anchor
                  FROM ({profiles}))))
"""


def with_progress(profiles: str) -> str:
    """`profiles` (a table of with_expiry's rows) with `to_next_tier`: what the period still needs at the end of
    `$as_of` for the tier above the one held, counted as tier_status counts it (NULL at the top). It sums the
    current period's purchases of the profiles' people (resolved as of `$as_of`): built only when a criterion reads
    it. Parameters of `params` and `$as_of` (a day)."""
    return f"""
WITH bought AS (
    SELECT coalesce(ids.customer_id, p.user_id) AS user_id, p.purchased_at,
           CASE $measure WHEN 'spend' THEN coalesce(p.price, 0)
                         WHEN 'points_earned' THEN floor(coalesce(p.price, 0) * $earn_rate::DECIMAL(18,6))
                         ELSE 1 END AS v
    FROM loyalty.enriched_purchases AS p
    LEFT JOIN ({ids_as_of("SELECT user_id FROM loyalty.enriched_purchases WHERE day <= $as_of")}) AS ids
           ON ids.id_value = p.user_id
    WHERE p.day <= $as_of AND (p.returned_at IS NULL OR p.returned_at >= CAST($as_of::DATE + 1 AS TIMESTAMP))
), period AS (
    SELECT profile.user_id, sum(bought.v) AS value
    FROM {profiles} AS profile JOIN bought ON bought.user_id = profile.user_id
    WHERE profile.tier_period_start IS NULL OR bought.purchased_at >= profile.tier_period_start
    GROUP BY profile.user_id
)
SELECT profile.*, CAST(up.above - coalesce(period.value, 0) + $unit AS DECIMAL(18,2)) AS to_next_tier
FROM {profiles} AS profile
LEFT JOIN tier_levels AS held ON held.name = profile.reward_level
LEFT JOIN tier_levels AS up ON up.rank = held.rank + 1
LEFT JOIN period ON period.user_id = profile.user_id
"""


def load_levels(conn: duckdb.DuckDBPyConnection, rules: Rules) -> None:
    """Temp tables `tier_levels(rank, name, above, earn_multiplier)`, rank 0 the default tier (lowest first), and
    `tier_rule(thresholds)`: the thresholds in rank order (a value qualifies for the rank of thresholds below it)."""
    levels = sorted(rules.tiers, key=lambda tier: tier.above)
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE tier_levels "
        "(rank INTEGER, name VARCHAR, above DECIMAL(18,2), earn_multiplier DECIMAL(18,4))"
    )
    insert_rows(
        conn,
        "tier_levels",
        [[0, rules.default_tier, None, Decimal(1)]]
        + [[rank, tier.name, tier.above, tier.earn_multiplier] for rank, tier in enumerate(levels, start=1)],
    )
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE tier_rule AS "  # no levels: an empty list, never NULL
        "SELECT coalesce(list_sort(list(above)), []::DECIMAL(18,2)[]) AS thresholds FROM tier_levels WHERE rank > 0"
    )


def params(rules: Rules, as_of: datetime) -> dict:
    policy = rules.tier_policy
    trunc, months, days = policy.step()
    return {
        "as_of": as_of,
        "trunc": trunc,
        "months": months,
        "days": days,
        "grace_days": policy.grace_days,
        "one_down": policy.downgrade == "one_down",
        "on_return": policy.downgrade_on_return,
        "measure": policy.qualify_on,
        "earn_rate": str(rules.points.earn_rate),
        "unit": Decimal("0.01") if policy.qualify_on == "spend" else Decimal(1),
    }


def fold(conn: duckdb.DuckDBPyConnection, rules: Rules, as_of: datetime, people: str | None = None) -> dict:
    """Temp table `tier_fold`: the tier through the events before `as_of` of everyone, or of `people` (a query of
    one column `person`); returns the parameters HISTORY and STATUS read it with."""
    load_levels(conn, rules)
    values = params(rules, as_of)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE tier_purchases AS {purchases_now(people or '', returned=True)}")
    lifetime = values["months"] + values["days"] == 0
    for name in ("ends", "events", "fold_lifetime") if lifetime else ("ends", "events", "starts", "fold"):
        statement = _SQL[name]
        conn.execute(statement, {key: value for key, value in values.items() if f"${key}" in statement})
    return values
