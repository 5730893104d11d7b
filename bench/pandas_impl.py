"""The same core tables as bench/plain_duckdb.py, the way a pandas tutorial writes them (vectorized where pandas is).

* Kafka snapshots: `pd.read_json(lines=True)` per file; a file with a corrupt line falls back to keeping the
  lines `json.loads` accepts (Series.map), then read_json on those. Payloads: `pd.json_normalize` of
  `payload.map(json.loads)`. Duplicates: `drop_duplicates` on (partition, offset), first file wins.
* Money in integer cents (floats would put a customer at 400.0000001 into GOLD); prices as of event time with
  `pd.merge_asof(by="product_id")`; tiers with `np.select`; promotions with `groupby().agg`.

    python bench/pandas_impl.py --data-dir DIR --out OUT_DIR

Writes `sales_totals.csv`, `caffeine_index.csv`, `promotions.csv` (products joined by `|`) and `profile.csv`.
"""

import argparse
import glob
import gzip
import io
import json
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from loyalty_pipeline.domain.config import load_rules as read_rules

START_MS = int(pd.Timestamp("2000-01-01", tz="UTC").timestamp() * 1000)
ENVELOPE = ["partition", "offset", "ts", "key", "payload"]


def load_rules(data_dir: Path) -> dict:
    """The data dir's loyalty.yaml over the defaults, read as the pipeline reads it (the rules are input, not work)."""
    path = data_dir / "loyalty.yaml"
    return read_rules(path if path.exists() else None).model_dump()


def cents(value) -> int:
    return int(Decimal(str(value)) * 100)


def _loads(line: str):
    try:
        return json.loads(line)
    except ValueError:
        return None


def read_topic(data_dir: Path, topic: str) -> pd.DataFrame:
    """Deduplicated envelopes of one topic, payload parsed into a `value` column of dicts (None: tombstone)."""
    frames = []
    files = sorted(
        glob.glob(str(data_dir / "kafka" / topic / "*.jsonl"))
        + glob.glob(str(data_dir / "kafka" / topic / "*.jsonl.gz"))
    )
    for path in files:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            text = handle.read()
        try:
            frame = pd.read_json(io.StringIO(text), lines=True, dtype=False)
        except ValueError:  # a corrupt line: keep the ones that parse
            lines = pd.Series(text.splitlines())
            good = lines[lines.str.strip().ne("") & lines.map(lambda line: isinstance(_loads(line), dict))]
            frame = pd.read_json(io.StringIO("\n".join(good)), lines=True, dtype=False)
        frames.append(frame.reindex(columns=ENVELOPE))
    if not frames:
        return pd.DataFrame(columns=ENVELOPE + ["value"])
    messages = pd.concat(frames, ignore_index=True)
    messages = messages.dropna(subset=["partition", "offset", "ts", "key"])
    messages = messages[messages["ts"] >= START_MS]
    messages = messages.drop_duplicates(subset=["partition", "offset"], keep="first").reset_index(drop=True)
    messages["partition"] = messages["partition"].astype("int64")
    messages["offset"] = messages["offset"].astype("int64")
    messages["ts"] = messages["ts"].astype("int64")
    messages["value"] = messages["payload"].map(lambda p: _loads(p) if isinstance(p, str) else None)
    return messages


def _is_str(series: pd.Series) -> pd.Series:
    return series.map(lambda v: isinstance(v, str))


def _is_number(series: pd.Series) -> pd.Series:
    return series.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))


def _absent_or_str(series: pd.Series) -> pd.Series:
    return series.map(lambda v: v is None or (isinstance(v, float) and np.isnan(v)) or isinstance(v, str))


