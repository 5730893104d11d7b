"""Issue 31 on hand-made populations: decision, A/B test, wait_until and jump steps, re-entry and the holdout, node
by node with exact dates; assignments against md5 computed here."""

import hashlib

import pytest

from loyalty_pipeline.domain.config import RulesError, load_rules

JOURNEYS = ("journey/activations",)
D = {n: f"2024-06-0{n}" for n in range(1, 10)}
PRICES = {"coffee": 30, "tea": 2, "cake": 100}
STATE = "SELECT customer_id, entry, node, entered_at::VARCHAR FROM journey.journey_state ORDER BY ALL"
ACTIVATIONS = "SELECT customer_id, activation, activated_on::VARCHAR FROM journey.activations ORDER BY ALL"


def _shop(inputs, rules: str, purchases: list[tuple[str, str, int]]) -> None:
    inputs.rules(rules)
    inputs.kafka(
        "products",
        [(pid, {"category": "c", "price": price}, f"{D[1]}T00:00:00") for pid, price in PRICES.items()],
    )
    inputs.kafka("purchases", [(user, {"product_id": pid}, f"{D[day]}T10:00:00") for user, pid, day in purchases])


def _bucket(journey: str, step: str, person: str, salt: str = "0") -> int:
    """The documented assignment: md5(journey|step|person|salt), its first 4 hex digits as a number of 65536."""
    return int(hashlib.md5(f"{journey}|{step}|{person}|{salt}".encode()).hexdigest()[:4], 16)


DECISION = """
journeys:
  - id: pick
    audience: "purchase_count > 0"
    stages:
      - id: s
        steps:
          - decision:
              branches:
                - {name: big, when: "total_spend >= 100", steps: [{activation: vip}]}
                - {name: tea, when: "list_contains(products_purchased, 'tea')", steps: [{wait_days: 1}, {activation: tea_mail}]}
              max_wait_days: 2
          - {activation: after}
"""


def test_a_decision_takes_the_first_branch_that_holds_waits_for_one_and_exits_as_no_branch(inputs):
    _shop(
        inputs,
        DECISION,
        [
            ("ann", "cake", 1),  # 100: the threshold hit exactly
            ("bob", "tea", 1),
            ("bob", "cake", 1),  # both branches hold: the first listed wins
            ("cid", "tea", 1),  # tea: a day's wait, then the mail and the step after the decision
            ("dan", "coffee", 1),  # none holds: waits, re-evaluated daily; tea on day 2
            ("dan", "tea", 2),
            ("eve", "coffee", 1),  # none holds for max_wait_days: no_branch on day 3
        ],
    )
    inputs.materialize(D[1], D[4], assets=JOURNEYS)
    decision = "stage:s:step:1"
    start = [("stage:s", D[1]), (decision, D[1])]
    expected = {
        "ann": [*start, (f"{decision}:branch:big", D[1]), (f"{decision}:branch:big:step:1", D[1]),
                ("stage:s:step:2", D[1]), ("end", D[1])],
        "bob": [*start, (f"{decision}:branch:big", D[1]), (f"{decision}:branch:big:step:1", D[1]),
                ("stage:s:step:2", D[1]), ("end", D[1])],
        "cid": [*start, (f"{decision}:branch:tea", D[1]), (f"{decision}:branch:tea:step:1", D[1]),
                (f"{decision}:branch:tea:step:2", D[2]), ("stage:s:step:2", D[2]), ("end", D[2])],
        "dan": [*start, (f"{decision}:branch:tea", D[2]), (f"{decision}:branch:tea:step:1", D[2]),
                (f"{decision}:branch:tea:step:2", D[3]), ("stage:s:step:2", D[3]), ("end", D[3])],
        "eve": [*start, (f"{decision}:no_branch", D[3])],
    }  # fmt: skip
    assert inputs.query(STATE) == sorted(
        (customer, 1, node, day) for customer, nodes in expected.items() for node, day in nodes
    )
    assert inputs.query(ACTIVATIONS) == [
        ("ann", "after", D[1]),
        ("ann", "vip", D[1]),
        ("bob", "after", D[1]),
        ("bob", "vip", D[1]),
        ("cid", "after", D[2]),
        ("cid", "tea_mail", D[2]),
        ("dan", "after", D[3]),
        ("dan", "tea_mail", D[3]),
    ]


