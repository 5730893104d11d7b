"""SPEC §5.4 on a hand-made population: every transition rule, point-in-time evaluation, criteria validation."""

from datetime import date

import dagster as dg
import duckdb
import pytest

from loyalty_pipeline.definitions import EVERYTHING_JOB, build_defs
from loyalty_pipeline.defs.runs import materialize_days
from loyalty_pipeline.domain.config import RulesError, load_rules
from loyalty_pipeline.domain.customer.profiles import totals_from_start
from loyalty_pipeline.lib.warehouse import rows_differing

RULES = """
journeys:
  - id: tea_trial
    audience: "list_contains(products_purchased, 'coffee')"
    goal: "list_contains(products_purchased, 'tea')"
    stages:
      - id: nudge
        steps: [{activation: tea_coupon}, {wait_days: 3}]
        exit_criteria:
          - {name: big, when: "total_spend > 100"}
          - {name: lapsed, when: "days_since_last_purchase > 3"}
      - id: reward
        entry: "points_balance >= 40"
        steps: [{activation: double_points}]
"""
JOURNEYS = ("journey/activations",)  # the journeys and what they read
D = {n: f"2024-06-0{n}" for n in range(1, 7)}
STATE = (
    "SELECT customer_id, node, entered_at::VARCHAR FROM journey.journey_state ORDER BY customer_id, entered_at, node"
)


@pytest.fixture
def population(inputs):
    inputs.rules(RULES)
    inputs.kafka(
        "products",
        [
            (pid, {"category": "c", "price": price}, f"{D[1]}T00:00:00")
            for pid, price in [("coffee", 30), ("tea", 2), ("cake", 100), ("scone", 15)]
        ],
    )
    inputs.kafka(
        "purchases",
        [
            (user, {"product_id": pid}, f"{D[day]}T10:00:00")
            for user, pid, day in [
                ("ann", "coffee", 1),
                ("ann", "coffee", 3),  # wait ends day 4, reward's entry holds: reward, end
                ("bob", "coffee", 1),
                ("bob", "tea", 2),  # goal on day 2
                ("cid", "coffee", 1),  # waits for reward's entry, then lapses on day 5
                ("dan", "coffee", 1),
                ("dan", "cake", 1),  # enters and exits 'big' the same day, before any step
                ("eve", "coffee", 1),
                ("eve", "tea", 1),  # audience minus goal: never enters
                ("fay", "coffee", 1),
                ("fay", "scone", 5),  # reward's entry first holds on day 5
                ("gus", "coffee", 4),  # qualifies only on day 4
            ]
        ],
    )
    return inputs


EXPECTED = [
    ("ann", "stage:nudge", D[1]),
    ("ann", "stage:nudge:step:1", D[1]),
    ("ann", "stage:nudge:step:2", D[1]),
    ("ann", "end", D[4]),
    ("ann", "stage:reward", D[4]),
    ("ann", "stage:reward:step:1", D[4]),
    ("bob", "stage:nudge", D[1]),
    ("bob", "stage:nudge:step:1", D[1]),
    ("bob", "stage:nudge:step:2", D[1]),
    ("bob", "goal", D[2]),
    ("cid", "stage:nudge", D[1]),
    ("cid", "stage:nudge:step:1", D[1]),
    ("cid", "stage:nudge:step:2", D[1]),
    ("cid", "stage:nudge:exit:lapsed", D[5]),
    ("dan", "stage:nudge", D[1]),
    ("dan", "stage:nudge:exit:big", D[1]),
    ("fay", "stage:nudge", D[1]),
    ("fay", "stage:nudge:step:1", D[1]),
    ("fay", "stage:nudge:step:2", D[1]),
    ("fay", "end", D[5]),
    ("fay", "stage:reward", D[5]),
    ("fay", "stage:reward:step:1", D[5]),
    ("gus", "stage:nudge", D[4]),
    ("gus", "stage:nudge:step:1", D[4]),
    ("gus", "stage:nudge:step:2", D[4]),
]


def test_every_transition_rule_on_a_backfill(population):
    population.materialize(D[1], D[6], assets=JOURNEYS)
    assert population.query(STATE) == EXPECTED
    assert population.query(
        "SELECT customer_id, activation, activated_on::VARCHAR FROM journey.activations ORDER BY ALL"
    ) == [
        ("ann", "double_points", D[4]),
        ("ann", "tea_coupon", D[1]),
        ("bob", "tea_coupon", D[1]),
        ("cid", "tea_coupon", D[1]),
        ("fay", "double_points", D[5]),
        ("fay", "tea_coupon", D[1]),
        ("gus", "tea_coupon", D[4]),
    ]


