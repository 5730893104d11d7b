"""A plain, one-customer-at-a-time replay of the ledger rules (docs/decisions.md, Point ledger and Clawbacks),
independent of the SQL in ledger.py.

Used by the reconciliation check on a sampled customer and by the tests as an oracle. Not for whole tables.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass
class Lot:
    txn_id: str
    earned_at: datetime
    expires_at: datetime
    available_at: datetime
    remaining: int

    @property
    def queue_order(self) -> tuple:
        return self.expires_at, self.earned_at, self.txn_id


def _take(lots: list[Lot], wanted: int) -> int:
    """Takes up to `wanted` points from `lots`, earliest expiry first; returns what it could not take."""
    for lot in sorted(lots, key=lambda lot: lot.queue_order):
        taken = min(lot.remaining, wanted)
        lot.remaining -= taken
        wanted -= taken
    return wanted


def replay(
    earns, uses, closures, until: datetime, returns=(), pending: timedelta = timedelta(0)
) -> tuple[list[tuple], list[str]]:
    """Ledger rows (txn_id, occurred_at, kind, points) and refused redemption ids, for events before `until`.

    earns: (txn_id, at, points, expires_at); uses: (redemption_id, at, points); closures: instants;
    returns: (earn txn_id, at). At one instant: expire (scheduled or closure), earn, return (clawback), use.
    """
    events = [(at, 1, txn_id, ("earn", points, expires_at)) for txn_id, at, points, expires_at in earns]
    events += [(expires_at, 0, txn_id, ("expiry",)) for txn_id, _, _, expires_at in earns]
    events += [(at, 0, "", ("closure",)) for at in closures]
    events += [(at, 2, "clawback:" + txn_id.removeprefix("earn:"), ("return", txn_id)) for txn_id, at in returns]
    events += [(at, 3, redemption_id, ("use", points)) for redemption_id, at, points in uses]
    earned = {txn_id: points for txn_id, _, points, _ in earns}
    lots: list[Lot] = []
    debts: list[list] = []  # [clawback txn_id, points still owed], oldest first
    rows, refused = [], []
    for at, _, ref, event in sorted(e for e in events if e[0] < until):
        if event[0] == "earn":
            rows.append((ref, at, "earn", event[1]))
            lot = Lot(ref, at, event[2], at + pending, event[1])
            for debt in debts:  # the next earns pay the debt first
                paid = min(debt[1], lot.remaining)
                debt[1] -= paid
                lot.remaining -= paid
            debts = [debt for debt in debts if debt[1]]
            lots.append(lot)
        elif event[0] in ("expiry", "closure"):
            for lot in lots:
                if lot.remaining and (event[0] == "closure" or lot.txn_id == ref):
                    rows.append((f"expire:{lot.txn_id}", at, "expire", -lot.remaining))
                    lot.remaining = 0
        elif event[0] == "return":
            points = earned.get(event[1], 0)  # a purchase that earned nothing has nothing to claw back
            if not points:
                continue
            rows.append((ref, at, "clawback", -points))
            own = [lot for lot in lots if lot.txn_id == event[1]]
            missing = _take([lot for lot in lots if lot.txn_id != event[1]], _take(own, points))
            if missing:
                debts.append([ref, missing])
        else:
            wanted = event[1]
            available = [lot for lot in lots if lot.available_at <= at]
            if sum(lot.remaining for lot in available) < wanted:
                refused.append(ref)
                continue
            rows.append((f"use:{ref}", at, "use", -wanted))
            _take(available, wanted)
    return rows, refused
