"""The recommendations, as the warehouse's view and as a serving lookup computes them, against the rule of
SPEC §5.3 replayed in plain Python, on random baskets."""

import json
import random
import sqlite3
from collections import Counter

import duckdb
import pytest

from loyalty_pipeline.domain.customer import recommend
from loyalty_pipeline.domain.identity import identity
from loyalty_pipeline.domain.loyalty.loyalty import ENRICHED_DDL
from loyalty_pipeline.lib import touched
from loyalty_pipeline.serve import publish, serving


def by_the_rule(orders: dict[str, tuple[str, list[str]]], interests: dict[str, list[str]]) -> set[tuple]:
    """score(u, c) = orders by other customers holding c and one of u's interests; interests never candidates."""
    rows = set()
    for user, interest in interests.items():
        scores = Counter()
        for owner, items in orders.values():
            if owner != user and set(items) & set(interest):
                scores.update(set(items) - set(interest))
        top = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:5]
        rows |= {(user, product, score, rank) for rank, (product, score) in enumerate(top, start=1)}
    return rows


def new_store(conn) -> sqlite3.Connection:
    """A serving store holding the warehouse's recommendation state (publish.rec_whole)."""
    store = sqlite3.connect(":memory:", isolation_level=None)
    for statement in publish._statements(serving.STORE_DDL + serving.STORE_INDEXES):
        store.execute(statement)
    publish.rec_whole(conn, store)
    return store


def looked_up(conn, store: sqlite3.Connection) -> set[tuple]:
    """Every profile's recommendations as a lookup computes them, from cards holding the profiles' interests."""
    store.execute("DELETE FROM cards")
    for user, interest in conn.execute(
        "SELECT user_id, activity_since_last_purchase FROM customer.profile_360"
    ).fetchall():
        card = json.dumps({"profile": {"activity_since_last_purchase": interest}})
        store.execute("INSERT INTO cards (user_id, card) VALUES (?, ?)", (user, card))
    users = [user for (user,) in store.execute("SELECT user_id FROM cards")]
    return {
        (u, r["product_id"], r["score"], r["rank"])
        for u in users
        for r in serving.ranked(store.execute(serving.RECOMMENDED, (u,)).fetchall())
    }


def recommended(orders, interests) -> tuple[set[tuple], set[tuple]]:
    """The rows of customer.recommendations, and those a serving lookup computes."""
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA loyalty; CREATE SCHEMA customer")
    conn.execute(identity.DDL)  # an empty id graph: every user_id is its own person
    conn.execute(ENRICHED_DDL)
    conn.execute("CREATE TABLE customer.profile_360 (user_id VARCHAR, activity_since_last_purchase VARCHAR[])")
    conn.executemany(
        "INSERT INTO loyalty.enriched_purchases (purchase_id, order_id, user_id, product_id, purchased_at, source, day) "
        "VALUES (?, ?, ?, ?, TIMESTAMP '2024-06-01 10:00', 'kafka', DATE '2024-06-01')",
        [
            (f"{order_id}:{n}", order_id, user, product)
            for order_id, (user, items) in orders.items()
            for n, product in enumerate(items)
        ],
    )
    conn.executemany("INSERT INTO customer.profile_360 VALUES (?, ?)", list(interests.items()))
    recommend.update(conn)
    recommend.create_view(conn)
    rows = set(conn.execute("SELECT user_id, product_id, score, rank FROM customer.recommendations").fetchall())
    return rows, looked_up(conn, new_store(conn))


@pytest.mark.parametrize("seed", range(6))
def test_recommendations_match_the_rule_on_random_baskets(seed):
    rng = random.Random(seed)
    # product ids that sort and escape differently in JSON, hex and bytes: ties break by product_id alike
    products = [f"p{n:02d}" for n in range(11)] + ['p"q', "p,é", "P 1"]
    users = [f"u{n}" for n in range(25)]
    orders = {}
    for n in range(120):
        # mostly small baskets, some above SMALL_ORDER (counted directly), repeats of a product in one order
        size = rng.choice([1, 1, 2, 2, 3, 4, 5, 6, recommend.SMALL_ORDER + 1, 11])
        orders[f"o{n}"] = (rng.choice(users), [rng.choice(products) for _ in range(size)])
    interests = {user: rng.sample(products + ["never_bought"], rng.choice([0, 1, 1, 2, 3, 5, 9])) for user in users}
    expected = by_the_rule(orders, interests)
    assert len(expected) > 60
    assert recommended(orders, interests) == (expected, expected)


def test_own_orders_lower_a_candidate_below_others():
    # ann's own orders make 'jam' the most common companion of tea; only other customers' orders count
    orders = {
        "o1": ("ann", ["tea", "jam"]),
        "o2": ("ann", ["tea", "jam"]),
        "o3": ("ann", ["tea", "jam"]),
        "o4": ("bob", ["tea", "jam"]),
        "o5": ("bob", ["tea", "honey"]),
        "o6": ("cid", ["tea", "honey"]),
    }
    expected = {("ann", "honey", 2, 1), ("ann", "jam", 1, 2)}
    assert recommended(orders, {"ann": ["tea"]}) == (expected, expected)