def test_wait_of_three_days_is_not_over_on_day_three(population):
    population.materialize(D[1], D[3], assets=JOURNEYS)
    assert [row for row in population.query(STATE) if row[0] == "ann"] == EXPECTED[:3]
    population.materialize(
        D[4], assets=JOURNEYS
    )  # the wait entered on day 1 is over on day 4: the next stage, that day
    assert ("ann", "stage:reward", D[4]) in population.query(STATE)


@pytest.mark.e2e  # a dozen runs of the whole chain
def test_a_backfill_equals_single_day_runs_and_reruns_are_idempotent(population, tmp_path):
    population.materialize(D[1], D[6], assets=JOURNEYS)
    backfilled = population.query(STATE), population.query("SELECT * FROM journey.activations ORDER BY ALL")
    population.warehouse = tmp_path / "day_by_day.duckdb"
    for day in range(1, 7):
        population.materialize(D[day], assets=JOURNEYS)
    assert (population.query(STATE), population.query("SELECT * FROM journey.activations ORDER BY ALL")) == backfilled
    population.materialize(D[4], assets=JOURNEYS)
    population.materialize(D[2], D[6], assets=JOURNEYS)
    assert population.query(STATE) == backfilled[0]


def test_a_day_after_a_gap_is_refused(population):
    population.materialize(D[1], D[2], assets=JOURNEYS)
    job = build_defs(population.env()).resolve_job_def(EVERYTHING_JOB)
    result = job.execute_in_process(
        partition_key=D[4], asset_selection=[dg.AssetKey(["journey", "journey_state"])], raise_on_error=False
    )
    assert not result.success
    assert any(
        "needs the state at the end of 2024-06-03" in str(event.event_specific_data.error)
        for event in result.all_events
        if event.is_step_failure
    )


def test_the_funnel_is_in_the_materialization_metadata(population):
    result = population.materialize(D[1], D[6], assets=JOURNEYS)
    state = dg.AssetKey(["journey", "journey_state"])
    [materialization] = [m for m in result.asset_materializations_for_node("journeys") if m.asset_key == state][-1:]
    funnel = materialization.metadata["funnel"].value
    assert "**tea_trial**: 6 entered, 1 reached the goal (17% conversion)" in funnel
    assert "| `stage:nudge:exit:lapsed` | 1 |" in funnel


@pytest.mark.parametrize(
    "criterion, complaint",
    [
        ("1=1; DROP TABLE x", "one expression only"),
        ("total_spend > (SELECT max(price) FROM loyalty.enriched_purchases)", "subquery not allowed"),
        ("favourite_colour = 'red'", "unknown column favourite_colour"),
        ("p.total_spend > 1", "unknown column p.total_spend"),
        ("read_csv('/etc/passwd') IS NOT NULL", "not allowed"),
        ("total_spend", "must be true or false"),
        ("total_spend >", "not a valid SQL expression"),
    ],
)
def test_malicious_or_wrong_criteria_fail_at_load_naming_journey_field_and_text(tmp_path, criterion, complaint):
    path = tmp_path / "loyalty.yaml"
    path.write_text(RULES.replace("days_since_last_purchase > 3", criterion.replace('"', '\\"')))
    with pytest.raises(RulesError) as error:
        load_rules(path)
    message = str(error.value)
    assert "journey tea_trial, stages[0].exit_criteria[1].when" in message
    assert complaint in message and criterion in message


def test_checked_criteria_are_rerendered_not_pasted(tmp_path):
    path = tmp_path / "loyalty.yaml"
    path.write_text(RULES)
    criteria = load_rules(path).journeys[0].criteria()
    assert criteria["audience"] == "ARRAY_CONTAINS(products_purchased, 'coffee')"
    assert criteria["stages[1].entry"] == "points_balance >= 40"


@pytest.mark.e2e  # three runs over generated data
def test_profile_totals_carried_day_to_day_and_run_to_run_equal_totals_from_the_start(generated, tmp_path):
    """Journeys add each day's events to the previous day's totals (and a run starts from the totals the last one
    kept): runs of 4 and 3 days give the state of one 7-day run, and the kept totals are the sums from the start."""

    def run(warehouse, first, last):
        defs = build_defs({"LOYALTY_DATA_DIR": str(generated), "LOYALTY_WAREHOUSE": str(warehouse)})
        assert materialize_days(defs, first, last, assets=JOURNEYS).success

    run(tmp_path / "split.duckdb", "2024-01-01", "2024-01-04")
    run(tmp_path / "split.duckdb", "2024-01-05", "2024-01-07")
    run(tmp_path / "whole.duckdb", "2024-01-01", "2024-01-07")
    with duckdb.connect(str(tmp_path / "split.duckdb")) as conn:
        conn.execute("ATTACH $path AS whole (READ_ONLY)", {"path": str(tmp_path / "whole.duckdb")})
        state = "SELECT * FROM {}.journey.journey_state"
        assert conn.execute("SELECT count(DISTINCT node) FROM journey.journey_state").fetchall()[0][0] >= 4
        assert rows_differing(conn, state.format("split"), state.format("whole")) == 0
        assert conn.execute("SELECT as_of FROM journey.profile_totals_as_of").fetchall() == [(date(2024, 1, 7),)]
        conn.execute("SET TimeZone = 'UTC'")
        totals_from_start(conn, date(2024, 1, 7))
        kept = "SELECT * FROM journey.profile_totals"
        assert (
            conn.execute(f"SELECT count(*) FROM ({kept}) WHERE len(activity) > 0 AND purchase_count > 0").fetchall()[0][
                0
            ]
            > 0
        )
        assert rows_differing(conn, kept, "SELECT * FROM profile_totals") == 0


