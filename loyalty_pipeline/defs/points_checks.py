"""The point ledger's and balances' asset keys and checks: the ledger's rules, a sampled customer replayed with the
reference rules, balances as sums of the ledger."""

from datetime import datetime, timedelta

import dagster as dg

from loyalty_pipeline.defs.checks import PEOPLE, UPDATED, check, duplicate_check, in_days, matches_rebuild
from loyalty_pipeline.domain.identity import identity
from loyalty_pipeline.domain.loyalty import tiers
from loyalty_pipeline.domain.points import balances, campaigns
from loyalty_pipeline.domain.points.ledger_reference import replay
from loyalty_pipeline.lib.warehouse import count

LEDGER_KEY = dg.AssetKey(["points", "point_transactions"])


def _result(wrong: int, what: str) -> tuple[bool, dict]:
    return wrong == 0, {what: wrong}


@check("No use draws on a pending lot, and each use takes exactly its points from lots.")
def uses_draw_on_available_lots(conn, rules, days) -> tuple[bool, dict]:
    where, params = in_days("used.day", days)
    return _result(
        count(
            conn,
            f"""SELECT 1 FROM points.point_transactions AS used
                LEFT JOIN points.lot_allocations AS piece ON piece.txn_id = used.txn_id
                LEFT JOIN points.point_transactions AS lot ON lot.txn_id = piece.lot_txn_id AND lot.points > 0
                WHERE used.kind = 'use' AND {where}
                GROUP BY used.txn_id, used.points
                HAVING bool_or(lot.available_at > used.occurred_at) OR coalesce(sum(piece.points), 0) <> -used.points""",
            params,
        ),
        "wrong_uses",
    )


@check("A clawback never takes back more than its lot (the purchase's earn, or a campaign's award on it) earned.")
def clawbacks_within_earns(conn, rules, days) -> tuple[bool, dict]:
    where, params = in_days("claw.day", days)
    return _result(
        count(
            conn,
            f"""SELECT 1 FROM points.point_transactions AS claw
                LEFT JOIN points.point_transactions AS earn
                       ON earn.txn_id = CASE WHEN starts_with(claw.txn_id, 'clawback:bonus:') THEN substr(claw.txn_id, 10)
                                             ELSE 'earn:' || claw.source_ref END
                WHERE claw.kind = 'clawback' AND {where} AND -claw.points > coalesce(earn.points, 0)""",
            params,
        ),
        "clawbacks_over_earn",
    )


@check("No lot gives more points than it earned.")
def lots_not_overdrawn(conn, rules, days) -> tuple[bool, dict]:
    where, params = in_days("day", days)  # the lots drawn on in the days written
    return _result(
        count(
            conn,
            f"""SELECT 1 FROM points.point_transactions AS lot
               JOIN (SELECT lot_txn_id, sum(points) AS taken FROM points.lot_allocations
                     WHERE lot_txn_id IN (SELECT lot_txn_id FROM points.lot_allocations WHERE {where})
                     GROUP BY ALL) AS a
                 ON a.lot_txn_id = lot.txn_id
               WHERE a.taken > lot.points""",
            params,
        ),
        "overdrawn_lots",
    )


@check("Each expire row is exactly what its lot had left after uses and clawbacks.")
def expiries_match_lot_remainders(conn, rules, days) -> tuple[bool, dict]:
    where, params = in_days("expiry.day", days)  # the expiries of the days written
    return _result(
        count(
            conn,
            f"""SELECT 1 FROM points.point_transactions AS expiry
               JOIN points.point_transactions AS lot
                 ON lot.txn_id = expiry.source_ref AND lot.kind IN ('earn', 'merge') AND lot.points > 0
               LEFT JOIN (SELECT lot_txn_id, sum(points) AS used FROM points.lot_allocations
                          WHERE NOT starts_with(txn_id, 'expire:') GROUP BY ALL) AS uses
                 ON uses.lot_txn_id = lot.txn_id
               WHERE expiry.kind = 'expire' AND -expiry.points <> lot.points - coalesce(uses.used, 0) AND {where}""",
            params,
        ),
        "mismatched_expiries",
    )


