"""The rules file (loyalty.yaml) as typed, validated objects; every key optional, unknown keys refused."""

import functools
import operator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

import pydantic
import yaml

from loyalty_pipeline.domain.ingest.kafka import MAX_PRICE
from loyalty_pipeline.domain.journey.criteria import CriterionError, checked_sql

EARLIEST_START = date(1970, 1, 1)


def _unique(values: list, what: str) -> None:
    if len(set(values)) != len(values):
        raise ValueError(f"{what} must be unique, got {values}")


def _checked(criterion: str | None, where: str) -> str | None:
    """A criterion as checked SQL (journey criteria's rules), the error naming where it is written."""
    try:
        return None if criterion is None else checked_sql(criterion)
    except CriterionError as error:
        raise ValueError(f"{where}, criteria: {error}") from None


class Rule(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


# Amounts in rules are money (DECIMAL(18,2) in the warehouse) and counts of days or stamps: bounded at load, so
# a rule can never overflow a type in the middle of a run.
Money = pydantic.condecimal(ge=0, le=MAX_PRICE * 1000, decimal_places=2)
Days = pydantic.conint(ge=0, le=36_500, strict=True)  # strict: `true` is not 1
Text = pydantic.constr(strip_whitespace=True, min_length=1, max_length=200)  # names and ids written into tables
Name = pydantic.constr(
    pattern=r"^[A-Za-z0-9_-]+$"
)  # ids become parts of node names (stage:<id>:step:1) and txn ids (bonus:<id>:...)


class Tier(Rule):
    name: Text
    above: Money  # the member qualifies with a value strictly above this
    earn_multiplier: pydantic.condecimal(ge=0, le=100, decimal_places=4) = Decimal(1)


# The shortest period of each kind: a grace must end before the next period does.
SHORTEST_PERIOD_DAYS = {"month": 28, "quarter": 89, "year": 365}


class TierPolicy(Rule):
    """How a tier is qualified for and kept (docs/decisions.md, Tier periods). The list form of `tiers:` is
    today's rule: lifetime spend, a return moving the tier down with the spend."""

    qualify_on: Literal["spend", "points_earned", "purchase_count"] = "spend"
    period: Literal["lifetime", "calendar", "rolling", "anniversary"] = "lifetime"
    every: Literal["year", "quarter", "month"] | None = None  # calendar periods
    days: pydantic.conint(ge=1, le=36_500, strict=True) | None = None  # rolling periods
    downgrade: Literal["one_down", "to_qualified"] = "to_qualified"
    grace_days: Days = 0
    downgrade_on_return: bool = False

    @pydantic.model_validator(mode="after")
    def _period_complete(self) -> "TierPolicy":
        if (self.period == "calendar") != (self.every is not None):
            raise ValueError("tiers.every (year, quarter or month) goes with period: calendar, and only with it")
        if (self.period == "rolling") != (self.days is not None):
            raise ValueError("tiers.days goes with period: rolling, and only with it")
        if self.grace_days and self.grace_days >= self.period_days():
            raise ValueError(f"tiers.grace_days {self.grace_days} must be shorter than the period")
        return self

    def period_days(self) -> int:
        """The shortest period in days (lifetime: no end)."""
        return {"lifetime": 36_500, "anniversary": 365, "rolling": self.days or 0}.get(self.period) or (
            SHORTEST_PERIOD_DAYS[self.every]
        )

    def step(self) -> tuple[str, int, int]:
        """Where periods start and how long they are: (date_trunc unit of the anchor, months, days)."""
        if self.period == "calendar":
            return self.every, {"month": 1, "quarter": 3, "year": 12}[self.every], 0
        return "day", 12 if self.period == "anniversary" else 0, self.days or 0


LEGACY_TIER_POLICY = TierPolicy(downgrade_on_return=True)


class StampCard(Rule):
    product_id: Text = "coffee"
    cycle: pydantic.conint(ge=1, le=10_000, strict=True) = 6


class Promotion(Rule):
    name: Text
    considers: list[Text] = pydantic.Field(min_length=1)
    require_all: list[str] = []
    exclude: list[str] = []
    min_spend: Money | None = None

    @pydantic.model_validator(mode="after")
    def _can_match(self):
        if missing := sorted(set(self.require_all) - set(self.considers)):
            raise ValueError(f"promotion {self.name}: require_all {missing} not in considers, so it can never match")
        if both := sorted(set(self.require_all) & set(self.exclude)):
            raise ValueError(f"promotion {self.name}: {both} both required and excluded, so it can never match")
        if set(self.considers) <= set(self.exclude):
            raise ValueError(f"promotion {self.name}: every product it considers is excluded, so it can never match")
        return self


class Points(Rule):
    earn_rate: pydantic.condecimal(ge=0, le=1000, decimal_places=6) = Decimal(1)
    validity_days: Days = 365
    pending_days: Days = 0  # an earn lot is usable from occurred_at + pending_days (0: at once)


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # ISO order: isodow() is the index + 1


class Award(Rule):
    multiplier: pydantic.condecimal(gt=1, le=100, decimal_places=4) | None = None  # 2: the purchase earns twice
    bonus_points: pydantic.conint(ge=1, le=1_000_000_000, strict=True) | None = None  # a flat bonus per purchase

    @pydantic.model_validator(mode="after")
    def _one(self) -> "Award":
        if (self.multiplier is None) == (self.bonus_points is None):
            raise ValueError("an award is either multiplier: x or bonus_points: n")
        return self


class When(Rule):
    from_date: date | None = pydantic.Field(None, alias="from")  # inclusive, UTC days
    until: date | None = None  # inclusive
    days: list[Literal[WEEKDAYS]] = []  # none: every day
    hours: tuple[pydantic.conint(ge=0, le=23), pydantic.conint(ge=1, le=24)] | None = None  # [from, to) UTC hours

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> "When":
        if self.from_date and self.until and self.until < self.from_date:
            raise ValueError(f"when.until {self.until} is before when.from {self.from_date}")
        if self.hours and self.hours[1] <= self.hours[0]:
            raise ValueError(f"when.hours {list(self.hours)}: the end must be after the start")
        return self


class AppliesTo(Rule):  # every list given must hold the purchase's value; none: every purchase
    products: list[Text] = []
    categories: list[Text] = []
    tiers: list[Text] = []  # the tier held before the purchase


class Cap(Rule):
    points: pydantic.conint(ge=0, le=1_000_000_000, strict=True)
    per: Literal["day", "week", "month", "year", "campaign"] = "campaign"  # weeks start on Monday (UTC); campaign: ever


class Campaign(Rule):
    """An earning campaign: extra points on the purchases it applies to (docs/decisions.md, Campaigns)."""

    id: Name
    award: Award
    when: When = When()
    applies_to: AppliesTo = AppliesTo()
    cap: Cap | None = None  # per member
    stacking: Literal["sum", "highest"] = "sum"
    criteria: str | None = None  # over the member's profile at the start of the purchase's day, as journey criteria

    @pydantic.model_validator(mode="after")
    def _criteria(self) -> "Campaign":
        _checked(self.criteria, f"campaign {self.id}")
        return self


class EventRule(Rule):
    """Points for an `events` message of `type` (docs/decisions.md, Event points). A referral pays when the
    referee's first purchase comes within `within_days` of it: `points` to the referrer (capped by `cap`),
    `referee_points` to the referee, once per referee."""

    type: Name
    points: pydantic.conint(ge=1, le=1_000_000_000, strict=True)
    once: Literal["ever", "per_year"] | None = None  # per calendar year of the event (UTC)
    cap: Cap | None = None  # per member
    within_days: Days | None = None  # referral
    referee_points: pydantic.conint(ge=0, le=1_000_000_000, strict=True) | None = None  # referral; default: points
    criteria: str | None = None  # over the member's profile at the start of the award's day, as journey criteria

    @pydantic.model_validator(mode="after")
    def _referral(self) -> "EventRule":
        _checked(self.criteria, f"event rule {self.type}")
        if self.type == "referral" and self.within_days is None:
            raise ValueError("event rule referral: within_days (the referee's first purchase within it) is required")
        if self.type != "referral" and (self.within_days is not None or self.referee_points is not None):
            raise ValueError(f"event rule {self.type}: within_days and referee_points are for referral only")
        return self


class Returns(Rule):
    window_days: Days = 30  # a return later than this after its purchase is quarantined


class ActivationStep(Rule):
    activation: Name


class WaitStep(Rule):
    wait_days: Days


class WaitUntilStep(Rule):
    """Completes the first day (the one it is entered included) the criterion holds, else after max_days."""

    wait_until: str
    max_days: Days


class JumpStep(Rule):
    jump: Name  # a later stage's id: the customer goes to its first step at once (no entry criterion)


class Branch(Rule):
    name: Name = "else"
    when: str | None = None  # None only for a decision's else branch
    steps: list["Step"] = []


class Decision(Rule):
    """Branches evaluated in order, first match wins; without `else`, a customer matching none waits, re-evaluated
    daily, and exits as no_branch after max_wait_days."""

    branches: list[Branch] = pydantic.Field(min_length=1, max_length=6)
    else_: Branch | None = pydantic.Field(None, alias="else")
    max_wait_days: Days = 0


class DecisionStep(Rule):
    decision: Decision


class Variant(Rule):
    name: Name
    weight: pydantic.conint(ge=1, le=100, strict=True)
    steps: list["Step"] = []


class AbTest(Rule):
    """Variants and an optional control (no activations from there on) by weight, all summing to 100; a customer's
    variant is a hash of (journey, step, person, salt): the same on every run and engine."""

    variants: list[Variant] = pydantic.Field(min_length=1, max_length=10)
    control: pydantic.conint(ge=1, le=99, strict=True) | None = None
    salt: Text = "0"


class AbTestStep(Rule):
    ab_test: AbTest


_STEP_KINDS = {
    "activation": ActivationStep,
    "wait_days": WaitStep,
    "wait_until": WaitUntilStep,
    "jump": JumpStep,
    "decision": DecisionStep,
    "ab_test": AbTestStep,
}


def _step_kind(step) -> str | None:
    """The key that says what a step is: errors then name that kind's fields only."""
    keys = step.keys() if isinstance(step, dict) else type(step).model_fields.keys()
    return next((key for key in _STEP_KINDS if key in keys), None)


Step = Annotated[
    functools.reduce(operator.or_, (Annotated[model, pydantic.Tag(key)] for key, model in _STEP_KINDS.items())),
    pydantic.Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message=f"a step is one of {', '.join(_STEP_KINDS)} (a mapping with that key)",
    ),
]
for _model in (Branch, Variant):
    _model.model_rebuild()


