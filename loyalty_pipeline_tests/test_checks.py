"""Asset checks pass on good tables and fail when the rule they guard is broken."""

from datetime import date

import dagster as dg
import duckdb
import pytest

from loyalty_pipeline.assets.checks import duplicate_check, rejected_rows_check
from loyalty_pipeline.assets.customer import purchases_by_known_users
from loyalty_pipeline.assets.loyalty import (
    enriched_keeps_every_purchase,
    stamps_match_purchases,
    totals_and_tiers_agree,
)
from loyalty_pipeline.resources import RulesResource, Warehouse
from loyalty_pipeline_tests.conftest import Inputs


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