def test_an_else_branch_takes_whoever_matches_no_other(inputs):
    rules = DECISION.replace("max_wait_days: 2", "else: {steps: [{activation: other}]}")
    _shop(inputs, rules, [("eve", "coffee", 1)])
    inputs.materialize(D[1], D[1], assets=JOURNEYS)
    assert [node for _, _, node, _ in inputs.query(STATE)] == [
        "end",
        "stage:s",
        "stage:s:step:1",
        "stage:s:step:1:branch:else",
        "stage:s:step:1:branch:else:step:1",
        "stage:s:step:2",
    ]


AB_TEST = """
journeys:
  - id: coupon_test
    audience: "purchase_count > 0"
    goal: "purchase_count > 1"
    stages:
      - id: s
        steps:
          - ab_test:
              salt: june
              variants:
                - {name: coupon, weight: 40, steps: [{activation: coupon}]}
                - {name: points, weight: 40, steps: [{activation: points}]}
              control: 20
          - {wait_days: 1}
          - {activation: reminder}
"""
PEOPLE = [f"c{n:02}" for n in range(40)]


def _arm(person: str) -> str:
    bucket = _bucket("coupon_test", "stage:s:step:1", person, "june")
    return "coupon" if bucket < 65536 * 40 // 100 else "points" if bucket < 65536 * 80 // 100 else "control"


def test_an_ab_test_assigns_by_hash_and_the_control_walks_the_journey_without_activations(inputs):
    _shop(inputs, AB_TEST, [(person, "coffee", 1) for person in PEOPLE])
    inputs.materialize(D[1], D[3], assets=JOURNEYS)
    arms = {person: _arm(person) for person in PEOPLE}
    assert set(arms.values()) == {"coupon", "points", "control"}  # the population reaches every arm
    test = "stage:s:step:1"
    assert inputs.query(STATE) == sorted(
        row
        for person, arm in arms.items()
        for row in [
            (person, 1, "stage:s", D[1]),
            (person, 1, test, D[1]),
            (person, 1, f"{test}:variant:{arm}", D[1]),
            *([(person, 1, f"{test}:variant:{arm}:step:1", D[1])] if arm != "control" else []),
            (person, 1, "stage:s:step:2", D[1]),
            (person, 1, "stage:s:step:3", D[2]),
            (person, 1, "end", D[2]),
        ]
    )
    assert inputs.query(ACTIVATIONS) == sorted(
        row
        for person, arm in arms.items()
        if arm != "control"
        for row in [(person, arm, D[1]), (person, "reminder", D[2])]
    )


