"""Arrival order does not matter: files landing in any order, late ones included, driven only by the sensors'
own evaluation (their run requests executed in process), settle on the warehouse one batch run builds."""

import random

import dagster as dg
import pytest

from loyalty_pipeline.definitions import build_defs
from loyalty_pipeline.defs.runs import materialize_days
from loyalty_pipeline_tests.arrival import DAYS, RULES, TABLES, files, land, table_rows
from loyalty_pipeline_tests.scenarios import settle

pytestmark = pytest.mark.e2e  # many sensor-planned runs per order: a system test, not a domain one


@pytest.mark.parametrize(
    "order",
    ["by_day_then_late", "reversed", "shuffled"],
)
def test_any_arrival_order_settles_on_the_batch_answer(inputs, order):
    texts = files(seed=3)
    inputs.rules(RULES)
    late = sorted(path for path in texts if "late" in path or "again" in path or DAYS[1].isoformat() + ".csv" in path)
    on_time = sorted(set(texts) - set(late), key=lambda path: (path.split("-", 1)[-1], path))
    arrivals = {
        "by_day_then_late": [on_time[i : i + 8] for i in range(0, len(on_time), 8)] + [late[:2], late[2:]],
        "reversed": [list(reversed(on_time))[i : i + 10] for i in range(0, len(on_time), 10)] + [late],
        "shuffled": None,
    }[order]
    if arrivals is None:
        shuffled = sorted(texts)
        random.Random(11).shuffle(shuffled)
        arrivals = [shuffled[i : i + 7] for i in range(0, len(shuffled), 7)]
    defs, instance, cursors = build_defs(inputs.env()), dg.DagsterInstance.ephemeral(), {}
    runs = 0
    for batch in arrivals:
        land(inputs, texts, batch)
        runs += settle(defs, instance, cursors)
    assert runs >= len(arrivals)

    batch_warehouse = inputs.root / "batch.duckdb"
    batch_defs = build_defs(inputs.env(LOYALTY_WAREHOUSE=str(batch_warehouse)))
    assert materialize_days(batch_defs, DAYS[0].isoformat(), DAYS[-1].isoformat()).success
    differing = [table for table in TABLES if table_rows(inputs.warehouse, table) != table_rows(batch_warehouse, table)]
    assert differing == []
    assert inputs.query("SELECT merged_id, into_id FROM identity.merges") == [("K5", "u8")]
    sent = "SELECT customer_id FROM journey.activations WHERE activation = 'tea_coupon'"
    assert {"K5", "u8"} <= {customer for (customer,) in inputs.query(sent)}
