"""Delivering each day's activations to marketing tools (docs/decisions.md, Delivery of activations): a JSON-lines
file and its manifest per day in a folder or an S3 prefix, or the same rows POSTed to a webhook in batches. A day
already delivered is never rewritten: what changed since goes out as a correction."""

import hashlib
import http.client
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from loyalty_pipeline.lib.warehouse import insert_rows, rows_differing

DDL = """
CREATE SCHEMA IF NOT EXISTS journey;
CREATE TABLE IF NOT EXISTS journey.activation_exports (  -- every file (for a webhook: every body) handed out
    destination VARCHAR NOT NULL, day DATE NOT NULL,
    correction INTEGER NOT NULL,  -- 0: the day's file; n: its n-th correction
    file VARCHAR NOT NULL, rows INTEGER NOT NULL, sha256 VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL, exported_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS journey.exported_activations (  -- what each destination holds: day files plus corrections
    destination VARCHAR NOT NULL, journey_id VARCHAR NOT NULL, customer_id VARCHAR NOT NULL,
    activation VARCHAR NOT NULL, activated_on DATE NOT NULL, idempotency_key VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS journey.webhook_failures (  -- rows a webhook did not take: sent first on the next run
    destination VARCHAR NOT NULL, position INTEGER NOT NULL,  -- the order they are sent in
    file VARCHAR NOT NULL, row_json VARCHAR NOT NULL,
    error VARCHAR NOT NULL, failed_at TIMESTAMP NOT NULL
);
"""

# The window's activations, each with its idempotency key: a hash of the four fields, so the same activation has the
# same key in every run and every destination. Identical rows (which the journeys do not write today) get their copy
# number hashed in from the second on, so that no two rows share a key.
KEYED_ACTIVATIONS = """
CREATE OR REPLACE TEMP TABLE export_current AS
SELECT journey_id, customer_id, activation, activated_on,
       sha256(to_json(list_concat([journey_id, customer_id, activation, activated_on::VARCHAR],
                                  CASE WHEN copy > 1 THEN [copy::VARCHAR] ELSE []::VARCHAR[] END))::VARCHAR)
           AS idempotency_key
FROM (SELECT *, row_number() OVER (PARTITION BY journey_id, customer_id, activation, activated_on ORDER BY journey_id) AS copy
      FROM journey.activations WHERE activated_on >= $first AND activated_on < $end) AS window_rows
"""

# A destination's activations (all, or those it names), as a query with parameters $names ($all: every activation).
WANTED = "SELECT * FROM export_current WHERE $all OR list_contains($names::VARCHAR[], activation)"

# What a destination must be sent for the window: what it wants that it does not hold (added) and what it holds that
# it no longer wants (withdrawn). For a day never exported, the added rows are the whole day.
CHANGES = f"""
WITH wanted AS ({WANTED}),
held AS (SELECT * EXCLUDE (destination) FROM journey.exported_activations
         WHERE destination = $destination AND activated_on >= $first AND activated_on < $end)
SELECT activated_on, change, journey_id, customer_id, activation, activated_on::VARCHAR, idempotency_key FROM (
    SELECT 'withdrawn' AS change, * FROM (FROM held EXCEPT ALL FROM wanted)
    UNION ALL SELECT 'added', * FROM (FROM wanted EXCEPT ALL FROM held)
)
ORDER BY activated_on, change DESC, journey_id, customer_id, activation, idempotency_key
"""

FIELDS = ("journey_id", "customer_id", "activation", "activated_on", "idempotency_key")