def test_a_merge_across_variants_keeps_the_earlier_assignment(inputs):
    """K1 (a card) buys on day 1 and u9 on day 2, in different arms; on day 4 an order keyed K1 carries u9's email:
    the person keeps K1's arm, the earlier, and u9's own arm's nodes are gone."""
    people = [("K1", 1)] + [(f"u{n}", 2) for n in range(50)]
    k1 = _arm("K1")
    u9 = next(person for person, _ in people[1:] if _arm(person) not in (k1, "control"))
    rules = AB_TEST.replace("{wait_days: 1}", "{wait_days: 10}")
    _shop(inputs, rules, [("K1", "coffee", 1), (u9, "coffee", 2), ("K1", "tea", 4)])
    inputs.kafka("users", [(u9, {"name": "Zoe", "email": "z@x.com"}, f"{D[1]}T07:00:00")])
    inputs.kafka("purchases", [("K1", {"product_id": "tea", "email": "z@x.com"}, f"{D[4]}T08:00:00")], file="m.jsonl")
    inputs.materialize(D[1], D[5], assets=JOURNEYS)
    assert inputs.query("SELECT merged_id, into_id FROM identity.merges") == [("K1", u9)]
    test = "stage:s:step:1"
    assert [row for row in inputs.query(STATE) if row[0] == u9] == sorted(
        [
            (u9, 1, "stage:s", D[1]),
            (u9, 1, test, D[1]),
            (u9, 1, f"{test}:variant:{k1}", D[1]),
            *([(u9, 1, f"{test}:variant:{k1}:step:1", D[1])] if k1 != "control" else []),
            (u9, 1, "stage:s:step:2", D[1]),
            (u9, 1, "goal", D[4]),  # two purchases as one person
        ]
    )


REENTRY = """
journeys:
  - id: again
    audience: "purchase_count > 0"
    goal: "list_contains(products_purchased, 'tea')"
    reentry: {mode}
    {after}
    stages: [{{id: s, steps: [{{activation: hi}}, {{wait_days: 2}}]}}]
"""


@pytest.mark.parametrize(
    "mode, after, entries",
    [
        ("none", "", [(1, D[1], "end", D[3])]),
        ("always", "", [(1, D[1], "end", D[3]), (2, D[4], "end", D[6]), (3, D[7], "goal", D[8])]),
        ("unless_goal", "", [(1, D[1], "end", D[3]), (2, D[4], "end", D[6]), (3, D[7], "goal", D[8])]),
        ("always", "after_days: 2", [(1, D[1], "end", D[3]), (2, D[5], "end", D[7])]),  # day 9: the goal holds
        ("always", "after_days: 3", [(1, D[1], "end", D[3]), (2, D[6], "goal", D[8])]),
    ],
)
def test_reentry_after_an_entry_ends(inputs, mode, after, entries):
    """ann ends each entry two days after it starts; tea on day 8 is the goal, which then keeps her out."""
    _shop(inputs, REENTRY.format(mode=mode, after=after), [("ann", "coffee", 1), ("ann", "tea", 8)])
    inputs.materialize(D[1], D[9], assets=JOURNEYS)
    assert inputs.query(STATE) == sorted(
        row
        for entry, entered, last, ended in entries
        for row in [
            ("ann", entry, "stage:s", entered),
            ("ann", entry, "stage:s:step:1", entered),
            ("ann", entry, "stage:s:step:2", entered),
            ("ann", entry, last, ended),
        ]
    )
    assert inputs.query(ACTIVATIONS) == [("ann", "hi", entered) for _, entered, _, _ in entries]


@pytest.mark.parametrize("mode, entries", [("always", [(1, D[2], "goal", D[3]), (2, D[4], "end", D[5])]),
                                           ("unless_goal", [(1, D[2], "goal", D[3])])])  # fmt: skip
def test_unless_goal_never_reenters_after_reaching_the_goal(inputs, mode, entries):
    """The goal holds on purchase days only: bob, buying on days 1 and 3, is kept out on day 1, enters on day 2,
    reaches the goal on day 3; `always` lets him in again on day 4, `unless_goal` never."""
    rules = f"""
journeys:
  - id: again
    audience: "purchase_count > 0"
    goal: "days_since_last_purchase = 0"
    reentry: {mode}
    stages: [{{id: s, steps: [{{wait_days: 1}}]}}]
"""
    _shop(inputs, rules, [("bob", "coffee", 1), ("bob", "coffee", 3)])
    inputs.materialize(D[1], D[5], assets=JOURNEYS)
    assert inputs.query(STATE) == sorted(
        row
        for entry, entered, last, ended in entries
        for row in [
            ("bob", entry, "stage:s", entered),
            ("bob", entry, "stage:s:step:1", entered),
            ("bob", entry, last, ended),
        ]
    )


