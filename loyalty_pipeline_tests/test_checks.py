"""Asset checks pass on good tables and fail when the rule they guard is broken."""

from datetime import date

import dagster as dg
import duckdb
import pytest

from loyalty_pipeline.defs.checks import UPDATED, duplicate_check, matches_rebuild, rejected_rows_check
from loyalty_pipeline.defs.customer_checks import purchases_by_known_users
from loyalty_pipeline.defs.identity import ambiguous_weak_values
from loyalty_pipeline.defs.loyalty_checks import (
    SALES_TOTALS_CHECKS,
    enriched_keeps_every_purchase,
    stamps_match_purchases,
    totals_and_tiers_agree,
)
from loyalty_pipeline.defs.points_checks import BALANCES_CHECKS, sampled_customer_reconciles
from loyalty_pipeline.defs.resources import RulesResource, Warehouse
from loyalty_pipeline.domain.loyalty.loyalty import load_rules
from loyalty_pipeline.lib import touched
from loyalty_pipeline_tests.scenarios import Inputs


@pytest.fixture
def seeded(demo_copy: Inputs) -> Warehouse:
    return Warehouse(database=str(demo_copy.warehouse))


def tamper(warehouse: Warehouse, sql: str) -> None:
    with duckdb.connect(warehouse.database) as conn:
        conn.execute(sql)


def test_checks_pass_then_fail_when_their_rule_is_broken(seeded):
    rules = RulesResource()
    assert enriched_keeps_every_purchase(warehouse=seeded).passed
    assert totals_and_tiers_agree(warehouse=seeded, rules=rules).passed
    assert stamps_match_purchases(warehouse=seeded, rules=rules).passed

    tamper(
        seeded,
        "DELETE FROM loyalty.enriched_purchases WHERE purchase_id = (SELECT min(purchase_id) FROM loyalty.enriched_purchases)",
    )
    assert enriched_keeps_every_purchase(warehouse=seeded).metadata["purchases_not_enriched"].value == 1

    tamper(seeded, "UPDATE loyalty.sales_totals SET reward_level = 'GOLD' WHERE user_id = 'u2003'")
    assert not totals_and_tiers_agree(warehouse=seeded, rules=rules).passed

    tamper(seeded, "UPDATE loyalty.caffeine_index SET total = total + 1 WHERE user_id = 'u2001'")
    assert not stamps_match_purchases(warehouse=seeded, rules=rules).passed


def test_purchases_no_account_claims_are_reported_not_hidden(seeded):
    assert purchases_by_known_users(warehouse=seeded).passed  # the names link to the accounts carrying them
    tamper(seeded, "DELETE FROM identity.id_graph WHERE id_type = 'user_id' AND id_value IN ('u2001', 'u2003')")
    result = purchases_by_known_users(warehouse=seeded)
    assert not result.passed and result.severity.value == "WARN"
    assert result.metadata["unknown_user_ids"].value == "kris, yeva"
    assert result.metadata["purchases_by_unknown_users"].value == 14 + 8  # kris and yeva's purchases


def test_duplicate_and_rejected_row_checks(seeded):
    unique_offsets = duplicate_check(dg.AssetKey(["raw", "purchases"]), ["kafka_partition", "kafka_offset"])
    assert unique_offsets(warehouse=seeded).passed
    tamper(seeded, "INSERT INTO raw.purchases SELECT * FROM raw.purchases LIMIT 1")
    assert unique_offsets(warehouse=seeded).metadata["duplicated_keys"].value == 1

    rejected = rejected_rows_check(dg.AssetKey(["raw", "purchases"]), "kafka:purchases")(warehouse=seeded)
    assert not rejected.passed and rejected.metadata["not a JSON object"].value == 1
    assert rejected_rows_check(dg.AssetKey(["raw", "users"]), "kafka:users")(warehouse=seeded).passed


