"""A plain, one-customer-at-a-time replay of the ledger rules (SPEC §5.2), independent of the SQL in ledger.py.

Used by the reconciliation check on a sampled customer and by the tests as an oracle. Not for whole tables.
"""

from dataclasses import dataclass
from datetime import datetime


@dataclass
class Lot:
    txn_id: str
    earned_at: datetime
    expires_at: datetime
    remaining: int


def replay(earns, uses, closures, until: datetime) -> tuple[list[tuple], list[str]]:
    """Ledger rows (txn_id, occurred_at, kind, points) and refused redemption ids, for events before `until`.

    earns: (txn_id, at, points, expires_at); uses: (redemption_id, at, points); closures: instants.
    At one instant: expire (scheduled or closure) before earn before use.
    """
    events = [(at, 1, txn_id, ("earn", points, expires_at)) for txn_id, at, points, expires_at in earns]
    events += [(expires_at, 0, txn_id, ("expiry",)) for txn_id, _, _, expires_at in earns]
    events += [(at, 0, "", ("closure",)) for at in closures]
    events += [(at, 2, redemption_id, ("use", points)) for redemption_id, at, points in uses]
    lots: list[Lot] = []
    rows, refused = [], []
    for at, _, ref, event in sorted(e for e in events if e[0] < until):
        if event[0] == "earn":
            lots.append(Lot(ref, at, event[2], event[1]))
            rows.append((ref, at, "earn", event[1]))
        elif event[0] in ("expiry", "closure"):
            for lot in lots:
                if lot.remaining and (event[0] == "closure" or lot.txn_id == ref):
                    rows.append((f"expire:{lot.txn_id}", at, "expire", -lot.remaining))
                    lot.remaining = 0
        else:
            wanted = event[1]
            if sum(lot.remaining for lot in lots) < wanted:
                refused.append(ref)
                continue
            rows.append((f"use:{ref}", at, "use", -wanted))
            for lot in sorted(lots, key=lambda lot: (lot.expires_at, lot.earned_at, lot.txn_id)):
                taken = min(lot.remaining, wanted)
                lot.remaining -= taken
                wanted -= taken
    return rows, refused
