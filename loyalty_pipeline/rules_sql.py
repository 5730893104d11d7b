"""Rule values that SQL reads, installed on a connection. The values arrive as bound parameters, never as SQL
text, and queries call the macro rather than knowing how the rules are stored."""

import duckdb

from loyalty_pipeline.config import Rules
from loyalty_pipeline.warehouse import insert_rows


def install_tiers(conn: duckdb.DuckDBPyConnection, rules: Rules) -> None:
    """Macro `reward_level(total)`: the tier with the highest threshold that `total` exceeds (strict '>'), else the
    default tier. Call it once per connection before any query that uses the macro."""
    conn.execute("CREATE OR REPLACE TEMP TABLE rule_tiers (name VARCHAR, above DECIMAL(18,2))")
    insert_rows(conn, "rule_tiers", [[tier.name, tier.above] for tier in rules.tiers] + [[rules.default_tier, None]])
    conn.execute(
        """CREATE OR REPLACE TEMP MACRO reward_level(total) AS coalesce(
               (SELECT arg_max(name, above) FROM rule_tiers WHERE total > above),
               (SELECT name FROM rule_tiers WHERE above IS NULL))"""
    )