MERGE_RULES = """
journeys:
  - id: welcome
    audience: "purchase_count > 0"
    goal: "total_spend > 1000"
    stages:
      - id: hello
        steps: [{activation: hi}, {wait_days: 1}, {activation: thanks}, {wait_days: 10}]
"""


def _two_profiles_merging_on_day_4(inputs) -> None:
    """K1 (a till's card key) buys on day 1, account u9 on day 2; both are greeted and thanked before day 4, when an
    order keyed K1 carries u9's email: one person from day 4 on."""
    inputs.rules(MERGE_RULES)
    inputs.kafka("products", [("ten", {"category": "c", "price": 10}, f"{D[1]}T00:00:00")])
    inputs.kafka("users", [("u9", {"name": "Zoe", "email": "z@x.com"}, f"{D[1]}T07:00:00")])
    inputs.kafka(
        "purchases",
        [
            ("K1", {"product_id": "ten"}, f"{D[1]}T08:00:00"),
            ("u9", {"product_id": "ten"}, f"{D[2]}T08:00:00"),
            ("K1", {"product_id": "ten", "email": "z@x.com"}, f"{D[4]}T08:00:00"),
        ],
    )


ACTIVATIONS = "SELECT customer_id, activation, activated_on::VARCHAR FROM journey.activations ORDER BY ALL"


@pytest.mark.parametrize("runs", [[(1, 4)], [(1, 3), (4, 4)], [(1, 1), (2, 2), (3, 3), (4, 4)]])
def test_a_merge_keeps_the_activations_both_profiles_had_however_the_days_are_run(inputs, runs):
    _two_profiles_merging_on_day_4(inputs)
    for first, last in runs:
        inputs.materialize(D[first], D[last], assets=JOURNEYS)
    assert inputs.query("SELECT merged_id, into_id, day::VARCHAR FROM identity.merges") == [("K1", "u9", D[4])]
    assert inputs.query(ACTIVATIONS) == [
        ("K1", "hi", D[1]),
        ("K1", "thanks", D[2]),
        ("u9", "hi", D[2]),
        ("u9", "thanks", D[3]),
    ]
    # the state holds each node once for the person, at the earlier of the two dates
    assert inputs.query(
        "SELECT customer_id, node, entered_at::VARCHAR FROM journey.journey_state WHERE customer_id = 'u9' ORDER BY ALL"
    ) == [
        ("u9", "stage:hello", D[1]),
        ("u9", "stage:hello:step:1", D[1]),
        ("u9", "stage:hello:step:2", D[1]),
        ("u9", "stage:hello:step:3", D[2]),
        ("u9", "stage:hello:step:4", D[2]),
    ]


def test_a_late_file_shows_which_handed_activations_it_withdrew_or_added(population):
    """Day 1's activations were handed out; a late file keeps bob out (his tea makes the goal hold on entry) and
    brings hal in. The activations' page lists both, and each day of the range its own row count."""
    population.materialize(D[1], D[2], assets=JOURNEYS)
    population.kafka(
        "purchases",
        [("bob", {"product_id": "tea"}, f"{D[1]}T09:00:00"), ("hal", {"product_id": "coffee"}, f"{D[1]}T11:00:00")],
        file="late.jsonl",
    )
    result = population.materialize(D[1], D[2], assets=JOURNEYS)
    events = {
        event.partition: event.metadata
        for event in result.get_asset_materialization_events()
        if event.asset_key == dg.AssetKey(["journey", "activations"])
        for event in [event.materialization]
    }
    assert events[D[1]]["activations_withdrawn"].value == events[D[1]]["activations_added_late"].value == 1
    assert events[D[1]]["activations_withdrawn_preview"].value.splitlines()[2:] == [
        "| 2024-06-01 | tea_trial | bob | tea_coupon |"
    ]
    assert events[D[1]]["activations_added_late_preview"].value.splitlines()[2:] == [
        "| 2024-06-01 | tea_trial | hal | tea_coupon |"
    ]
    # ann, cid, fay and hal get day 1's coupon; nobody enters on day 2: not the window's 4 on each day
    assert [events[day]["dagster/partition_row_count"].value for day in (D[1], D[2])] == [4, 0]