class ExitCriterion(Rule):
    name: Name
    when: str


class Stage(Rule):
    id: Name
    entry: str | None = None
    steps: list[Step] = []
    exit_criteria: list[ExitCriterion] = []


def walk_steps(steps: list, path: str):
    """(path, step) of every step, branches' steps included, in order; a path is where the step is written
    ('stages[0].steps[1].decision.branches[0].steps[0]')."""
    for n, step in enumerate(steps):
        here = f"{path}[{n}]"
        yield here, step
        if isinstance(step, DecisionStep):
            for b, branch in enumerate(step.decision.branches):
                yield from walk_steps(branch.steps, f"{here}.decision.branches[{b}].steps")
            if step.decision.else_:
                yield from walk_steps(step.decision.else_.steps, f"{here}.decision.else.steps")
        elif isinstance(step, AbTestStep):
            for v, variant in enumerate(step.ab_test.variants):
                yield from walk_steps(variant.steps, f"{here}.ab_test.variants[{v}].steps")


class Journey(Rule):
    id: Name
    audience: str
    goal: str | None = None
    stages: list[Stage] = pydantic.Field(min_length=1)
    # none: a customer enters once; unless_goal: again after an entry ended without the goal; always: again after
    # any entry ended; after_days: not before this many days after the previous entry ended
    reentry: Literal["none", "unless_goal", "always"] = "none"
    after_days: Days | None = None
    holdout_pct: pydantic.condecimal(ge=0, lt=100, decimal_places=2) = Decimal(0)  # never enters; measured
    salt: Text = "0"  # of the holdout's hash

    def criteria(self) -> dict[str, str]:
        """Every criterion as checked SQL, by where it is written (e.g. 'stages[0].exit_criteria[1].when')."""
        written = {"audience": self.audience, "goal": self.goal}
        for i, stage in enumerate(self.stages):
            written[f"stages[{i}].entry"] = stage.entry
            for j, exit in enumerate(stage.exit_criteria):
                written[f"stages[{i}].exit_criteria[{j}].when"] = exit.when
            for path, step in walk_steps(stage.steps, f"stages[{i}].steps"):
                if isinstance(step, WaitUntilStep):
                    written[f"{path}.wait_until"] = step.wait_until
                elif isinstance(step, DecisionStep):
                    for b, branch in enumerate(step.decision.branches):
                        written[f"{path}.decision.branches[{b}].when"] = branch.when
        checked = {}
        for field, text in written.items():
            if text is not None:
                try:
                    checked[field] = checked_sql(text)
                except CriterionError as error:
                    raise ValueError(f"journey {self.id}, {field}: {error}") from None
        return checked

    @pydantic.model_validator(mode="after")
    def _check(self) -> "Journey":
        self.criteria()
        stage_ids = [stage.id for stage in self.stages]
        if len(set(stage_ids)) != len(stage_ids):
            raise ValueError(f"journey {self.id}: stage ids must be unique, got {stage_ids}")
        if self.after_days is not None and self.reentry == "none":
            raise ValueError(f"journey {self.id}: after_days is for reentry unless_goal or always")
        for i, stage in enumerate(
            self.stages
        ):  # an exit's node is stage:<id>:exit:<name>: two of one name would be one node
            _unique([exit.name for exit in stage.exit_criteria], f"journey {self.id}, stage {stage.id}: exit names")
            for path, step in walk_steps(stage.steps, f"stages[{i}].steps"):
                self._check_step(path, step, i, stage_ids)
        return self

    def _check_step(self, path: str, step, stage_index: int, stage_ids: list[str]) -> None:
        where = f"journey {self.id}, {path}"
        if isinstance(step, JumpStep):
            if step.jump not in stage_ids:
                raise ValueError(f"{where}: jump to {step.jump}, which is not a stage ({stage_ids})")
            if stage_ids.index(step.jump) <= stage_index:  # the state keeps one first day per node: no loop
                raise ValueError(
                    f"{where}: jump to {step.jump} goes back (a loop); only a later stage can be jumped to"
                )
        elif isinstance(step, DecisionStep):
            decision = step.decision
            names = [branch.name for branch in decision.branches] + (["else"] if decision.else_ else [])
            _unique(names, f"{where}: branch names")
            if not 2 <= len(names) <= 6:
                raise ValueError(f"{where}: a decision has 2 to 6 branches (else included), got {len(names)}")
            if any(branch.when is None for branch in decision.branches):
                raise ValueError(f"{where}: every branch but else needs `when`")
            if decision.else_ and (decision.else_.when is not None or decision.max_wait_days):
                raise ValueError(f"{where}: else has no `when`, and with else nobody waits (no max_wait_days)")
            if decision.else_ and decision.else_.name != "else":
                raise ValueError(f"{where}: else has no name (its node is branch:else)")
        elif isinstance(step, AbTestStep):
            test = step.ab_test
            _unique([variant.name for variant in test.variants] + ["control"], f"{where}: variant names (and control)")
            total = sum(variant.weight for variant in test.variants) + (test.control or 0)
            if total != 100:
                raise ValueError(f"{where}: variant weights and control must sum to 100, got {total}")


