"""The serving store (serving.py, publish.py): a day's publish rewrites only the people it touched, in place, in one
transaction; readers see the last publish whole; a killed writer leaves the last good state; calendar values are
filled in when read. Every incremental store is compared, row for row, with one published whole."""

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb

from loyalty_pipeline.defs.resources import RulesResource
from loyalty_pipeline.serve import audit, publish
from loyalty_pipeline.serve.serving import ServingCopy, serving_path

SERVING = ("customer/serving_snapshot",)
WITHOUT_SERVING = ("customer/recommendations",)  # the 360 and what it reads, not the store
DAY1, DAY2, DAY3 = "2024-06-01", "2024-06-02", "2024-06-03"


def first_day(inputs) -> None:
    inputs.kafka(
        "users",
        [
            ("ann", {"name": "Ann", "email": "ann@example.com"}, f"{DAY1}T07:00:00"),
            ("bob", {"name": "Bob", "email": "bob@example.com"}, f"{DAY1}T07:00:00"),
            ("cat", {"name": "Cat"}, f"{DAY1}T07:00:00"),
        ],
        file="users.jsonl",
    )
    inputs.kafka(
        "purchases",
        [
            ("ann", {"product_id": "tea"}, f"{DAY1}T10:00:00"),
            ("bob", {"product_id": "tea"}, f"{DAY1}T10:00:00"),
            ("cat", {"product_id": "cake"}, f"{DAY1}T10:00:00"),
        ],
    )
    inputs.materialize(DAY1, assets=SERVING)


def buys(inputs, user: str, day: str, product: str = "cake") -> None:
    inputs.kafka("purchases", [(user, {"product_id": product}, f"{day}T11:00:00")], file=f"{user}-{day}.jsonl")


def rows(store: Path) -> dict[str, list]:
    """Every row of the store's tables (rowids apart), and the day it is as of."""
    with sqlite3.connect(store) as conn:
        held = {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall()) for table in audit.STORE_TABLES}
        held["as_of"] = conn.execute("SELECT as_of FROM info").fetchall()
    conn.close()
    return held


def rebuilt_whole(inputs, tmp_path: Path) -> dict[str, list]:
    """The store a whole publish writes from the same warehouse (on a copy of it)."""
    warehouse = Path(shutil.copy(inputs.warehouse, tmp_path / "whole.duckdb"))
    with duckdb.connect(str(warehouse)) as conn:
        done = publish.publish(conn, serving_path(str(warehouse)), RulesResource().rules, rebuild=True)
    assert done["update"] == "rebuilt whole"
    return rows(serving_path(str(warehouse)))


def card_rows(store: Path) -> dict[str, tuple]:
    """Each person's card row as stored: its rowid and its bytes."""
    with sqlite3.connect(store) as conn:
        found = {user: (rowid, card) for rowid, user, card in conn.execute("SELECT rowid, user_id, card FROM cards")}
    conn.close()
    return found


def serving_metadata(result) -> dict:
    [materialization] = [
        event.event_specific_data.materialization
        for event in result.all_events
        if event.event_type_value == "ASSET_MATERIALIZATION"
        and event.event_specific_data.materialization.asset_key == dg.AssetKey(["customer", "serving_snapshot"])
    ]
    return {name: value.value for name, value in materialization.metadata.items()}


def test_a_day_rewrites_only_the_people_it_touched_and_equals_a_whole_publish(inputs, tmp_path):
    first_day(inputs)
    store = serving_path(str(inputs.warehouse))
    before = card_rows(store)
    assert sorted(before) == ["ann", "bob", "cat"]
    buys(inputs, "bob", DAY2)
    inputs.kafka(  # cat's new email (an identifier and a name to look up), and a new customer
        "users",
        [
            ("cat", {"name": "Cat", "email": "cat@example.com"}, f"{DAY2}T07:00:00"),
            ("dan", {"name": "Dan", "email": "dan@example.com"}, f"{DAY2}T07:00:00"),
        ],
        file="users-2.jsonl",
    )
    done = serving_metadata(inputs.materialize(DAY2, assets=SERVING))
    assert (done["update"], done["cards_written"]) == ("incremental", 3)  # bob's, cat's and dan's cards
    after = card_rows(store)
    assert after["ann"] == before["ann"]  # the same row, the same bytes
    assert after["bob"][0] == before["bob"][0] and after["bob"][1] != before["bob"][1]  # changed in place
    assert json.loads(after["bob"][1])["profile"]["purchase_count"] == 2
    assert json.loads(ServingCopy(store).card("cat@example.com"))["user_id"] == "cat"
    assert json.loads(ServingCopy(store).card("Dan"))["user_id"] == "dan"
    assert rows(store) == rebuilt_whole(inputs, tmp_path)
    # the same day again: its people are published again, and their cards, unchanged, are not written
    done = serving_metadata(inputs.materialize(DAY2, assets=SERVING))
    assert (done["update"], done["cards_written"]) == ("incremental", 0) and done["people"] >= 1
    assert card_rows(store) == after