class Shop:
    """A warehouse fed day by day (purchases, returns, merges, interests), logging the people each change touches
    as the pipeline's producers do; the person each identifier finds is also kept here, to replay the rule."""

    def __init__(self):
        self.conn = duckdb.connect()
        self.conn.execute("CREATE SCHEMA loyalty; CREATE SCHEMA customer")
        self.conn.execute(identity.DDL)
        self.conn.execute(ENRICHED_DDL)
        self.conn.execute("CREATE TABLE customer.profile_360 (user_id VARCHAR, activity_since_last_purchase VARCHAR[])")
        self.conn.execute(recommend.DDL)
        recommend.create_view(self.conn)
        self.store: sqlite3.Connection | None = None  # a serving store, published after each update
        self.person: dict[str, str] = {}  # identifier -> the person it finds now
        self.purchases: dict[str, tuple[str, str, str]] = {}  # purchase_id -> (order_id, identifier, product)
        self.returned: set[str] = set()
        self.day = 0

    def log(self, people, source: str) -> None:
        seq = touched.next_seq(self.conn)
        self.conn.executemany("INSERT INTO changes.touched VALUES (?, ?, ?)", [(p, seq, source) for p in people])

    def buy(self, order_id: str, user: str, products: list[str]) -> None:
        for product in products:
            purchase_id = f"{order_id}:{len(self.purchases)}"
            self.purchases[purchase_id] = (order_id, user, product)
            self.conn.execute(
                "INSERT INTO loyalty.enriched_purchases (purchase_id, order_id, user_id, product_id, purchased_at, "
                "source, day) VALUES (?, ?, ?, ?, TIMESTAMP '2024-06-01 10:00', 'kafka', DATE '2024-06-01' + ?)",
                [purchase_id, order_id, user, product, self.day],
            )
        self.log([user], "purchases")

    def give_back(self, purchase_id: str) -> None:
        self.returned.add(purchase_id)
        self.conn.execute(
            "UPDATE loyalty.enriched_purchases SET returned_at = TIMESTAMP '2024-06-01 11:00' WHERE purchase_id = ?",
            [purchase_id],
        )
        self.log([self.purchases[purchase_id][1]], "purchases")

    def merge(self, merged: str, into: str) -> None:
        """Every identifier finding `merged` finds `into` from today (the graph's merge rows); its profile goes."""
        moved = [value for value, person in self.person.items() if person == merged] + [merged]
        for value in moved:
            self.person[value] = into
            self.conn.execute(
                "INSERT INTO identity.id_graph VALUES ('user_id', ?, ?, 'strong', 'merge', 'test', "
                "TIMESTAMP '2024-06-01', DATE '2024-06-01' + ?)",
                [value, into, self.day],
            )
        self.conn.execute("DELETE FROM customer.profile_360 WHERE user_id = ?", [merged])
        self.log([merged, into], "identity")

    def interested(self, user: str, products: list[str]) -> None:
        self.conn.execute("DELETE FROM customer.profile_360 WHERE user_id = ?", [user])
        self.conn.execute("INSERT INTO customer.profile_360 VALUES (?, ?)", [user, products])
        self.log([user], "activity")  # clicks: what changes a profile's interests

    def find(self, user: str) -> str:
        return self.person.get(user, user)

    def orders(self) -> dict[str, tuple[str, list[str]]]:
        """Baskets as the rule reads them: (order_id, the person now), returned purchases left out."""
        baskets: dict[tuple[str, str], list[str]] = {}
        for purchase_id, (order_id, user, product) in self.purchases.items():
            if purchase_id not in self.returned:
                baskets.setdefault((order_id, self.find(user)), []).append(product)
        return {f"{order_id}/{person}": (person, items) for (order_id, person), items in baskets.items()}

    def interests(self) -> dict[str, list[str]]:
        return dict(self.conn.execute("SELECT * FROM customer.profile_360").fetchall())

    def rows(self, table: str = "customer.recommendations") -> list[tuple]:
        return self.conn.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()

    def publish(self) -> None:
        """The store brought up to date as a publish does: whole the first time, then the state of the people
        logged under BASKET_SOURCES since."""
        update = touched.start(self.conn, "store", publish.BASKET_SOURCES, "test", collect_people=False)
        if self.store is None:
            self.store = new_store(self.conn)
        else:
            touched.collect(self.conn, update, publish.BASKET_SOURCES, "basket_people")
            publish.rec_changes(self.conn, self.store, "SELECT person FROM basket_people")
        touched.finish(self.conn, update)

    def stored(self, table: str) -> list[tuple]:
        return self.store.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall()


def same_days(shops: list[Shop], change: str, *args) -> None:
    for shop in shops:
        getattr(shop, change)(*args)