def test_a_partitioned_tables_checks_look_at_the_days_written(seeded):
    """A step checks the days it wrote: a duplicate or an unenriched purchase on 06-02 fails the check of 06-02 and
    of the whole table, not the check of 06-03 (whose step did not write 06-02)."""
    unique_offsets = duplicate_check(dg.AssetKey(["raw", "users"]), ["kafka_partition", "kafka_offset"], "day")
    tamper(seeded, "INSERT INTO raw.users SELECT * FROM raw.users WHERE day = '2024-06-02'")
    tamper(seeded, "DELETE FROM loyalty.enriched_purchases WHERE purchase_id IN (SELECT min(purchase_id) FROM loyalty.enriched_purchases WHERE day = '2024-06-02')")  # fmt: skip
    with duckdb.connect(seeded.database) as conn:

        def wrong(check, days) -> int:
            return next(iter(check.result(None, conn, RulesResource(), days).metadata.values())).value

        for check in (unique_offsets, enriched_keeps_every_purchase):
            assert wrong(check, (date(2024, 6, 2), date(2024, 6, 3))) == 1
            assert wrong(check, None) == 1
            assert wrong(check, (date(2024, 6, 3), date(2024, 6, 4))) == 0


@pytest.fixture
def ids(tmp_path) -> duckdb.DuckDBPyConnection:
    """2,000 people p0000..p1999 with one event each, their correct counts, and an update that wrote p1500."""
    conn = duckdb.connect(str(tmp_path / "ids.duckdb"))
    conn.execute(touched.DDL + "INSERT INTO changes.applied VALUES ('t.counts', 5, 'h')")
    conn.execute("CREATE SCHEMA t")
    conn.execute("CREATE TABLE t.events AS SELECT printf('p%04d', i) AS user_id FROM range(2000) AS r(i)")
    conn.execute("CREATE TABLE t.counts AS SELECT user_id, count(*) AS n FROM t.events GROUP BY user_id")
    conn.execute("CREATE TEMP TABLE touched_people AS SELECT 'p1500' AS person")
    return conn


COUNTS = matches_rebuild(
    dg.AssetKey(["t", "counts"]),
    "t.events",
    lambda people: f"SELECT user_id, count(*) AS n FROM t.events WHERE user_id IN ({people}) GROUP BY user_id",
)


def sampled(conn, days=UPDATED) -> tuple[bool, int, int]:
    result = COUNTS.result(None, conn, RulesResource(), days)
    return result.passed, result.metadata["sampled_people"].value, result.metadata["rows_differing"].value


def test_the_sampled_rebuild_comparison_catches_a_change_no_update_wrote_without_reading_everyone(ids):
    """The sample is the people written and 1,000 events' people from the first of them on, wrapping round: p1500..
    p1999 and p0000..p0499. A stale or missing row there fails it though the update did not write it; one beyond it
    is not looked at (not everyone is compared)."""
    assert sampled(ids) == (True, 1000, 0)
    ids.execute("UPDATE t.counts SET n = 2 WHERE user_id = 'p0400'")  # stale, past the wrap
    assert sampled(ids) == (False, 1000, 2)
    ids.execute("UPDATE t.counts SET n = 1 WHERE user_id = 'p0400'")
    ids.execute("DELETE FROM t.counts WHERE user_id = 'p1700'")  # missing: found by its events
    assert sampled(ids) == (False, 1000, 1)
    ids.execute("INSERT INTO t.counts VALUES ('p1700', 1)")
    ids.execute("UPDATE t.counts SET n = 2 WHERE user_id = 'p0700'")  # outside this update's sample
    assert sampled(ids) == (True, 1000, 0)
    # each update draws another start among the people written: over updates, p0700 is caught too
    ids.execute("CREATE OR REPLACE TEMP TABLE touched_people AS SELECT user_id AS person FROM t.events")
    caught = []
    for seq in range(6, 16):
        ids.execute("UPDATE changes.applied SET seq = $1", [seq])
        caught.append(not sampled(ids)[0])
    assert 0 < sum(caught) < len(caught)
    # an update that wrote nobody starts anywhere
    ids.execute("DELETE FROM touched_people")
    assert sampled(ids)[1] == 1000


