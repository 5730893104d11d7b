"""Every step that changes what a profile or card shows logs the people it touched (changes.touched, by source):
the rows of the days it replaced, old and new, and only those."""

import json

from loyalty_pipeline_tests.scenarios import Inputs, envelope, priced

D = {n: f"2024-06-0{n}" for n in range(1, 5)}


def snapshot(inputs: Inputs, topic: str, messages: list[tuple]) -> None:
    """The whole snapshot file of `topic`: (offset, key, payload, day) messages, so a rewrite keeps the offsets."""
    lines = [
        json.dumps(envelope(topic, key, payload, f"{D[day]}T{9 + offset % 10:02}:00:00", 0, offset))
        for offset, key, payload, day in messages
    ]
    inputs.write_lines(topic, "part-0.jsonl", lines)


def logged(inputs: Inputs, source: str, first: str, last: str | None = None, assets: tuple = ()) -> list[str]:
    """The people one run (days first..last, `assets` and what they read) logs under `source`."""
    seq = "SELECT coalesce(max(seq), 0) FROM changes.touched"
    before = inputs.query(seq)[0][0] if inputs.warehouse.exists() else 0
    inputs.materialize(first, last, assets=assets)
    rows = inputs.query(
        "SELECT DISTINCT person FROM changes.touched WHERE source = $1 AND seq > $2 ORDER BY 1", [source, before]
    )
    return [person for (person,) in rows]


def test_clicks_log_the_people_of_the_days_replaced_old_and_new(inputs):
    def click(product):
        return {"event_type": "view", "product_id": product}

    def clicks(inputs, *messages):
        return logged(inputs, "activity", *messages, assets=("raw/user_activity",))

    day_1 = [(0, "ann", click("tea"), 1), (1, "bob", click("tea"), 1)]
    day_2 = [(2, "bob", click("cake"), 2), (3, "cid", click("tea"), 2), (4, "dan", click("tea"), 2)]
    snapshot(inputs, "user_activity", day_1 + day_2)
    assert clicks(inputs, D[1]) == ["ann", "bob"]
    assert clicks(inputs, D[2]) == ["bob", "cid", "dan"]
    # day 2 again: dan's click is gone, eve's is new; every click of the day was replaced
    snapshot(inputs, "user_activity", day_1 + day_2[:2] + [(5, "eve", click("tea"), 2)])
    assert clicks(inputs, D[2]) == ["bob", "cid", "dan", "eve"]
    snapshot(inputs, "user_activity", day_1 + day_2[:2] + [(5, "eve", click("tea"), 2), (6, "fay", click("x"), 3)])
    assert clicks(inputs, D[3]) == ["fay"]  # a next day: only its own people
    assert inputs.query("SELECT DISTINCT source FROM changes.touched") == [("activity",)]


def test_users_messages_log_the_people_of_the_days_replaced_old_and_new(inputs):
    def messages(inputs, *days):
        return logged(inputs, "users", *days, assets=("raw/users",))

    day_1 = [(0, "u1", {"name": "Ann"}, 1), (1, "u2", {"name": "Bob"}, 1)]
    day_2 = [(2, "u3", {"name": "Cy"}, 2), (3, "u2", None, 2)]  # u2's account closed (a tombstone)
    snapshot(inputs, "users", day_1 + day_2)
    assert messages(inputs, D[1]) == ["u1", "u2"]
    assert messages(inputs, D[2]) == ["u2", "u3"]
    # day 2 again: u3 renamed, u2 not closed after all, u4 new
    snapshot(inputs, "users", day_1 + [(2, "u3", {"name": "Cyd"}, 2), (4, "u4", {"name": "Di"}, 2)])
    assert messages(inputs, D[2]) == ["u2", "u3", "u4"]
    assert inputs.query("SELECT name FROM raw.users WHERE user_id = 'u3'") == [("Cyd",)]
    snapshot(inputs, "users", day_1 + [(2, "u3", {"name": "Cyd"}, 2), (4, "u4", {"name": "Di"}, 2)] + [
        (5, "u5", {"name": "Eve"}, 3)
    ])  # fmt: skip
    assert messages(inputs, D[3]) == ["u5"]


def test_the_customers_export_logs_the_rows_applied_or_withdrawn(inputs):
    def export(inputs):
        return logged(inputs, "customers", D[1], assets=("raw/customers",))

    header = "user_id,name,email,signup_date\n"
    inputs.csv("customers/a.csv", header + "x,Xi,x@x.com,2024-01-01\ny,Yu,y@x.com,2024-01-02\nz,Zed,,\n")
    assert export(inputs) == ["x", "y", "z"]
    assert export(inputs) == []  # read again unchanged: nobody
    # y edited in place; z withdrawn, w added in its place (another row of the same file)
    inputs.csv("customers/a.csv", header + "x,Xi,x@x.com,2024-01-01\ny,Yuna,y@x.com,2024-01-02\nw,Wu,,\n")
    assert export(inputs) == ["w", "y", "z"]
    inputs.csv("customers/b.csv", header + "v,Vi,v@x.com,2024-01-03\n")  # a new file: only its rows
    assert export(inputs) == ["v"]
    assert inputs.query("SELECT count(*) FROM raw.customers") == [(4,)]