class Destination(Rule):
    """Where each day's activations are delivered (journey/activation_exports): one of folder, s3 or webhook."""

    name: Name
    folder: Text | None = None  # files under <folder>/activations/<name>/
    s3: pydantic.constr(pattern=r"^s3://[^/]+(/.*)?$") | None = None  # s3://bucket/prefix
    webhook: pydantic.constr(pattern=r"^https?://") | None = None
    activations: list[Name] | None = None  # None: every activation
    batch_size: pydantic.conint(ge=1, le=10_000) = 500  # webhook rows per POST

    @pydantic.model_validator(mode="after")
    def _one_place(self) -> "Destination":
        if sum(place is not None for place in (self.folder, self.s3, self.webhook)) != 1:
            raise ValueError(f"destination {self.name}: exactly one of folder, s3, webhook")
        return self


class Activations(Rule):
    """Across journeys: at most this many activations per customer a day and in 7 days (the day and the 6 before);
    one over a cap is not delivered, and kept in journey.capped_activations."""

    max_per_day: pydantic.conint(ge=1) | None = None
    max_per_week: pydantic.conint(ge=1) | None = None
    destinations: list[Destination] = []

    @pydantic.field_validator("destinations")
    @classmethod
    def _unique_destinations(cls, destinations: list[Destination]) -> list[Destination]:
        _unique([destination.name for destination in destinations], "destination names")
        return destinations