def test_the_sampled_rebuild_comparison_of_a_small_table_takes_everyone(seeded):
    """Fewer than 1,000 events: the stretch is the whole round, so a row no update wrote is compared."""
    rules = RulesResource()
    with duckdb.connect(seeded.database) as conn:
        load_rules(conn, rules.rules)
        conn.execute("CREATE TEMP TABLE touched_people AS SELECT 'ana' AS person")
        for check in (SALES_TOTALS_CHECKS[-1], BALANCES_CHECKS[-1]):
            assert check.result(None, conn, rules, UPDATED).passed
        conn.execute("UPDATE loyalty.sales_totals SET total = total + 1 WHERE user_id = 'u2003'")
        conn.execute("DELETE FROM points.point_balances WHERE user_id = 'u2004'")
        for days in (UPDATED, None):
            assert SALES_TOTALS_CHECKS[-1].result(None, conn, rules, days).metadata["rows_differing"].value == 2
            assert BALANCES_CHECKS[-1].result(None, conn, rules, days).metadata["rows_differing"].value == 1


def test_the_replayed_customer_is_one_the_days_wrote_and_a_wrong_row_fails(seeded):
    rules = RulesResource()
    day = (date(2024, 6, 5), date(2024, 6, 6))  # only u2003 has ledger rows on 06-05
    with duckdb.connect(seeded.database) as conn:
        result = sampled_customer_reconciles.result(None, conn, rules, day)
        assert result.passed and result.metadata["user_id"].value == "u2003"
        assert sampled_customer_reconciles.result(None, conn, rules, (date(2024, 6, 6), date(2024, 6, 7))).passed
        conn.execute("UPDATE points.point_transactions SET points = 125 WHERE txn_id = 'earn:purchases:5:12'")
        result = sampled_customer_reconciles.result(None, conn, rules, day)
        assert not result.passed and result.metadata["differences"].value == 2  # the row expected, the row found


def test_ambiguous_names_are_listed_for_the_days_that_made_them(seeded):
    tamper(
        seeded,
        """INSERT INTO identity.weak_values VALUES ('name', 'zed', 'u2001', 'users:9:1', '2024-06-03'),
                  ('name', 'zed', 'u2003', 'users:9:2', '2024-06-03'), ('name', 'zed', 'u2004', 'users:9:3', '2024-06-04');
           INSERT INTO identity.ambiguous_values VALUES ('zed', '2024-06-03')""",
    )
    with duckdb.connect(seeded.database) as conn:

        def listed(days) -> list:
            return ambiguous_weak_values.result(None, conn, RulesResource(), days).metadata["values"].value

        zed = [{"type": "name", "value": "zed", "accounts": ["u2001", "u2003", "u2004"]}]
        assert listed((date(2024, 6, 3), date(2024, 6, 4))) == zed
        assert listed(None) == zed
        assert listed((date(2024, 6, 4), date(2024, 6, 6))) == []


def test_unknown_purchasers_after_an_update_are_those_it_wrote(seeded):
    tamper(seeded, "DELETE FROM identity.id_graph WHERE id_type = 'user_id' AND id_value IN ('u2001', 'u2003')")
    with duckdb.connect(seeded.database) as conn:

        def unknown(*people: str) -> tuple[str, int]:
            conn.execute("CREATE OR REPLACE TEMP TABLE touched_people (person VARCHAR)")
            conn.executemany("INSERT INTO touched_people VALUES ($1)", [[person] for person in people])
            metadata = purchases_by_known_users.result(None, conn, RulesResource(), UPDATED).metadata
            return metadata["unknown_user_ids"].value, metadata["purchases_by_unknown_users"].value

        assert unknown("u2001", "u2002") == ("kris", 14)
        assert unknown("u2003", "ana") == ("yeva", 8)
        assert unknown("u2002", "ana") == ("", 0)
