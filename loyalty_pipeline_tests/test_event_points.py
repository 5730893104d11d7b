"""Points for events besides purchases (the events topic, event_rules): once, caps, and referrals paid once to both
sides when the referee's first purchase comes in time."""

import pytest

from loyalty_pipeline_tests.scenarios import POINTS, buy, priced, refused

AWARDS = "SELECT txn_id, user_id, occurred_at::VARCHAR, points, source_ref FROM points.point_transactions WHERE txn_id LIKE 'event:%' ORDER BY occurred_at, txn_id"


def events(inputs, *messages, file="events.jsonl"):
    inputs.kafka("events", [(user, payload, ts) for user, payload, ts in messages], file=file)


def test_once_ever_per_year_and_a_monthly_cap(inputs):
    inputs.rules(
        """event_rules:
  - {type: sign_up, points: 100, once: ever}
  - {type: birthday, points: 50, once: per_year}
  - {type: review, points: 20, cap: {points: 50, per: month}}
"""
    )
    events(
        inputs,
        ("u", {"type": "sign_up"}, "2022-12-30T10:00:00"),  # event:sign_up:0:0
        ("u", {"type": "birthday"}, "2022-12-30T10:00:00"),  # 0:1
        ("u", {"type": "review"}, "2022-12-30T11:00:00"),  # 0:2
        ("u", {"type": "review"}, "2022-12-30T12:00:00"),  # 0:3
        ("u", {"type": "sign_up"}, "2022-12-31T10:00:00"),  # 0:4 once ever: nothing
        ("u", {"type": "birthday"}, "2022-12-31T10:00:00"),  # 0:5 same year: nothing
        ("u", {"type": "review"}, "2022-12-31T23:59:59"),  # 0:6 cut to the 10 left of December's 50
        ("u", {"type": "birthday"}, "2023-01-01T00:00:00"),  # 0:7 a new year
        ("u", {"type": "review"}, "2023-01-01T00:00:00"),  # 0:8 a new month
        ("u", {"type": "newsletter"}, "2023-01-01T00:00:00"),  # 0:9 no rule: no points
    )
    inputs.materialize("2022-12-30", "2023-01-01", assets=POINTS)
    assert [(txn, points) for txn, _, _, points, _ in inputs.query(AWARDS)] == [
        ("event:birthday:0:1", 50),
        ("event:sign_up:0:0", 100),
        ("event:review:0:2", 20),
        ("event:review:0:3", 20),
        ("event:review:0:6", 10),
        ("event:birthday:0:7", 50),
        ("event:review:0:8", 20),
    ]
    assert inputs.query(AWARDS)[0][4] == "events:0:1"


def test_a_referral_pays_both_sides_once_when_the_referees_first_purchase_comes_in_time(inputs):
    inputs.rules(
        """event_rules:
  - {type: referral, points: 200, referee_points: 50, within_days: 7, cap: {points: 300, per: year}}
"""
    )
    priced(inputs, one=1)
    events(
        inputs,
        ("ann", {"type": "referral", "referee": "bea"}, "2022-10-01T10:00:00"),  # 0:0 paid on bea's first purchase
        ("cy", {"type": "referral", "referee": "bea"}, "2022-10-01T11:00:00"),  # 0:1 bea was referred already
        ("ann", {"type": "referral", "referee": "dan"}, "2022-10-01T12:00:00"),  # 0:2 dan buys too late
        ("ann", {"type": "referral", "referee": "eve"}, "2022-10-02T12:00:00"),  # 0:3 ann's cap: 100 left
    )
    buy(
        inputs,
        ("bea", "one", "2022-10-03T09:00:00"),
        ("bea", "one", "2022-10-04T09:00:00"),  # not her first purchase
        ("eve", "one", "2022-10-08T12:00:00"),  # 6 days later: in time
        ("dan", "one", "2022-10-08T12:00:00"),  # 7 days after 12:00 on 10-01: too late
    )
    inputs.materialize("2022-10-01", "2022-10-08", assets=POINTS)
    assert inputs.query(AWARDS) == [
        ("event:referral:0:0", "ann", "2022-10-03 09:00:00", 200, "events:0:0"),
        ("event:referral:0:0:referee", "bea", "2022-10-03 09:00:00", 50, "events:0:0"),
        ("event:referral:0:3", "ann", "2022-10-08 12:00:00", 100, "events:0:3"),
        ("event:referral:0:3:referee", "eve", "2022-10-08 12:00:00", 50, "events:0:3"),
    ]


@pytest.mark.parametrize(
    "rule, message",
    [
        ("{type: referral, points: 1}", "within_days"),
        ("{type: review, points: 1, within_days: 3}", "referral only"),
        ("{type: review, points: 0}", "points"),
        ("{type: review, points: 1, once: daily}", "once"),
    ],
)
def test_bad_event_rules_are_refused_naming_the_key(tmp_path, rule, message):
    assert message in refused(tmp_path, f"event_rules: [{rule}]\n")
