"""Earning campaigns (docs/decisions.md, Campaigns): extra points on the purchases a campaign applies to, each
award its own lot (`bonus:<campaign>:<purchase_id>`) beside the purchase's earn, capped per member exactly."""

from datetime import date, timedelta

import duckdb

from loyalty_pipeline.domain.config import WEEKDAYS, Rules
from loyalty_pipeline.domain.customer.profiles import behaviour_sql, totals_from_start
from loyalty_pipeline.domain.journey.criteria import checked_sql
from loyalty_pipeline.domain.journey.journeys import CriterionFailed
from loyalty_pipeline.domain.loyalty.tiers import with_expiry
from loyalty_pipeline.lib.sql import load
from loyalty_pipeline.lib.warehouse import insert_rows

_SQL = load(__file__)  # campaigns.sql
DAY_BOUGHT = _SQL["day_bought"]
DAY_BONUSES = _SQL["day_bonuses"]


def cap_period_start(per: str | None, day: date) -> date | None:
    """The first day of the cap period holding `day` (weeks start on Monday); None: no period (per campaign)."""
    return {
        "day": day,
        "week": day - timedelta(days=day.weekday()),
        "month": day.replace(day=1),
        "year": day.replace(month=1, day=1),
    }.get(per)


def load_campaigns(conn: duckdb.DuckDBPyConnection, rules: Rules, day: date | None = None) -> None:
    """Temp tables `campaign_rules` (one row per campaign, `cap_from` the start of the cap period holding `day`) and
    `campaign_targets(id, kind, value)`: what each applies to, a purchase matching one value of each kind named
    (`kinds_required`)."""
    conn.execute(
        """CREATE OR REPLACE TEMP TABLE campaign_rules (
               id VARCHAR, multiplier DECIMAL(18,4), bonus_points BIGINT, from_day DATE, until_day DATE,
               hour_from INTEGER, hour_to INTEGER, cap_points BIGINT, cap_per VARCHAR, cap_from DATE,
               stacking VARCHAR, kinds_required INTEGER, has_criteria BOOLEAN)"""
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
                cap_period_start(cap.per, day) if cap and day else None,
                campaign.stacking,
                sum(1 for values in kinds.values() if values),
                campaign.criteria is not None,
            ]
        )
    insert_rows(conn, "campaign_rules", rows)
    insert_rows(conn, "campaign_targets", targets)


def day_params(day: date) -> dict:
    return {"weekday": str(day.isoweekday())}


def check_criteria(conn: duckdb.DuckDBPyConnection, rules: Rules, day: date) -> None:
    """Temp table `criteria_met(kind, id, user_id)`: the members of the day's purchases and events whose profile at
    the start of `day` (the end of the day before: journey criteria's columns) meets each campaign's and event rule's
    criteria. Profiles are summed only when a rule has criteria."""
    conn.execute("CREATE OR REPLACE TEMP TABLE criteria_met (kind VARCHAR, id VARCHAR, user_id VARCHAR)")
    written = [("campaign", campaign.id, campaign.criteria) for campaign in rules.campaigns] + [
        ("event", rule.type, rule.criteria) for rule in rules.event_rules
    ]
    written = [(kind, name, criterion) for kind, name, criterion in written if criterion]
    if not written:
        return
    before = day - timedelta(days=1)
    totals_from_start(
        conn, before, "SELECT user_id AS person FROM day_bought UNION SELECT user_id FROM day_events_by_person"
    )
    trunc, months, days = rules.tier_policy.step()
    conn.execute(  # the customers export adds no one: only the day's members are judged
        f"CREATE OR REPLACE TEMP TABLE award_profile AS "
        f"{with_expiry(behaviour_sql('(SELECT * FROM raw.customers WHERE false)'))}",
        {"as_of": before, "trunc": trunc, "months": months, "days": days},
    )
    for kind, name, criterion in written:
        try:  # the checked re-rendering of the criterion, never the raw text
            conn.execute(
                f"INSERT INTO criteria_met SELECT $kind, $id, user_id FROM award_profile WHERE {checked_sql(criterion)}",
                {"kind": kind, "id": name},
            )
        except duckdb.Error as error:  # e.g. an overflow only real values reach (load tries sample profiles)
            raise CriterionFailed(f"{kind} {name}, criteria: fails on the profiles of {day}: {error}") from None