@check("Replays one customer's whole history (a different one each day) with the plain reference rules, row by row.")
def sampled_customer_reconciles(conn, rules, days) -> tuple[bool, dict]:
    settings = rules.rules.points
    # one customer a day with rows in the days written (the others' rows did not change), chosen by an md5 of the id
    # and the last day (the same on both engines): another each day, the same on a re-run
    # (customers whose profiles merged are left out: the reference rules know no merges)
    where, params = in_days("day", days)
    sampled = conn.execute(
        f"""SELECT user_id FROM points.point_transactions
           WHERE user_id IN (SELECT user_id FROM points.point_transactions WHERE {where})
           GROUP BY user_id HAVING NOT bool_or(kind = 'merge')
           ORDER BY md5(user_id || CAST((SELECT max(day) FROM points.ledger_days) AS VARCHAR)), user_id LIMIT 1""",
        params,
    ).fetchall()
    if not sampled:
        return True, {"user_id": "(no ledger rows)"}
    user = sampled[0][0]
    until = conn.execute("SELECT (max(day) + 1)::TIMESTAMP FROM points.ledger_days").fetchall()[0][0]
    tiers.load_levels(conn, rules.rules)
    purchases = conn.execute(  # with the earn multiplier of the tier held before each (the tier tables' rule)
        """SELECT p.purchase_id, p.purchased_at, p.price, coalesce(level.earn_multiplier, 1)
           FROM loyalty.enriched_purchases AS p
           LEFT JOIN loyalty.tier_history AS held
                  ON held.user_id = p.user_id AND held.valid_from < p.purchased_at
                 AND (held.valid_until IS NULL OR held.valid_until >= p.purchased_at)
           LEFT JOIN tier_levels AS level ON level.name = held.tier
           WHERE p.user_id = $1 AND p.price IS NOT NULL""",
        [user],
    ).fetchall()
    # the identifiers that may find the customer: the events read are theirs only
    conn.execute(f"CREATE OR REPLACE TEMP TABLE reconciled_ids AS {identity.linked_ids('SELECT $1 AS person')}", [user])

    def theirs(table: str) -> str:
        return identity.with_person(f"(SELECT * FROM {table} WHERE user_id IN (SELECT person FROM reconciled_ids))")

    uses = conn.execute(
        f"""SELECT redemption_id, event_ts, points FROM ({theirs("raw.redemptions")})
           WHERE person = $1 AND NOT tombstone
           QUALIFY row_number() OVER (PARTITION BY redemption_id ORDER BY event_ts, kafka_partition, kafka_offset) = 1""",
        [user],
    ).fetchall()
    # campaign and event awards are lots the replay takes as given (their rules have their own checks and tests);
    # a campaign award is returned with its purchase
    bonuses = conn.execute(
        """SELECT txn_id, occurred_at, points, expires_at, source_ref FROM points.point_transactions
           WHERE user_id = $1 AND kind = 'earn' AND (starts_with(txn_id, 'bonus:') OR starts_with(txn_id, 'event:'))""",
        [user],
    ).fetchall()
    returned = conn.execute(
        f"SELECT purchase_id, returned_at FROM ({theirs('loyalty.returns')}) WHERE person = $1", [user]
    ).fetchall()
    returns = [(f"earn:{purchase}", at) for purchase, at in returned] + [
        (bonus[0], at) for purchase, at in returned for bonus in bonuses if bonus[4] == purchase
    ]
    closures = [
        row[0]
        for row in conn.execute(
            f"SELECT event_ts FROM ({theirs('raw.users')}) WHERE person = $1 AND tombstone", [user]
        ).fetchall()
    ]
    actual = conn.execute(
        "SELECT txn_id, occurred_at, kind, points FROM points.point_transactions WHERE user_id = $1", [user]
    ).fetchall()
    earns = []
    for purchase_id, at, price, multiplier in purchases:
        points = int(price * settings.earn_rate * multiplier)  # floor: prices and rates are non-negative
        expires = datetime.combine(at.date() + timedelta(days=settings.validity_days + 1), datetime.min.time())
        if points > 0:
            earns.append((f"earn:{purchase_id}", at, points, expires))
    earns += [bonus[:4] for bonus in bonuses]
    expected, _ = replay(earns, uses, closures, until, returns, timedelta(days=settings.pending_days))
    differences = set(expected) ^ set(actual)
    return not differences and len(expected) == len(actual), {
        "user_id": user,
        "rows": len(actual),
        "differences": len(differences),
    }


