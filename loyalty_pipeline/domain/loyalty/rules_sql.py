"""Rule values that SQL reads, installed on a connection. The values arrive as bound parameters, never as SQL
text, and queries read them from temp tables rather than knowing how the rules are stored."""

import duckdb

from loyalty_pipeline.domain.config import Rules
from loyalty_pipeline.domain.loyalty.tiers import load_levels


def load_tiers(conn: duckdb.DuckDBPyConnection, rules: Rules) -> None:
    """Temp table `tier_levels(rank, name, above, earn_multiplier)`: the tiers, rank 0 the default tier."""
    load_levels(conn, rules)


def with_tier(totals: str) -> str:
    """The rows of `totals` (a query with `user_id`) with `reward_level`: the tier the member holds now
    (loyalty.tier_status), else the default tier (portable SQL; `load_tiers` first)."""
    return f"""SELECT totals.*, coalesce(held.tier, (SELECT name FROM tier_levels WHERE rank = 0)) AS reward_level
               FROM ({totals}) AS totals LEFT JOIN loyalty.tier_status AS held ON held.user_id = totals.user_id"""


def tier_as_of(people: str) -> str:
    """`people` (a query with `user_id`) with `reward_level`: the tier held at the end of day `$as_of`
    (loyalty.tier_history), else the default tier (`load_tiers` first)."""
    return f"""SELECT people.*, coalesce(held.tier, (SELECT name FROM tier_levels WHERE rank = 0)) AS reward_level
               FROM ({people}) AS people LEFT JOIN loyalty.tier_history AS held
                    ON held.user_id = people.user_id AND held.valid_from < CAST($as_of::DATE + 1 AS TIMESTAMP)
                   AND (held.valid_until IS NULL OR held.valid_until >= CAST($as_of::DATE + 1 AS TIMESTAMP))"""