def _fields(messages: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """The payload fields as columns (json_normalize), aligned with `messages`."""
    objects = messages["value"].map(lambda v: v if isinstance(v, dict) else {})
    fields = pd.json_normalize(objects.tolist(), max_level=0)
    return fields.reindex(columns=names).set_index(messages.index)


def products_table(data_dir: Path) -> pd.DataFrame:
    messages = read_topic(data_dir, "products")
    fields = _fields(messages, ["category", "price"])
    tombstone = messages["payload"].isna()
    valid = _is_str(fields["category"]) & _is_number(fields["price"])
    price = pd.to_numeric(fields["price"].where(valid), errors="coerce")
    valid &= price.ge(0) & ((price * 100).round() - price * 100).abs().lt(1e-6)  # at most 2 decimals
    products = messages.assign(category=fields["category"].where(valid), price=fields["price"].where(valid))
    products = products[tombstone | valid]
    products["price_cents"] = (pd.to_numeric(products["price"]) * 100).round().astype("Int64")
    return products.rename(columns={"key": "product_id"})[
        ["product_id", "ts", "partition", "offset", "category", "price_cents"]
    ]


def purchases_table(data_dir: Path) -> pd.DataFrame:
    messages = read_topic(data_dir, "purchases")
    messages = messages[messages["payload"].notna()]
    fields = _fields(messages, ["product_id", "order_id", "store_id"])
    objects = messages["value"].map(lambda v: isinstance(v, dict))
    valid = (
        objects
        & _is_str(fields["product_id"])
        & _absent_or_str(fields["order_id"])
        & _absent_or_str(fields["store_id"])
    )
    purchases = messages.assign(product_id=fields["product_id"], order_id=fields["order_id"])[valid]
    purchase_id = "purchases:" + purchases["partition"].astype(str) + ":" + purchases["offset"].astype(str)
    return pd.DataFrame(
        {
            "purchase_id": purchase_id,
            "order_id": purchases["order_id"].where(purchases["order_id"].notna(), purchase_id),
            "user_id": purchases["key"],
            "product_id": purchases["product_id"],
            "ts": purchases["ts"],
            "source": "kafka",
        }
    )


def historical_table(data_dir: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(glob.glob(str(data_dir / "s3" / "historical_purchases" / "*.csv"))):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame["row_no"] = np.arange(1, len(frame) + 1)
        frame["file_day"] = Path(path).stem
        frames.append(frame)
    columns = ["purchase_id", "order_id", "user_id", "product_id", "ts", "source", "own_price_cents"]
    if not frames:
        return pd.DataFrame(columns=columns)
    rows = pd.concat(frames, ignore_index=True)
    for column in ["order_id", "user_id", "product_id"]:
        rows[column] = rows[column].str.strip()
    price = pd.to_numeric(rows["price"], errors="coerce")
    when = pd.to_datetime(rows["purchased_at"], utc=True, format="ISO8601", errors="coerce")
    valid = (
        rows["order_id"].ne("")
        & rows["user_id"].ne("")
        & rows["product_id"].ne("")
        & price.ge(0)
        & when.notna()
        & when.dt.strftime("%Y-%m-%d").eq(rows["file_day"])
    )
    rows, price, when = rows[valid], price[valid], when[valid]
    return pd.DataFrame(
        {
            "purchase_id": "s3:" + rows["order_id"] + ":" + rows["product_id"] + ":" + rows["row_no"].astype(str),
            "order_id": rows["order_id"],
            "user_id": rows["user_id"],
            "product_id": rows["product_id"],
            "ts": (when - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(milliseconds=1),
            "source": "s3",
            "own_price_cents": (price * 100).round().astype("Int64"),
        }
    )


def enrich(purchases: pd.DataFrame, historical: pd.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    """Each purchase with the latest product state at or before its time (S3 rows keep their own price)."""
    states = (
        products.sort_values(["product_id", "ts", "offset", "partition"])
        .drop_duplicates(["product_id", "ts"], keep="last")[["product_id", "ts", "category", "price_cents"]]
        .sort_values("ts")
    )
    everything = pd.concat([purchases.assign(own_price_cents=pd.NA), historical], ignore_index=True)
    everything["ts"] = everything["ts"].astype("int64")
    everything["own_price_cents"] = everything["own_price_cents"].astype("Int64")
    enriched = pd.merge_asof(everything.sort_values("ts"), states, on="ts", by="product_id", direction="backward")
    enriched["price_cents"] = enriched["own_price_cents"].fillna(enriched["price_cents"]).astype("Int64")
    return enriched.drop(columns="own_price_cents")


def sales_totals(enriched: pd.DataFrame, rules: dict) -> pd.DataFrame:
    totals = (
        enriched.groupby("user_id", as_index=False)["price_cents"].sum().rename(columns={"price_cents": "total_cents"})
    )
    tiers = sorted(rules["tiers"], key=lambda tier: Decimal(str(tier["above"])), reverse=True)
    totals["reward_level"] = np.select(
        [totals["total_cents"].to_numpy() > cents(tier["above"]) for tier in tiers],
        [tier["name"] for tier in tiers],
        default=rules["default_tier"],
    )
    return totals


def caffeine_index(enriched: pd.DataFrame, rules: dict) -> pd.DataFrame:
    cycle = int(rules["stamp_card"]["cycle"])
    stamps = enriched[enriched["product_id"] == rules["stamp_card"]["product_id"]]
    index = stamps.groupby("user_id").size().rename("total").reset_index()
    index["sequence"] = index["total"] % cycle
    index["next_one_free"] = index["sequence"] == cycle - 1
    return index


def promotions(enriched: pd.DataFrame, rules: dict) -> pd.DataFrame:
    eligible = []
    for rule in rules["promotions"]:
        considered = enriched[enriched["product_id"].isin(rule["considers"])]
        per_user = considered.groupby("user_id").agg(
            products=("product_id", lambda s: sorted(set(s))), spend_cents=("price_cents", "sum")
        )
        required, excluded = set(rule.get("require_all", [])), set(rule.get("exclude", []))
        ok = per_user["products"].map(
            lambda p, required=required, excluded=excluded: required <= set(p) and not excluded & set(p)
        )
        if rule.get("min_spend") is not None:
            ok &= per_user["spend_cents"] > cents(rule["min_spend"])
        chosen = per_user[ok].reset_index()
        eligible.append(
            pd.DataFrame(
                {
                    "user_id": chosen["user_id"],
                    "promotion_name": rule["name"],
                    "products": chosen["products"].map("|".join),
                }
            )
        )
    return (
        pd.concat(eligible, ignore_index=True)
        if eligible
        else pd.DataFrame(columns=["user_id", "promotion_name", "products"])
    )


def profile(
    data_dir: Path, enriched: pd.DataFrame, totals: pd.DataFrame, offers: pd.DataFrame, rules: dict
) -> pd.DataFrame:
    users = read_topic(data_dir, "users")
    fields = _fields(users, ["name", "email"])
    tombstone = users["payload"].isna()
    valid = tombstone | (
        users["value"].map(lambda v: isinstance(v, dict)) & _is_str(fields["name"]) & _absent_or_str(fields["email"])
    )
    users = users.assign(name=fields["name"], email=fields["email"], account_closed=tombstone)[valid]
    latest = (
        users.sort_values(["key", "ts", "offset"])
        .drop_duplicates("key", keep="last")
        .rename(columns={"key": "user_id"})[["user_id", "name", "email", "account_closed"]]
    )
    exports = []
    for path in sorted(glob.glob(str(data_dir / "s3" / "customers" / "*.csv"))):
        frame = pd.read_csv(path, dtype=str)
        frame["user_id"] = frame["user_id"].str.strip()
        exports.append(frame[frame["user_id"].fillna("").ne("")])
    export = (
        pd.concat(exports, ignore_index=True).drop_duplicates("user_id", keep="last")
        if exports
        else pd.DataFrame(columns=["user_id", "name", "email", "signup_date"])
    )
    spend = (
        enriched.groupby("user_id")
        .agg(
            total_cents=("price_cents", "sum"),
            purchase_count=("purchase_id", "size"),
            first_purchase_ms=("ts", "min"),
            last_purchase_ms=("ts", "max"),
            products_purchased=("product_id", lambda s: "|".join(sorted(set(s)))),
        )
        .reset_index()
    )
    known = pd.DataFrame({"user_id": pd.concat([users["key"], export["user_id"], spend["user_id"]]).unique()})
    result = (
        known.merge(latest, on="user_id", how="left")
        .merge(export[["user_id", "name", "email", "signup_date"]], on="user_id", how="left", suffixes=("", "_export"))
        .merge(spend, on="user_id", how="left")
        .merge(totals[["user_id", "reward_level"]], on="user_id", how="left")
        .merge(
            offers.groupby("user_id")["promotion_name"]
            .agg(lambda s: "|".join(sorted(s)))
            .rename("promotions")
            .reset_index(),
            on="user_id",
            how="left",
        )
    )
    result["name"] = result["name"].fillna(result.pop("name_export"))
    result["email"] = result["email"].fillna(result.pop("email_export"))
    result["total_cents"] = result["total_cents"].fillna(0).astype("int64")
    result["purchase_count"] = result["purchase_count"].fillna(0).astype("int64")
    result["reward_level"] = result["reward_level"].fillna(rules["default_tier"])
    result["account_closed"] = result["account_closed"].fillna(False).astype(bool)
    return result


def _money(cents_column: pd.Series) -> pd.Series:
    values = cents_column.astype("int64")
    sign = np.where(values < 0, "-", "")
    absolute = values.abs()
    return sign + (absolute // 100).astype(str) + "." + (absolute % 100).astype(str).str.zfill(2)


def run(data_dir: Path, out: Path) -> dict:
    started = time.perf_counter()
    timings = {}

    def timed(name, function, *args):
        begin = time.perf_counter()
        value = function(*args)
        timings[name] = round(time.perf_counter() - begin, 3)
        return value

    data_dir, out = Path(data_dir), Path(out)
    rules = load_rules(data_dir)
    products = timed("products", products_table, data_dir)
    purchases = timed("purchases", purchases_table, data_dir)
    historical = timed("historical", historical_table, data_dir)
    enriched = timed("enriched_purchases", enrich, purchases, historical, products)
    totals = timed("sales_totals", sales_totals, enriched, rules)
    stamps = timed("caffeine_index", caffeine_index, enriched, rules)
    offers = timed("promotions", promotions, enriched, rules)
    people = timed("profile", profile, data_dir, enriched, totals, offers, rules)

    out.mkdir(parents=True, exist_ok=True)
    totals.assign(total=_money(totals["total_cents"]))[["user_id", "total", "reward_level"]].to_csv(
        out / "sales_totals.csv", index=False
    )
    stamps.to_csv(out / "caffeine_index.csv", index=False)
    offers.to_csv(out / "promotions.csv", index=False)
    people.assign(total_spend=_money(people["total_cents"]))[
        [
            "user_id",
            "name",
            "email",
            "total_spend",
            "purchase_count",
            "reward_level",
            "products_purchased",
            "promotions",
            "account_closed",
        ]
    ].to_csv(out / "profile.csv", index=False)
    rows = {
        "purchases": len(purchases),
        "products": len(products),
        "enriched_purchases": len(enriched),
        "sales_totals": len(totals),
        "caffeine_index": len(stamps),
        "promotions": len(offers),
        "profile": len(people),
    }
    return {"seconds": round(time.perf_counter() - started, 3), "steps": timings, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", required=True, help="folder for the result CSV files")
    args = parser.parse_args(argv)
    print(json.dumps(run(Path(args.data_dir), Path(args.out))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
