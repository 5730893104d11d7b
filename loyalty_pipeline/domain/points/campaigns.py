"""Earning campaigns (docs/decisions.md, Campaigns): extra points on the purchases a campaign applies to, each
award its own lot (`bonus:<campaign>:<purchase_id>`) beside the purchase's earn, capped per member exactly."""

from datetime import date

import duckdb

from loyalty_pipeline.domain.config import WEEKDAYS, Rules
from loyalty_pipeline.lib.sql import load
from loyalty_pipeline.lib.warehouse import insert_rows

_SQL = load(__file__)  # campaigns.sql
DAY_BOUGHT = _SQL["day_bought"]
DAY_BONUSES = _SQL["day_bonuses"]


def load_campaigns(conn: duckdb.DuckDBPyConnection, rules: Rules) -> None:
    """Temp tables `campaign_rules` (one row per campaign) and `campaign_targets(id, kind, value)`: what each applies
    to, a purchase matching one value of each kind named (`kinds_required`)."""
    conn.execute(
        """CREATE OR REPLACE TEMP TABLE campaign_rules (
               id VARCHAR, multiplier DECIMAL(18,4), bonus_points BIGINT, from_day DATE, until_day DATE,
               hour_from INTEGER, hour_to INTEGER, cap_points BIGINT, cap_per VARCHAR, stacking VARCHAR,
               kinds_required INTEGER)"""
    )
    conn.execute("CREATE OR REPLACE TEMP TABLE campaign_targets (id VARCHAR, kind VARCHAR, value VARCHAR)")
    rows, targets = [], []
    for campaign in rules.campaigns:
        kinds = {
            "product": campaign.applies_to.products,
            "category": campaign.applies_to.categories,
            "tier": campaign.applies_to.tiers,
            "day": [str(WEEKDAYS.index(day) + 1) for day in campaign.when.days],
        }
        targets += [[campaign.id, kind, value] for kind, values in kinds.items() for value in values]
        when, cap = campaign.when, campaign.cap
        rows.append(
            [
                campaign.id,
                campaign.award.multiplier,
                campaign.award.bonus_points,
                when.from_date,
                when.until,
                when.hours[0] if when.hours else None,
                when.hours[1] if when.hours else None,
                cap.points if cap else None,
                cap.per if cap else None,
                campaign.stacking,
                sum(1 for values in kinds.values() if values),
            ]
        )
    insert_rows(conn, "campaign_rules", rows)
    insert_rows(conn, "campaign_targets", targets)


def day_params(day: date) -> dict:
    return {"weekday": str(day.isoweekday())}