def test_calendar_values_are_filled_in_when_read(inputs):
    first_day(inputs)
    store = serving_path(str(inputs.warehouse))
    card = json.loads(ServingCopy(store).card("ann"))
    assert (card["copy"]["as_of"], card["profile"]["as_of"], card["profile"]["days_since_last_purchase"]) == (
        DAY1,
        DAY1,
        0,
    )
    stored = card_rows(store)["ann"]
    buys(inputs, "bob", DAY2)  # nothing happens to ann
    inputs.materialize(DAY2, assets=SERVING)
    assert card_rows(store)["ann"] == stored  # her card was not written again
    card = json.loads(ServingCopy(store).card("ann"))
    assert (card["copy"]["as_of"], card["profile"]["as_of"], card["profile"]["days_since_last_purchase"]) == (
        DAY2,
        DAY2,
        1,
    )
    assert card["copy"]["published_at"] == ServingCopy(store).published_at()
    stored_card = json.loads(stored[1])  # stored without them
    assert stored_card["copy"] == {"published_at": None, "as_of": None}
    assert (stored_card["profile"]["as_of"], stored_card["profile"]["days_since_last_purchase"]) == (None, None)
    # every other key as stored, in the same order
    assert list(card) == list(stored_card) and list(card["profile"]) == list(stored_card["profile"])
    assert {**card, "copy": None, "profile": None} == {**stored_card, "copy": None, "profile": None}


def test_a_reader_sees_the_publish_before_or_after_never_a_mix(inputs):
    first_day(inputs)
    store = serving_path(str(inputs.warehouse))
    copy = ServingCopy(store)
    old_card, old_names = copy.card("bob"), copy.search("b")
    # a read transaction begun before the publish and held across it
    held = sqlite3.connect(store.as_uri() + "?mode=ro", uri=True, isolation_level=None)
    held.execute("BEGIN")
    state = "SELECT (SELECT published_at FROM info), (SELECT card FROM cards WHERE user_id = 'bob')"
    old_state = held.execute(state).fetchall()
    seen, stop = [], threading.Event()

    def look_up() -> None:  # another thread, lookups while the publish runs
        reader = ServingCopy(store)
        while not stop.is_set():
            seen.append(reader.card("bob"))
            time.sleep(0.001)

    thread = threading.Thread(target=look_up)
    thread.start()
    buys(inputs, "bob", DAY2)
    inputs.materialize(DAY2, assets=SERVING)
    time.sleep(0.05)
    stop.set()
    thread.join()
    assert held.execute(state).fetchall() == old_state  # still the state it began with
    held.execute("COMMIT")
    assert held.execute(state).fetchall() != old_state
    held.close()
    new_card = copy.card("bob")
    assert new_card != old_card and copy.search("b") == old_names
    assert set(seen) == {old_card, new_card}  # whole cards of one publish or the other (each holds its published_at)
    assert seen.index(new_card) > 0 and seen[seen.index(new_card) :] == [new_card] * (len(seen) - seen.index(new_card))


KILLED_WRITER = """
import sys, time
from pathlib import Path
import duckdb
from loyalty_pipeline.serve import publish
from loyalty_pipeline.defs.resources import RulesResource

copy = publish._copy

def copy_then_wait(conn, sql, params, store, insert):
    written = copy(conn, sql, params, store, insert)
    if "INTO cards" in insert:  # in the transaction, after the people's cards: more than the cache
        store.execute("PRAGMA cache_size = 10")  # holds, so pages go to the WAL before any commit
        store.executemany("INSERT INTO cards VALUES (?, NULL, NULL, NULL, NULL, ?)",
                          ((f"junk{i}", "x" * 2000) for i in range(3000)))
        print("writing", flush=True)
        time.sleep(600)
    return written

publish._copy = copy_then_wait
with duckdb.connect(sys.argv[1]) as conn:
    publish.publish(conn, Path(sys.argv[2]), RulesResource().rules)
"""


def test_a_writer_killed_in_its_transaction_leaves_the_last_good_state(inputs, tmp_path):
    first_day(inputs)
    store = serving_path(str(inputs.warehouse))
    good = rows(store)
    good_card = ServingCopy(store).card("cat")
    buys(inputs, "cat", DAY2)
    inputs.materialize(DAY2, assets=WITHOUT_SERVING)  # the warehouse moves on; the store is published next
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(inputs.warehouse), str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline() == "writing\n", writer.stderr.read()
        assert store.with_name(store.name + "-wal").stat().st_size > 3000 * 2000  # uncommitted pages on disk
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    assert rows(store) == good  # the last publish, whole
    assert ServingCopy(store).card("cat") == good_card
    # the warehouse's mark did not move: the next publish applies cat's day and equals a whole one
    done = serving_metadata(inputs.materialize(DAY2, assets=SERVING))
    assert (done["update"], done["cards_written"]) == ("incremental", 1)
    assert json.loads(ServingCopy(store).card("cat"))["profile"]["purchase_count"] == 2
    assert rows(store) == rebuilt_whole(inputs, tmp_path)


def test_a_rebuild_another_shape_or_a_lost_mark_publishes_whole(inputs, tmp_path):
    first_day(inputs)
    store = serving_path(str(inputs.warehouse))
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE info SET seq = seq - 1000")  # a store older than the warehouse's mark (a restored copy)
    conn.close()
    buys(inputs, "ann", DAY2)
    assert serving_metadata(inputs.materialize(DAY2, assets=SERVING))["update"] == "rebuilt whole"
    assert rows(store) == rebuilt_whole(inputs, tmp_path)
    buys(inputs, "ann", DAY3)
    assert serving_metadata(inputs.materialize(DAY3, assets=SERVING))["update"] == "incremental"
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE info SET shape = 0")
    conn.close()
    buys(inputs, "bob", DAY3)
    assert serving_metadata(inputs.materialize(DAY3, assets=SERVING))["update"] == "rebuilt whole"
    assert rows(store) == rebuilt_whole(inputs, tmp_path)