def line(row: dict) -> bytes:
    """One JSON object per line, compact and in a fixed key order: the same rows give the same bytes."""
    return (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


@dataclass(frozen=True)
class Delivery:
    """One file of a destination's day: the day's rows (correction 0), or the n-th correction of a day delivered."""

    day: date
    correction: int
    rows: list[dict]

    @property
    def file(self) -> str:
        return f"{self.day}.jsonl" if not self.correction else f"{self.day}.correction-{self.correction}.jsonl"

    @property
    def body(self) -> bytes:
        return b"".join(line(row) for row in self.rows)

    def manifest(self) -> bytes:
        """Written after the data file: a consumer takes a file whose manifest exists and whose bytes match it. No
        time in it, so a run repeated writes the same bytes."""
        body = self.body
        manifest = {"day": str(self.day), "file": self.file, "rows": len(self.rows)}
        if self.correction:
            changes = Counter(row["change"] for row in self.rows)
            manifest |= {"correction": self.correction, "withdrawn": changes["withdrawn"], "added": changes["added"]}
        manifest |= {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        return (json.dumps(manifest, indent=2) + "\n").encode()

    @property
    def manifest_file(self) -> str:
        return self.file.removesuffix(".jsonl") + ".manifest.json"


def plan(conn, destination, first: date, end: date) -> list[Delivery]:
    """The files a destination gets for the window [first, end): each day never delivered (an empty day too, so the
    consumer knows it is done), and a correction of each day delivered whose activations changed since. Needs
    KEYED_ACTIVATIONS run for the window."""
    rows = conn.execute(
        CHANGES, {"destination": destination.name, "first": first, "end": end, **wanted_params(destination)}
    ).fetchall()
    latest = dict(
        conn.execute(
            "SELECT day, max(correction) FROM journey.activation_exports "
            "WHERE destination = $1 AND day >= $2 AND day < $3 GROUP BY day",
            [destination.name, first, end],
        ).fetchall()
    )
    by_day = {}
    for on, change, *values in rows:
        by_day.setdefault(on, []).append((change, dict(zip(FIELDS, values, strict=True))))
    deliveries = []
    for day in (first + timedelta(days=n) for n in range((end - first).days)):
        changes = by_day.get(day, [])
        if day not in latest:
            deliveries.append(Delivery(day, 0, [row for _, row in changes]))
        elif changes:
            n = latest[day] + 1
            deliveries.append(Delivery(day, n, [{"change": change, "correction": n, **row} for change, row in changes]))
    return deliveries


class Folder:
    """Files under <folder>/activations/<destination>/, each written whole to a temporary file beside it and renamed
    into place (a reader never sees half a file)."""

    def __init__(self, root: Path, destination: str):
        self.folder = root / "activations" / destination

    def put(self, file: str, body: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=f".{file}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.folder / file)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def get(self, file: str) -> bytes | None:
        path = self.folder / file
        return path.read_bytes() if path.is_file() else None


class S3Prefix:
    """Objects under <prefix>/activations/<destination>/: one PUT of the whole body each, which S3 makes visible
    whole or not at all."""

    def __init__(self, client, bucket: str, prefix: str, destination: str):
        self.client, self.bucket = client, bucket
        self.prefix = "/".join(part for part in (prefix.strip("/"), "activations", destination) if part)

    def put(self, file: str, body: bytes) -> None:
        kind = "application/json" if file.endswith(".json") else "application/x-ndjson"
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{file}", Body=body, ContentType=kind)

    def get(self, file: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{file}")["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None


def write(place: Folder | S3Prefix, delivery: Delivery) -> None:
    """The data file, then its manifest: a manifest always describes a complete file."""
    place.put(delivery.file, delivery.body)
    place.put(delivery.manifest_file, delivery.manifest())


@dataclass(frozen=True)
class Retry:
    """How a webhook batch is retried: `attempts` in all, pausing `first_delay` seconds, doubled after each failure."""

    attempts: int = 4
    first_delay: float = 1.0
    timeout: float = 10.0  # seconds per request
    sleep: Callable[[float], None] = time.sleep


def post(url: str, rows: list[dict], retry: Retry) -> str | None:
    """POST {"rows": [...]} with an Idempotency-Key header (the body's hash: a retry sends the same key); None when
    the webhook took it, else the last error. A 4xx other than 408 and 429 is not retried: it will not change. Errors
    never name the URL, which may hold a token."""
    body = json.dumps({"rows": rows}, ensure_ascii=False, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": hashlib.sha256(body).hexdigest()}
    error = None
    for attempt in range(retry.attempts):
        if attempt:
            retry.sleep(retry.first_delay * 2 ** (attempt - 1))
        try:
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=retry.timeout):
                return None
        except urllib.error.HTTPError as refused:
            error = f"HTTP {refused.code}"
            if refused.code < 500 and refused.code not in (408, 429):
                return error
        except (urllib.error.URLError, OSError, http.client.HTTPException) as failed:  # refused, DNS, timeout, garbage
            error = str(getattr(failed, "reason", failed)) or type(failed).__name__
    return error


@dataclass(frozen=True)
class Outbound:
    """A row to send to a webhook, the file it belongs to and its place in the sending order (kept if it fails)."""

    file: str
    position: int
    row: dict


def outbound(deliveries: list[Delivery]) -> Iterator[Outbound]:
    for delivery in deliveries:
        for number, row in enumerate(delivery.rows, start=1):
            yield Outbound(delivery.file, number, row)


def send(url: str, rows: list[Outbound], batch_size: int, retry: Retry) -> tuple[int, list[tuple[Outbound, str]]]:
    """Batches of `rows` in order: how many rows were delivered, and the rows not delivered with the reason. After a
    batch fails, the rest wait for the next run rather than time out one after another."""
    delivered, failed = 0, []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        error = None if failed else post(url, [item.row for item in batch], retry)
        if error is None and not failed:
            delivered += len(batch)
        else:
            failed += [(item, error or "not sent: an earlier batch failed") for item in batch]
    return delivered, failed


def pending(conn, destination: str) -> list[Outbound]:
    """The rows a webhook did not take in earlier runs, in the order they were to be sent."""
    rows = conn.execute(
        "SELECT file, position, row_json FROM journey.webhook_failures WHERE destination = $1 "
        "ORDER BY failed_at, position",
        [destination],
    ).fetchall()
    return [Outbound(file, position, json.loads(text)) for file, position, text in rows]


def keep_failures(conn, destination: str, failed: list[tuple[Outbound, str]], now) -> None:
    """The rows still not delivered replace the destination's earlier failures (those were sent again first)."""
    conn.execute("DELETE FROM journey.webhook_failures WHERE destination = $1", [destination])
    rows = [
        [destination, position, item.file, line(item.row).decode().rstrip("\n"), error, now]
        for position, (item, error) in enumerate(failed)
    ]
    insert_rows(conn, "journey.webhook_failures", rows)


def record(conn, destination, first: date, end: date, deliveries: list[Delivery], run_id: str, now) -> None:
    """The destination now holds its wanted rows of the window, through the files it was handed. In the caller's
    transaction, after the files are written: a failure in between leaves the same files to be written again."""
    window = {"destination": destination.name, "first": first, "end": end}
    conn.execute(
        "DELETE FROM journey.exported_activations "
        "WHERE destination = $destination AND activated_on >= $first AND activated_on < $end",
        window,
    )
    conn.execute(
        f"INSERT INTO journey.exported_activations SELECT $destination, * FROM ({WANTED})",
        {"destination": destination.name, **wanted_params(destination)},
    )
    files = [
        [destination.name, d.day, d.correction, d.file, len(d.rows), hashlib.sha256(d.body).hexdigest(), run_id, now]
        for d in deliveries
    ]
    insert_rows(conn, "journey.activation_exports", files)


def wanted_params(destination) -> dict:
    return {"all": destination.activations is None, "names": destination.activations or []}


def readback(conn, destination, place: Folder | S3Prefix | None, first: date, end: date) -> tuple[int, list[str]]:
    """The destination's rows of the window as delivered (for files: read back, day files plus corrections) against
    its activations now: how many rows differ, and the files missing or changed since written. Needs
    KEYED_ACTIVATIONS run for the window."""
    params = wanted_params(destination)
    if place is None:  # a webhook: what was handed to it (delivered, or waiting in journey.webhook_failures)
        conn.execute(
            "CREATE OR REPLACE TEMP TABLE export_readback AS SELECT * EXCLUDE (destination) "
            "FROM journey.exported_activations "
            "WHERE destination = $destination AND activated_on >= $first AND activated_on < $end",
            {"destination": destination.name, "first": first, "end": end},
        )
        return rows_differing(conn, "FROM export_readback", WANTED, params), []
    files = conn.execute(
        "SELECT file, sha256 FROM journey.activation_exports "
        "WHERE destination = $1 AND day >= $2 AND day < $3 ORDER BY day, correction",
        [destination.name, first, end],
    ).fetchall()
    written = {file for file, _ in files}
    days = (first + timedelta(days=n) for n in range((end - first).days))
    problems = [f"{day}.jsonl: never written" for day in days if f"{day}.jsonl" not in written]
    net = Counter()
    for file, sha256 in files:
        body = place.get(file)
        if body is None or hashlib.sha256(body).hexdigest() != sha256:
            problems.append(f"{file}: {'missing' if body is None else 'changed since written'}")
            continue
        for text in body.decode().splitlines():
            row = json.loads(text)
            net[tuple(row[field] for field in FIELDS)] += -1 if row.get("change") == "withdrawn" else 1
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE export_readback (journey_id VARCHAR, customer_id VARCHAR, activation VARCHAR, "
        "activated_on DATE, idempotency_key VARCHAR)"
    )
    insert_rows(conn, "export_readback", [list(row) for row, n in net.items() for _ in range(max(n, 0))])
    withdrawn_unknown = sum(-n for n in net.values() if n < 0)  # a withdrawal of a row never given
    return rows_differing(conn, "FROM export_readback", WANTED, params) + withdrawn_unknown, problems
