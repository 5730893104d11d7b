"""The tier rules in plain Python, one member at a time: what the tier tables' sampled check and the randomized test
compare the SQL fold (tiers.sql) with. Slow and obvious on purpose."""

from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from loyalty_pipeline.domain.config import Rules


def _months_later(day: date, months: int) -> date:
    """`day` plus `months`, on the last day of a shorter month (31 January + 1 month: 29 February or 28)."""
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    for last in (31, 30, 29, 28):
        try:
            return date(year, month, min(day.day, last))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def period_ends(rules: Rules, first_purchase: datetime, until: datetime) -> list[datetime]:
    """The member's period ends before `until` (00:00 UTC), from their anchor."""
    policy = rules.tier_policy
    trunc, months, days = policy.step()
    if months + days == 0:
        return []
    first = first_purchase.date()
    anchor = {
        "day": first,
        "month": first.replace(day=1),
        "quarter": date(first.year, (first.month - 1) // 3 * 3 + 1, 1),
        "year": date(first.year, 1, 1),
    }[trunc]
    ends, k = [], 1
    while True:
        end = datetime.combine(_months_later(anchor, k * months) + timedelta(days=k * days), datetime.min.time())
        if end >= until:
            return ends
        ends.append(end)
        k += 1


def replay(rules: Rules, purchases: list[tuple], until: datetime) -> list[tuple]:
    """The member's tier changes before `until`: (tier, valid_from, reason, qualifying value), from purchases
    (purchase_id, purchased_at, price, returned_at or None)."""
    policy = rules.tier_policy
    levels = sorted(rules.tiers, key=lambda tier: tier.above)
    names = [rules.default_tier] + [tier.name for tier in levels]

    def qualified(value: Decimal) -> int:
        return sum(1 for tier in levels if value > tier.above)

    def worth(price) -> Decimal:
        price = Decimal(price or 0)
        if policy.qualify_on == "spend":
            return price
        if policy.qualify_on == "points_earned":
            return (price * rules.points.earn_rate).to_integral_value(ROUND_FLOOR)
        return Decimal(1)

    bought = [row for row in purchases if row[1] < until]
    if not bought:
        return []
    ends = period_ends(rules, min(row[1] for row in bought), until)

    def period(at: datetime) -> int:
        return sum(1 for end in ends if end <= at)

    events = [(end, 1, f"end:{k}", "period_end", Decimal(0)) for k, end in enumerate(ends, start=1)]
    grace = timedelta(days=policy.grace_days)
    if policy.grace_days:
        events += [
            (end + grace, 0, f"grace:{k}", "grace", Decimal(0)) for k, end in enumerate(ends, 1) if end + grace < until
        ]
    for purchase_id, at, price, returned_at in bought:
        events.append((at, 2, purchase_id, "purchase", worth(price)))
        if returned_at is not None and returned_at < until and period(at) == period(returned_at):
            events.append((returned_at, 3, purchase_id, "return", -worth(price)))
    rank, value, grace_at, target, changes = 0, Decimal(0), None, 0, []
    for at, _, _, kind, delta in sorted(events):
        before, value = value, value + delta
        q = qualified(value)
        if kind == "purchase" and q > rank:
            rank, grace_at = q, None
            changes.append((names[rank], at, "upgrade", value))
        elif kind == "period_end":
            if q < rank:
                target = rank - 1 if policy.downgrade == "one_down" else q
                if policy.grace_days:
                    grace_at = at + grace
                else:
                    rank = target
                    changes.append((names[rank], at, "period_end", value))
            value = Decimal(0)
        elif kind == "grace" and grace_at == at:
            grace_at = None
            if q < rank:
                rank = max(target, q)
                changes.append((names[rank], at, "grace_end", value))
        elif kind == "return" and policy.downgrade_on_return and q < rank <= qualified(before):
            rank, grace_at = q, None
            changes.append((names[rank], at, "return", value))
    return changes