@check("Each balance is the sum of the customer's ledger rows, and available + pending - debt.")
def balances_are_ledger_sums(conn, rules, days) -> tuple[bool, dict]:
    # after an update, of the people it updated (checks.UPDATED)
    mine = f"AND user_id IN ({PEOPLE})" if days == UPDATED else ""
    return _result(
        count(
            conn,
            f"""SELECT 1 FROM (SELECT * FROM points.point_balances WHERE true {mine}) AS b
                FULL JOIN (SELECT user_id, sum(points) AS total FROM points.point_transactions
                           WHERE user_id NOT IN (SELECT merged_id FROM identity.merges) {mine} GROUP BY ALL) AS l
                     USING (user_id)
                LEFT JOIN (SELECT user_id, sum(remaining) AS open FROM ({balances.open_lots(PEOPLE if mine else "")})
                           GROUP BY ALL) AS o USING (user_id)
                WHERE b.balance IS DISTINCT FROM l.total OR b.available + b.pending <> coalesce(o.open, 0)
                   OR b.balance <> b.available + b.pending - b.debt""",
        ),
        "customers_wrong",
    )


BALANCES_KEY = dg.AssetKey(["points", "point_balances"])


@check("No member's awards from a capped campaign exceed its cap in any cap period.")
def campaign_caps_hold(conn, rules, days) -> tuple[bool, dict]:
    campaigns.load_campaigns(conn, rules.rules)
    where, params = in_days("day", days)  # the members awarded in the days written, over every period
    return _result(
        count(
            conn,
            f"""SELECT 1 FROM points.point_transactions AS award
                JOIN campaign_rules AS rule
                  ON starts_with(award.txn_id, 'bonus:' || rule.id || ':') AND rule.cap_points IS NOT NULL
                WHERE award.kind = 'earn' AND award.user_id IN (
                    SELECT user_id FROM points.point_transactions WHERE starts_with(txn_id, 'bonus:') AND {where})
                GROUP BY award.user_id, rule.id, rule.cap_points,
                         CASE rule.cap_per WHEN 'day' THEN award.day WHEN 'week' THEN date_trunc('week', award.day)
                                           WHEN 'month' THEN date_trunc('month', award.day)
                                           WHEN 'year' THEN date_trunc('year', award.day) END
                HAVING sum(award.points) > rule.cap_points""",
            params,
        ),
        "caps_exceeded",
    )


@check("Every campaign award on a returned purchase is clawed back with it.")
def returned_awards_clawed_back(conn, rules, days) -> tuple[bool, dict]:
    where, params = in_days("returned.day", days)
    return _result(
        count(
            conn,
            f"""SELECT 1 FROM loyalty.returns AS returned
                JOIN points.point_transactions AS award
                  ON award.source_ref = returned.purchase_id AND award.kind = 'earn'
                 AND starts_with(award.txn_id, 'bonus:')
                LEFT JOIN points.point_transactions AS claw ON claw.txn_id = 'clawback:' || award.txn_id
                WHERE {where} AND claw.txn_id IS NULL""",
            params,
        ),
        "awards_left",
    )


LEDGER_CHECKS = [
    uses_draw_on_available_lots,
    clawbacks_within_earns,
    campaign_caps_hold,
    returned_awards_clawed_back,
    lots_not_overdrawn,
    expiries_match_lot_remainders,
    sampled_customer_reconciles,
    duplicate_check(LEDGER_KEY, ["txn_id"], day_column="day"),
]
BALANCES_CHECKS = [
    balances_are_ledger_sums,
    duplicate_check(BALANCES_KEY, ["user_id"]),
    matches_rebuild(BALANCES_KEY, "points.point_transactions", lambda people: balances.balances_sql(people)),
]