@pytest.mark.parametrize("seed", range(5))
def test_day_by_day_updates_equal_a_rebuild_each_day(seed):
    """Random days of orders (new products among them), returns, merges and changing interests: after each day the
    incremental update holds a rebuild's state, the store published by delta a store published whole, and the view
    and the lookups give the rule's rows."""
    rng = random.Random(seed)
    products = [f"p{n:02d}" for n in range(10)]
    users = [f"u{n}" for n in range(16)]
    incremental, rebuilt = Shop(), Shop()
    shops = [incremental, rebuilt]
    for day in range(8):
        for shop in shops:
            shop.day = day
        if day in (2, 5):  # a product never seen: it sorts among the others
            products.append(f"p0{day}x")
        for n in range(rng.randrange(4, 10)):
            user = rng.choice(users)
            size = rng.choice([1, 2, 2, 3, 4, 5, recommend.SMALL_ORDER, recommend.SMALL_ORDER + 2])
            items = [rng.choice(products) for _ in range(size)]
            order_id = f"o{rng.randrange(day * 10 + n + 1)}"  # some order ids repeat, for other people too
            same_days(shops, "buy", order_id, user, items)
        kept = [p for p in incremental.purchases if p not in incremental.returned]
        for purchase_id in rng.sample(kept, min(len(kept), rng.randrange(0, 4))):
            same_days(shops, "give_back", purchase_id)
        people = sorted({incremental.find(user) for user in users})
        if day and rng.random() < 0.6:
            merged, into = rng.sample(people, 2)
            same_days(shops, "merge", merged, into)
            people.remove(merged)
        for person in people if day == 0 else rng.sample(people, rng.randrange(0, 5)):
            viewed = rng.sample(products + ["never_bought"], rng.choice([0, 1, 1, 2, 3, 5]))
            same_days(shops, "interested", person, viewed)
        applied = recommend.update(incremental.conn)
        incremental.publish()
        assert recommend.update(rebuilt.conn, rebuild=True).whole
        assert applied.whole == (day == 0)
        for table in recommend.STATE:
            assert incremental.rows(table) == rebuilt.rows(table), (day, table)
        whole = new_store(rebuilt.conn)
        for table in ["rec_counts", "baskets", "large_items"]:
            assert incremental.stored(table) == whole.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall()
        rule = by_the_rule(incremental.orders(), incremental.interests())
        assert set(incremental.rows()) == rule
        assert looked_up(incremental.conn, incremental.store) == rule
    assert len(incremental.rows()) > 20


def test_a_day_changes_only_its_baskets_and_their_counts():
    shop = Shop()
    for order_id, user, items in [
        ("o1", "ann", ["tea", "jam"]),
        ("o2", "bob", ["tea", "honey", "cake"]),
        ("o3", "cid", ["coffee", "cake"]),
        ("o4", "dan", ["coffee", "milk"]),
        ("o5", "eve", ["bread", "butter"]),
    ]:
        shop.buy(order_id, user, items)
    interests = {"ann": ["honey"], "bob": ["jam"], "cid": ["tea", "milk"], "dan": ["cake"], "eve": ["milk"]}
    for user, viewed in interests.items():
        shop.interested(user, viewed)
    assert recommend.update(shop.conn) == recommend.Applied(whole=True, baskets_changed=5)
    # fay (no interests) buys jam and butter, gus honey alone: two baskets; only bob's list changes (he looks at jam)
    shop.buy("o6", "fay", ["jam", "butter"])
    shop.buy("o7", "gus", ["honey"])
    counts = shop.rows("customer.rec_counts")
    assert recommend.update(shop.conn) == recommend.Applied(whole=False, baskets_changed=2)
    assert [row for row in shop.rows("customer.rec_counts") if row not in counts] == [
        (["butter"], "jam", 1),
        (["jam"], "butter", 1),
    ]
    assert shop.rows() == sorted(
        [
            ("ann", "cake", 1, 1), ("ann", "tea", 1, 2),
            ("bob", "butter", 1, 1), ("bob", "tea", 1, 2),
            ("cid", "cake", 1, 1), ("cid", "coffee", 1, 2), ("cid", "honey", 1, 3), ("cid", "jam", 1, 4),
            ("dan", "coffee", 1, 1), ("dan", "honey", 1, 2), ("dan", "tea", 1, 3),
            ("eve", "coffee", 1, 1),
        ]
    )  # fmt: skip
    # a merge moves cid's basket to dan without changing a count (cid's rows go with the profile); dan's own
    # orders now hold cid's cake order
    counts = shop.rows("customer.rec_counts")
    shop.merge("cid", "dan")
    assert recommend.update(shop.conn).baskets_changed == 2  # removed from cid, added to dan
    assert shop.rows("customer.rec_counts") == counts
    assert [row for row in shop.rows() if row[0] in ("cid", "dan")] == [("dan", "honey", 1, 1), ("dan", "tea", 1, 2)]
    # a changed interest changes no state, only that person's list
    shop.interested("eve", ["butter"])
    assert recommend.update(shop.conn).baskets_changed == 0
    assert shop.rows()[-1] == ("eve", "jam", 1, 1)
