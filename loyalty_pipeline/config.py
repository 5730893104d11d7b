"""The rules file (loyalty.yaml) as typed, validated objects; every key optional, unknown keys refused."""

from decimal import Decimal
from pathlib import Path

import pydantic
import yaml


class Rule(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class Tier(Rule):
    name: str
    above: Decimal


class StampCard(Rule):
    product_id: str = "coffee"
    cycle: pydantic.PositiveInt = 6


class Promotion(Rule):
    name: str
    considers: list[str]
    require_all: list[str] = []
    exclude: list[str] = []
    min_spend: Decimal | None = None


class Points(Rule):
    earn_rate: Decimal = pydantic.Field(default=Decimal(1), ge=0)
    validity_days: pydantic.NonNegativeInt = 365


DEFAULT_TIERS = [Tier(name="GOLD", above=400), Tier(name="SILVER", above=300), Tier(name="BRONZE", above=200)]
DEFAULT_PROMOTIONS = [
    Promotion(name="french_poodle", considers=["dog", "beret"], require_all=["dog", "beret"]),
    Promotion(name="loose_leaf", considers=["coffee", "tea"], require_all=["coffee"], exclude=["tea"], min_spend=20),
]


class Rules(Rule):
    tiers: list[Tier] = DEFAULT_TIERS
    default_tier: str = "CLIMBING"
    stamp_card: StampCard = StampCard()
    promotions: list[Promotion] = DEFAULT_PROMOTIONS
    points: Points = Points()
    journeys: list[dict] = []

    @pydantic.field_validator("tiers")
    @classmethod
    def _highest_first(cls, tiers: list[Tier]) -> list[Tier]:
        # Tiers are matched top-down with strict ">", so keep them highest threshold first.
        return sorted(tiers, key=lambda tier: tier.above, reverse=True)


class RulesError(ValueError):
    """The rules file is missing, unreadable or invalid; the message names the file and the bad key."""


def load_rules(path: str | Path | None) -> Rules:
    """Reads and validates a rules file; None means the built-in defaults."""
    if path is None:
        return Rules()
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise RulesError(f"cannot read rules file {path}: {error}") from error
    if not isinstance(document, dict):
        raise RulesError(f"rules file {path}: expected a mapping at the top level")
    try:
        return Rules.model_validate(document)
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()
        )
        raise RulesError(f"rules file {path}: {problems}") from error