def test_the_holdout_never_enters_a_stage_and_is_measured_on_the_goal(inputs):
    rules = """
journeys:
  - id: held
    audience: "purchase_count > 0"
    goal: "list_contains(products_purchased, 'tea')"
    holdout_pct: 30
    salt: s1
    stages: [{id: s, steps: [{activation: hi}, {wait_days: 5}]}]
"""
    _shop(inputs, rules, [(person, "coffee", 1) for person in PEOPLE] + [(person, "tea", 2) for person in PEOPLE[:10]])
    inputs.materialize(D[1], D[2], assets=JOURNEYS)
    held = {person for person in PEOPLE if _bucket("held", "holdout", person, "s1") < 65536 * 30 // 100}
    assert 0 < len(held) < len(PEOPLE)
    assert inputs.query(STATE) == sorted(
        row
        for person in PEOPLE
        for row in [
            *([(person, 1, "holdout", D[1])] if person in held else []),
            *(
                [(person, 1, "stage:s", D[1]), (person, 1, "stage:s:step:1", D[1]), (person, 1, "stage:s:step:2", D[1])]
                if person not in held
                else []
            ),
            *([(person, 1, "goal", D[2])] if person in PEOPLE[:10] else []),
        ]
    )
    assert inputs.query("SELECT DISTINCT customer_id FROM journey.activations ORDER BY ALL") == [
        (person,) for person in PEOPLE if person not in held
    ]


def test_wait_until_completes_when_its_criterion_holds_or_after_max_days_and_jump_skips_a_stage(inputs):
    rules = """
journeys:
  - id: wait
    audience: "purchase_count > 0"
    stages:
      - id: a
        steps: [{wait_until: "purchase_count >= 2", max_days: 3}, {jump: c}]
      - id: b
        steps: [{activation: never}]
      - id: c
        steps: [{activation: done}]
"""
    _shop(inputs, rules, [("ann", "coffee", 1), ("ann", "tea", 2), ("bob", "coffee", 1)])
    inputs.materialize(D[1], D[5], assets=JOURNEYS)
    path = lambda person, waited: [  # noqa: E731
        (person, 1, "stage:a", D[1]),
        (person, 1, "stage:a:step:1", D[1]),
        (person, 1, "stage:a:step:2", waited),
        (person, 1, "stage:c", waited),
        (person, 1, "stage:c:step:1", waited),
        (person, 1, "end", waited),
    ]
    assert inputs.query(STATE) == sorted(path("ann", D[2]) + path("bob", D[4]))


@pytest.mark.parametrize(
    "steps, complaint",
    [
        ("[{jump: s}]", "jump to s goes back (a loop)"),
        ("[{jump: nowhere}]", "jump to nowhere, which is not a stage"),
        ("[{decision: {branches: [{name: x, when: 'purchase_count > 1'}]}}]", "a decision has 2 to 6 branches"),
        ("[{decision: {branches: [{name: x}, {name: y, when: 'true'}]}}]", "every branch but else needs `when`"),
        ("[{ab_test: {variants: [{name: a, weight: 50}], control: 40}}]", "must sum to 100, got 90"),
        ("[{ab_test: {variants: [{name: control, weight: 100}]}}]", "variant names (and control) must be unique"),
        ("[{wait_until: 'drop table x', max_days: 1}]", "steps[0].wait_until"),
        ("[{wiat_days: 1}]", "a step is one of activation, wait_days"),
    ],
)
def test_steps_are_validated_at_load(tmp_path, steps, complaint):
    path = tmp_path / "rules.yaml"
    path.write_text(f"journeys: [{{id: j, audience: 'true', stages: [{{id: s, steps: {steps}}}]}}]")
    with pytest.raises(RulesError) as error:
        load_rules(path)
    assert complaint in str(error.value)


def test_the_goal_report_on_a_hand_computed_case(inputs):
    """Twelve coffee buyers. By md5 (see _bucket), p0 p1 p2 p5 p7 p8 are held out; of those who enter, p4 and p10
    get variant a, p3 p6 p9 p11 the control. Tea is the goal: p10 and p0 on day 2, p4 on day 3, p3 on day 4."""
    rules = """
journeys:
  - id: lift
    audience: "purchase_count > 0"
    goal: "list_contains(products_purchased, 'tea')"
    holdout_pct: 20
    stages:
      - id: s
        steps:
          - ab_test: {variants: [{name: a, weight: 50, steps: [{activation: coupon}]}], control: 50}
          - wait_days: 10
"""
    people = [f"p{n}" for n in range(12)]
    tea = [("p10", "tea", 2), ("p0", "tea", 2), ("p4", "tea", 3), ("p3", "tea", 4)]
    _shop(inputs, rules, [(person, "coffee", 1) for person in people] + tea)
    inputs.materialize(D[1], D[5], assets=("journey/goal_report",))
    rows = inputs.query("SELECT * FROM journey.goal_report ORDER BY step, arm")
    journey_margin = 1.96 * (0.5 * 0.5 / 6 + (1 / 6) * (5 / 6) / 6) ** 0.5
    variant_margin = 1.96 * (0.25 * 0.75 / 4) ** 0.5
    assert rows == [
        ("lift", "", "entered", 6, 3, 0.5, 2.0, "holdout", pytest.approx(1 / 3),
         pytest.approx(1 / 3 - journey_margin), pytest.approx(1 / 3 + journey_margin)),
        ("lift", "", "holdout", 6, 1, pytest.approx(1 / 6), 1.0, None, None, None, None),
        ("lift", "stage:s:step:1", "variant:a", 2, 2, 1.0, 1.5, "variant:control", 0.75,
         pytest.approx(0.75 - variant_margin), pytest.approx(0.75 + variant_margin)),
        ("lift", "stage:s:step:1", "variant:control", 4, 1, 0.25, 3.0, None, None, None, None),
    ]  # fmt: skip


CAPPED = """
activations: {max_per_day: 2, max_per_week: 3}
journeys:
  - id: first
    audience: "purchase_count > 0"
    reentry: always
    stages: [{id: s, steps: [{activation: a1}, {activation: a2}, {activation: a3}]}]
  - id: second
    audience: "purchase_count > 0"
    stages: [{id: s, steps: [{activation: b1}]}]
"""


def test_frequency_caps_across_journeys_drop_what_is_over_and_say_so(inputs):
    """ann re-enters `first` daily: 4 activations reached on day 1 (3 + second's 1), 3 on each later day. Two a day
    are delivered (journeys in the order written, then activation), and three in any 7 days."""
    _shop(inputs, CAPPED, [("ann", "coffee", 1)])
    inputs.materialize(D[1], D[2], assets=JOURNEYS)
    inputs.materialize(D[3], D[3], assets=JOURNEYS)  # the week reaches back into the run before
    assert inputs.query(ACTIVATIONS) == [("ann", "a1", D[1]), ("ann", "a1", D[2]), ("ann", "a2", D[1])]
    assert inputs.query(
        "SELECT journey_id, activation, day::VARCHAR, reason FROM journey.capped_activations ORDER BY day, journey_id, activation"
    ) == [
        ("first", "a3", D[1], "max_per_day"),
        ("second", "b1", D[1], "max_per_day"),
        ("first", "a2", D[2], "max_per_week"),
        ("first", "a3", D[2], "max_per_day"),
        ("first", "a1", D[3], "max_per_week"),
        ("first", "a2", D[3], "max_per_week"),
        ("first", "a3", D[3], "max_per_day"),
    ]


def test_a_late_file_changes_a_branch_and_the_state_converges_to_one_built_with_everything(inputs, tmp_path):
    """dan's coffee (day 1) leaves him waiting at the decision, then no_branch on day 3; a late file brings his
    day-1 tea: rebuilt, he takes the tea branch on day 1, as a warehouse that had every file from the start."""
    _shop(inputs, DECISION, [("dan", "coffee", 1), ("eve", "cake", 2)])
    inputs.materialize(D[1], D[4], assets=JOURNEYS)
    assert ("dan", 1, "stage:s:step:1:no_branch", D[3]) in inputs.query(STATE)
    inputs.kafka("purchases", [("dan", {"product_id": "tea"}, f"{D[1]}T11:00:00")], file="late.jsonl")
    inputs.materialize(D[1], D[4], assets=JOURNEYS)
    dan = [row for row in inputs.query(STATE) if row[0] == "dan"]
    assert dan == sorted(
        ("dan", 1, node, day)
        for node, day in [
            ("stage:s", D[1]),
            ("stage:s:step:1", D[1]),
            ("stage:s:step:1:branch:tea", D[1]),
            ("stage:s:step:1:branch:tea:step:1", D[1]),
            ("stage:s:step:1:branch:tea:step:2", D[2]),
            ("stage:s:step:2", D[2]),
            ("end", D[2]),
        ]
    )
    assert inputs.query(
        "SELECT change, customer_id, activation, activated_on::VARCHAR FROM journey.activation_revisions ORDER BY ALL"
    ) == [("added", "dan", "after", D[2]), ("added", "dan", "tea_mail", D[2])]
    everything = type(inputs)(inputs.root)  # the same files, a new warehouse
    everything.warehouse = tmp_path / "everything.duckdb"
    everything.materialize(D[1], D[4], assets=JOURNEYS)
    assert everything.query(STATE) == inputs.query(STATE)
    assert everything.query(ACTIVATIONS) == inputs.query(ACTIVATIONS)


def test_a_merge_of_a_held_out_profile_and_one_that_entered_keeps_the_earlier(inputs):
    """A held-out card (day 1) and an account that entered (day 2) merge on day 4: the person stays held out, the
    account's stage nodes go, no activation follows, and the goal report counts one person, not two."""
    rules = """
journeys:
  - id: held
    audience: "purchase_count > 0"
    holdout_pct: 50
    stages: [{id: s, steps: [{wait_days: 3}, {activation: late}]}]
"""
    held = lambda person: _bucket("held", "holdout", person) < 65536 // 2  # noqa: E731
    card = next(f"K{n}" for n in range(100) if held(f"K{n}"))
    user = next(f"u{n}" for n in range(100) if not held(f"u{n}"))
    _shop(inputs, rules, [(card, "coffee", 1), (user, "coffee", 2)])
    inputs.kafka("users", [(user, {"name": "Zoe", "email": "z@x.com"}, f"{D[1]}T07:00:00")])
    inputs.kafka("purchases", [(card, {"product_id": "tea", "email": "z@x.com"}, f"{D[4]}T08:00:00")], file="m.jsonl")
    inputs.materialize(D[1], D[6], assets=(*JOURNEYS, "journey/goal_report"))
    assert inputs.query("SELECT merged_id, into_id FROM identity.merges") == [(card, user)]
    assert [row for row in inputs.query(STATE) if row[0] == user] == [(user, 1, "holdout", D[1])]
    assert inputs.query(ACTIVATIONS) == []
    assert inputs.query("SELECT arm, entered FROM journey.goal_report") == [("holdout", 1)]


def test_else_takes_no_name_of_its_own(tmp_path):
    path = tmp_path / "rules.yaml"
    steps = "[{decision: {branches: [{name: big, when: 'true'}], else: {name: big}}}]"
    path.write_text(f"journeys: [{{id: j, audience: 'true', stages: [{{id: s, steps: {steps}}}]}}]")
    with pytest.raises(RulesError, match="else has no name"):
        load_rules(path)