JOURNEY_RULES = """
journeys:
  - id: tea_trial
    audience: "list_contains(products_purchased, 'coffee')"
    goal: "list_contains(products_purchased, 'tea')"
    stages:
      - id: nudge
        steps: [{activation: tea_coupon}, {wait_days: 3}]
"""


def test_journeys_log_the_people_of_the_state_and_activations_of_the_days_rebuilt(inputs):
    def journeys(inputs, *days):
        return logged(inputs, "journeys", *days, assets=("journey/activations",))

    inputs.rules(JOURNEY_RULES)
    priced(inputs, coffee=3, tea=2)
    buy = {"product_id": "coffee"}
    day_1 = [(0, "ann", buy, 1), (1, "bob", buy, 1)]
    day_2 = [(2, "bob", {"product_id": "tea"}, 2), (3, "cid", buy, 2)]  # bob reaches the goal, cid enters
    snapshot(inputs, "purchases", day_1 + day_2)
    assert journeys(inputs, D[1]) == ["ann", "bob"]
    assert journeys(inputs, D[2]) == ["bob", "cid"]
    # day 2 again: bob's tea is gone (his goal no longer happens), dan enters instead
    snapshot(inputs, "purchases", day_1 + [(3, "cid", buy, 2), (4, "dan", buy, 2)])
    assert journeys(inputs, D[2]) == ["bob", "cid", "dan"]
    assert inputs.query(
        "SELECT DISTINCT customer_id FROM journey.journey_state WHERE node = 'goal' OR entered_at = $1 ORDER BY 1",
        [D[2]],
    ) == [("cid",), ("dan",)]
    # a next day: eve enters; ann, bob, cid and dan wait (nobody else moves)
    snapshot(inputs, "purchases", day_1 + [(3, "cid", buy, 2), (4, "dan", buy, 2), (5, "eve", buy, 3)])
    assert journeys(inputs, D[3]) == ["eve"]
    assert journeys(inputs, D[4]) == ["ann", "bob"]  # their 3-day wait is over: the end
    assert inputs.query("SELECT customer_id, activation FROM journey.activations ORDER BY 1") == [
        ("ann", "tea_coupon"),
        ("bob", "tea_coupon"),
        ("cid", "tea_coupon"),
        ("dan", "tea_coupon"),
        ("eve", "tea_coupon"),
    ]


def test_the_id_graph_logs_the_people_of_new_identifiers_apart_from_identity(inputs):
    def graph(inputs, *days, source="identifiers"):
        return logged(inputs, source, *days, assets=("identity/id_graph",))

    day_1 = [(0, "u1", {"name": "Ann", "email": "a@x.com"}, 1), (1, "u2", {"name": "Bob"}, 1)]
    day_2 = [(2, "u1", {"name": "Ann", "card_id": "C1"}, 2), (3, "u3", {"name": "Cy"}, 2)]  # u1's new card
    snapshot(inputs, "users", day_1 + day_2)
    assert graph(inputs, D[1]) == ["u1", "u2"]
    assert graph(inputs, D[2]) == ["u1", "u3"]
    # day 2 again: u1's card is another, u3's message gone, u4 new: the people of the day's old and new rows
    rerun = [(2, "u1", {"name": "Ann", "card_id": "C2"}, 2), (4, "u4", {"name": "Di"}, 2)]
    snapshot(inputs, "users", day_1 + rerun)
    assert graph(inputs, D[2]) == ["u1", "u3", "u4"]
    assert inputs.query("SELECT id_value, customer_id FROM identity.id_graph WHERE id_type = 'card_id'") == [
        ("C2", "u1")
    ]
    # a next day: u2's new email and u5's account; a new identifier moves no purchase, so "identity" logs nobody
    next_day = [(5, "u2", {"name": "Bob", "email": "b@x.com"}, 3), (6, "u5", {"name": "Eve"}, 3)]
    snapshot(inputs, "users", day_1 + rerun + next_day)
    before = inputs.query("SELECT max(seq) FROM changes.touched")[0][0]
    assert graph(inputs, D[3]) == ["u2", "u5"]
    assert inputs.query("SELECT count(*) FROM changes.touched WHERE source = 'identity' AND seq > $1", [before]) == [
        (0,)
    ]


def test_recommendations_log_the_people_whose_baskets_changed(inputs):
    def baskets(inputs, *days):
        return logged(inputs, "baskets", *days, assets=("customer/recommendations",))

    priced(inputs, coffee=3, tea=2)
    day_1 = [(0, "ann", {"product_id": "coffee"}, 1), (1, "bob", {"product_id": "tea"}, 1)]
    snapshot(inputs, "purchases", day_1)
    assert baskets(inputs, D[1]) == ["ann", "bob"]
    # day 1 again, bob's purchase gone and cid's new: not ann, whose basket is as it was
    snapshot(inputs, "purchases", [day_1[0], (2, "cid", {"product_id": "tea"}, 1)])
    assert baskets(inputs, D[1]) == ["bob", "cid"]
