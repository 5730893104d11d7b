"""Rule values that SQL reads, installed on a connection. The values arrive as bound parameters, never as SQL
text, and queries read them from temp tables rather than knowing how the rules are stored."""

import duckdb

from loyalty_pipeline.domain.config import Rules
from loyalty_pipeline.lib.warehouse import insert_rows


def load_tiers(conn: duckdb.DuckDBPyConnection, rules: Rules) -> None:
    """Temp table `rule_tiers(name, above)`: the tiers, and the default tier with `above` NULL."""
    conn.execute("CREATE OR REPLACE TEMP TABLE rule_tiers (name VARCHAR, above DECIMAL(18,2))")
    insert_rows(conn, "rule_tiers", [[tier.name, tier.above] for tier in rules.tiers] + [[rules.default_tier, None]])


def with_tier(totals: str) -> str:
    """The rows of `totals` (a query with `total`) with `reward_level`: the tier with the highest threshold that
    `total` exceeds (strict '>'), else the default tier (portable SQL; `load_tiers` first)."""
    return f"""SELECT totals.*, coalesce(max_by(tier.name, tier.above),
                                    (SELECT name FROM rule_tiers WHERE above IS NULL)) AS reward_level
               FROM ({totals}) AS totals LEFT JOIN rule_tiers AS tier ON totals.total > tier.above
               GROUP BY ALL"""