# Fields that can identify a person: the account id (users key, customers export user_id) and fields of the users
# payload, the customers export and purchase payloads. The key of a purchase, redemption or click is matched against
# all of them (a till may key by card, a web shop by email).
IDENTIFIER_FIELDS = ("user_id", "email", "card_id", "phone", "name")
IdentifierField = Literal[IDENTIFIER_FIELDS]


class Identity(Rule):
    link_on: list[IdentifierField] = ["user_id", "email", "card_id", "phone"]  # any shared value links
    link_if_unique: list[IdentifierField] = ["name"]  # links only when exactly one account carries the value
    # values that are never identifiers (compared trimmed and lower-case), beside the built-in placeholders
    ignore_values: list[Text] = pydantic.Field(default=[], max_length=10_000)
    # a value that would put more accounts than this in one person links nothing from then on
    max_accounts_per_value: pydantic.conint(ge=1, le=1_000_000, strict=True) = 50

    @pydantic.field_validator("ignore_values")
    @classmethod
    def _lower_case(cls, values: list[str]) -> list[str]:
        return sorted({value.lower() for value in values})

    @pydantic.model_validator(mode="after")
    def _check(self) -> "Identity":
        _unique(self.link_on + self.link_if_unique, "identity fields (in link_on and link_if_unique together)")
        if "user_id" not in self.link_on:
            raise ValueError("identity.link_on must hold user_id: the account id is what a profile is keyed by")
        return self


DEFAULT_TIERS = [Tier(name="GOLD", above=400), Tier(name="SILVER", above=300), Tier(name="BRONZE", above=200)]
DEFAULT_PROMOTIONS = [
    Promotion(name="french_poodle", considers=["dog", "beret"], require_all=["dog", "beret"]),
    Promotion(name="loose_leaf", considers=["coffee", "tea"], require_all=["coffee"], exclude=["tea"], min_spend=20),
]


class KafkaKey(Rule):
    """Where a Connect object's message keys are: its `.keys` companion file (store.kafka.keys), or a payload field."""

    from_: Literal["keys_file"] | None = pydantic.Field(None, alias="from")
    field: Name | None = None

    @pydantic.model_validator(mode="after")
    def _one(self) -> "KafkaKey":
        if (self.from_ is None) == (self.field is None):
            raise ValueError("key: exactly one of `from: keys_file` or `field: <payload field>`")
        return self


class KafkaTimestamp(Rule):
    """A Connect record's event time: a payload field (ms since the epoch, an InsertField transform's
    timestamp.field), or the time-based partitioner's path (year=/month=/day=[/hour=])."""

    from_: Literal["path"] | None = pydantic.Field(None, alias="from")
    field: Name | None = None

    @pydantic.model_validator(mode="after")
    def _one(self) -> "KafkaTimestamp":
        if (self.from_ is None) == (self.field is None):
            raise ValueError("timestamp: exactly one of `from: path` or `field: <payload field>`")
        return self


class KafkaSource(Rule):
    """How a topic's snapshots land (README, Kafka Connect layout): kcat envelopes in `kafka/<topic>/` (the
    default), or Kafka Connect S3 sink objects under `<topics_dir>/<topic>/`."""

    layout: Literal["kcat", "connect_s3"] = "kcat"
    format: Literal["json", "parquet"] = "json"
    topics_dir: Name = "topics"
    key: KafkaKey | None = None  # None: the payload field named like the topic's key column (user_id, ...)
    timestamp: KafkaTimestamp | None = None  # None: the partitioner's path


class Kafka(KafkaSource):
    topics: dict[Name, KafkaSource] = {}  # a topic's own source, in place of the one above

    def source(self, topic: str) -> KafkaSource:
        return self.topics.get(topic, self)


class Rules(Rule):
    # the first day partition; LOYALTY_START_DATE overrides it. Not before 1970: Dagster enumerates every day since.
    start_date: pydantic.condate(ge=EARLIEST_START) | None = None
    # the last day partition, for data that stops (a demo, an archive): the UI then lists its days only, not every
    # day up to today. Later events are quarantined as events after now + the tolerance are.
    end_date: date | None = None
    tiers: list[Tier] = DEFAULT_TIERS
    # `tiers:` as a mapping (levels and how they are kept) fills this; as a list, today's lifetime rule
    tier_policy: TierPolicy = LEGACY_TIER_POLICY
    default_tier: Text = "CLIMBING"
    stamp_card: StampCard = StampCard()
    promotions: list[Promotion] = DEFAULT_PROMOTIONS
    points: Points = Points()
    campaigns: list[Campaign] = []
    event_rules: list[EventRule] = []
    returns: Returns = Returns()
    journeys: list[Journey] = []
    activations: Activations = Activations()
    kafka: Kafka = Kafka()
    identity: Identity = Identity()

    @pydantic.model_validator(mode="before")
    @classmethod
    def _tiers_mapping(cls, data):
        """`tiers: {levels: [...], period: ..., ...}`: the levels are `tiers`, the rest the tier policy."""
        if isinstance(data, dict) and isinstance(data.get("tiers"), dict):
            if "tier_policy" in data:
                raise ValueError("tier_policy: write the policy inside tiers: (tiers: {levels: [...], period: ...})")
            policy = dict(data["tiers"])
            data = {**data, "tiers": policy.pop("levels", DEFAULT_TIERS), "tier_policy": policy}
        return data

    @pydantic.field_validator("tiers")
    @classmethod
    def _highest_first(cls, tiers: list[Tier]) -> list[Tier]:
        _unique([tier.name for tier in tiers], "tier names")
        _unique([tier.above for tier in tiers], "tier thresholds (of two equal ones, one could never be reached)")
        # Tiers are matched top-down with strict ">", so keep them highest threshold first.
        return sorted(tiers, key=lambda tier: tier.above, reverse=True)

    @pydantic.model_validator(mode="after")
    def _end_after_start(self) -> "Rules":
        if self.end_date and self.end_date < (self.start_date or EARLIEST_START):
            raise ValueError(f"end_date {self.end_date} is before start_date {self.start_date}")
        return self

    @pydantic.model_validator(mode="after")
    def _default_tier_apart(self) -> "Rules":
        if self.default_tier in {tier.name for tier in self.tiers}:
            raise ValueError(f"default_tier {self.default_tier} is also a tier's name: the two would be one")
        return self

    @pydantic.field_validator("promotions")
    @classmethod
    def _unique_promotions(cls, promotions: list[Promotion]) -> list[Promotion]:
        _unique([promotion.name for promotion in promotions], "promotion names")
        return promotions

    @pydantic.model_validator(mode="after")
    def _campaigns_known(self) -> "Rules":
        _unique([campaign.id for campaign in self.campaigns], "campaign ids")
        _unique([rule.type for rule in self.event_rules], "event rule types")
        tiers = {tier.name for tier in self.tiers} | {self.default_tier}
        for campaign in self.campaigns:
            if unknown := sorted(set(campaign.applies_to.tiers) - tiers):
                raise ValueError(f"campaign {campaign.id}: applies_to.tiers {unknown} are not tiers")
        return self

    @pydantic.field_validator("journeys")
    @classmethod
    def _unique_journeys(cls, journeys: list[Journey]) -> list[Journey]:
        _unique([journey.id for journey in journeys], "journey ids")
        return journeys


MAX_NODES = 100_000


def _too_big(document) -> bool:
    """Whether the parsed document holds more than MAX_NODES values, counting a value each time an alias repeats it
    (stops counting there, so a billion-laughs file costs nothing)."""
    pending, seen = [document], 0
    while pending:
        node = pending.pop()
        seen += 1
        if seen > MAX_NODES:
            return True
        if isinstance(node, dict):
            pending += [*node.keys(), *node.values()]
        elif isinstance(node, list):
            pending += node
    return False


class RulesError(ValueError):
    """The rules file is missing, unreadable or invalid; the message names the file and the bad key."""


def load_rules(path: str | Path | None) -> Rules:
    """Reads and validates a rules file; None means the built-in defaults."""
    if path is None:
        return Rules()
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise RulesError(f"cannot read rules file {path}: {error}") from error
    if _too_big(document):  # anchors and aliases can expand a small file a millionfold
        raise RulesError(f"rules file {path}: more than {MAX_NODES} values (aliases expanded)")
    if not isinstance(document, dict):
        raise RulesError(f"rules file {path}: expected a mapping at the top level")
    try:
        return Rules.model_validate(document)
    except pydantic.ValidationError as error:
        problems = "; ".join(  # the policy of `tiers:` as a mapping is written under tiers
            f"{'.'.join(str(part) for part in problem['loc']).replace('tier_policy', 'tiers')}: {problem['msg']}"
            for problem in error.errors()
        )
        raise RulesError(f"rules file {path}: {problems}") from error
