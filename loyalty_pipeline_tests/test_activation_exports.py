"""Delivery of activations (issue 31): exact files and manifests, byte-identical re-runs, corrections of a day
delivered before, an S3 prefix on moto's server, and a webhook on a local HTTP server (batches, retries, failures
kept and delivered on the next run)."""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from loyalty_pipeline.definitions import build_defs
from loyalty_pipeline.defs import activation_exports
from loyalty_pipeline.defs.runs import materialize_days
from loyalty_pipeline.domain.journey import delivery
from loyalty_pipeline_tests.scenarios import free_port

EXPORTS = ("journey/activation_exports",)
D1, D2 = "2024-06-01", "2024-06-02"
JOURNEY = """
journeys:
  - id: tea_trial
    audience: "list_contains(products_purchased, 'coffee')"
    goal: "list_contains(products_purchased, 'tea')"
    stages:
      - id: nudge
        steps: [{activation: tea_coupon}]
activations:
  destinations:
"""


def key(journey_id: str, customer_id: str, activation: str, day: str) -> str:
    """The documented idempotency key: sha256 of the compact JSON array of the four fields."""
    return hashlib.sha256(
        json.dumps([journey_id, customer_id, activation, day], separators=(",", ":")).encode()
    ).hexdigest()


def row(customer_id: str, day: str, **change) -> dict:
    return {
        **change,
        "journey_id": "tea_trial",
        "customer_id": customer_id,
        "activation": "tea_coupon",
        "activated_on": day,
        "idempotency_key": key("tea_trial", customer_id, "tea_coupon", day),
    }


def lines(*rows: dict) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in rows)


@pytest.fixture
def shop(inputs):
    """ann and bob get the coupon on day 1, cid on day 2."""
    inputs.kafka("products", [(pid, {"category": "c", "price": 3}, f"{D1}T00:00:00") for pid in ("coffee", "tea")])
    inputs.kafka(
        "purchases",
        [("bob", {"product_id": "coffee"}, f"{D1}T10:00:00"), ("ann", {"product_id": "coffee"}, f"{D1}T11:00:00")]
        + [("cid", {"product_id": "coffee"}, f"{D2}T10:00:00")],
    )
    return inputs


def destinations(inputs, *lines_: str) -> None:
    inputs.rules(JOURNEY + "".join(f"    - {text}\n" for text in lines_))


def exports_metadata(result) -> dict:
    """The run's metadata (each day of a range carries the same)."""
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == activation_exports.EXPORTS_KEY)
    return {name: value.value for name, value in event.materialization.metadata.items()}


def matched(result) -> list[bool]:
    return [e.passed for e in result.get_asset_check_evaluations() if e.check_name == "exports_match_activations"]


def test_a_folder_gets_exact_files_and_manifests_and_a_rerun_writes_nothing_new(shop, tmp_path):
    out = tmp_path / "out"
    destinations(shop, f"{{name: crm, folder: {out}}}", f"{{name: other, folder: {out}, activations: [nothing]}}")
    result = shop.materialize(D1, D2, assets=EXPORTS)
    folder = out / "activations" / "crm"
    day1 = lines(row("ann", D1), row("bob", D1))
    assert (folder / f"{D1}.jsonl").read_bytes() == day1
    assert json.loads((folder / f"{D1}.manifest.json").read_text()) == {
        "day": D1,
        "file": f"{D1}.jsonl",
        "rows": 2,
        "bytes": len(day1),
        "sha256": hashlib.sha256(day1).hexdigest(),
    }
    assert (folder / f"{D2}.jsonl").read_bytes() == lines(row("cid", D2))
    # a destination that wants none of these activations still learns each day is done: an empty file
    assert (out / "activations" / "other" / f"{D1}.jsonl").read_bytes() == b""
    assert json.loads((out / "activations" / "other" / f"{D2}.manifest.json").read_text())["rows"] == 0
    assert sorted(path.name for path in folder.iterdir()) == [
        f"{D1}.jsonl",
        f"{D1}.manifest.json",
        f"{D2}.jsonl",
        f"{D2}.manifest.json",
    ]
    metadata = exports_metadata(result)
    assert (metadata["rows_written"], metadata["files_written"], metadata["corrections"]) == (3, 4, 0)
    assert matched(result) == [True]

    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in out.rglob("*") if path.is_file()}
    again = shop.materialize(D1, D2, assets=EXPORTS)
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in out.rglob("*") if path.is_file()} == before
    assert exports_metadata(again)["files_written"] == 0
    # another warehouse, run afresh, writes the same bytes: nothing in them depends on when or where they were made
    fresh = tmp_path / "fresh"
    rules = tmp_path / "fresh.yaml"  # another file: rules are cached by path
    rules.write_text(JOURNEY + f"    - {{name: crm, folder: {fresh}}}\n")
    shop.warehouse = tmp_path / "fresh.duckdb"
    shop.materialize(D1, D2, assets=EXPORTS, LOYALTY_CONFIG=str(rules))
    assert {p.name: p.read_bytes() for p in (fresh / "activations" / "crm").iterdir()} == {
        p.name: p.read_bytes() for p in folder.iterdir()
    }


def test_a_changed_day_gets_a_correction_and_its_file_stays(shop, tmp_path):
    out = tmp_path / "out"
    destinations(shop, f"{{name: crm, folder: {out}}}")
    shop.materialize(D1, D2, assets=EXPORTS)
    folder = out / "activations" / "crm"
    original = (folder / f"{D1}.jsonl").read_bytes()
    # a late file: bob's tea on day 1 keeps him out (the goal holds on entry), hal's coffee brings him in
    shop.kafka(
        "purchases",
        [("bob", {"product_id": "tea"}, f"{D1}T09:00:00"), ("hal", {"product_id": "coffee"}, f"{D1}T12:00:00")],
        file="late.jsonl",
    )
    result = shop.materialize(D1, D2, assets=EXPORTS)
    assert (folder / f"{D1}.jsonl").read_bytes() == original
    correction = lines(row("bob", D1, change="withdrawn", correction=1), row("hal", D1, change="added", correction=1))
    assert (folder / f"{D1}.correction-1.jsonl").read_bytes() == correction
    assert json.loads((folder / f"{D1}.correction-1.manifest.json").read_text()) == {
        "day": D1,
        "file": f"{D1}.correction-1.jsonl",
        "rows": 2,
        "correction": 1,
        "withdrawn": 1,
        "added": 1,
        "bytes": len(correction),
        "sha256": hashlib.sha256(correction).hexdigest(),
    }
    assert not (folder / f"{D2}.correction-1.jsonl").exists()  # day 2 did not change
    metadata = exports_metadata(result)
    assert (metadata["files_written"], metadata["corrections"]) == (1, 1)
    assert shop.query(
        "SELECT destination, day::VARCHAR, correction, file, rows FROM journey.activation_exports ORDER BY ALL"
    ) == [
        ("crm", D1, 0, f"{D1}.jsonl", 2),
        ("crm", D1, 1, f"{D1}.correction-1.jsonl", 2),
        ("crm", D2, 0, f"{D2}.jsonl", 1),
    ]

    # the check reads the files back: a correction file lost is a failed check naming it
    (folder / f"{D1}.correction-1.jsonl").unlink()
    lost = materialize_days(build_defs(shop.env()), D1, D1, assets=EXPORTS)
    assert not lost.success  # the check is blocking
    [evaluation] = [e for e in lost.get_asset_check_evaluations() if e.check_name == "exports_match_activations"]
    assert (evaluation.passed, evaluation.metadata["rows_differing"].value) == (
        False,
        2,
    )  # bob not withdrawn, hal not added
    assert evaluation.metadata["problems"].value == f"* crm: {D1}.correction-1.jsonl: missing"


def test_an_s3_prefix_gets_the_same_files(shop, s3_bucket):
    destinations(shop, f"{{name: crm, s3: 's3://{s3_bucket.name}/marketing'}}")
    result = shop.materialize(D1, D2, assets=EXPORTS, LOYALTY_S3_ENDPOINT_URL=s3_bucket.endpoint_url)
    assert matched(result) == [True]
    listed = s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name)["Contents"]
    assert sorted(obj["Key"] for obj in listed) == [
        f"marketing/activations/crm/{D1}.jsonl",
        f"marketing/activations/crm/{D1}.manifest.json",
        f"marketing/activations/crm/{D2}.jsonl",
        f"marketing/activations/crm/{D2}.manifest.json",
    ]
    body = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=f"marketing/activations/crm/{D1}.jsonl")["Body"]
    assert body.read() == lines(row("ann", D1), row("bob", D1))
    manifest = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=f"marketing/activations/crm/{D2}.manifest.json")
    assert json.loads(manifest["Body"].read())["sha256"] == hashlib.sha256(lines(row("cid", D2))).hexdigest()


class Webhook:
    """A local HTTP endpoint recording each POST (its Idempotency-Key and rows); answers the scripted statuses first,
    then 200."""

    def __init__(self, port: int = 0, statuses: tuple[int, ...] = ()):
        self.posts, self.statuses = [], list(statuses)
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = hook.statuses.pop(0) if hook.statuses else 200
                hook.posts.append((status, self.headers["Idempotency-Key"], json.loads(body)["rows"], body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/activations?token=secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pauses(monkeypatch) -> list[float]:
    """Webhook retries pause for milliseconds, and the pauses are recorded."""
    slept = []
    monkeypatch.setattr(activation_exports, "WEBHOOK_RETRY", delivery.Retry(3, 0.01, 2.0, slept.append))
    return slept


def test_a_webhook_gets_batches_and_retries_a_failing_server(shop, pauses):
    hook = Webhook(statuses=(503, 500))
    try:
        destinations(shop, f"{{name: crm, webhook: '{hook.url}', batch_size: 1}}")
        result = shop.materialize(D1, assets=EXPORTS)
    finally:
        hook.close()
    # the first batch fails twice, then every batch goes through; a retry sends the same body and key
    assert [(status, rows) for status, _, rows, _ in hook.posts] == [
        (503, [row("ann", D1)]),
        (500, [row("ann", D1)]),
        (200, [row("ann", D1)]),
        (200, [row("bob", D1)]),
    ]
    assert [k for _, k, _, body in hook.posts] == [hashlib.sha256(body).hexdigest() for *_, body in hook.posts]
    assert len({k for _, k, _, _ in hook.posts}) == 2
    assert pauses == [0.01, 0.02]
    metadata = exports_metadata(result)
    assert (metadata["webhook_delivered"], metadata["webhook_failed"], metadata["webhook_rows_waiting"]) == (2, 0, 0)


def test_rows_a_webhook_did_not_take_are_kept_and_delivered_first_next_run(shop, pauses):
    port = free_port()
    url = f"http://127.0.0.1:{port}/activations?token=secret"
    destinations(shop, f"{{name: crm, webhook: '{url}'}}")
    down = shop.materialize(D1, assets=EXPORTS)  # nobody listens
    assert (exports_metadata(down)["webhook_failed"], exports_metadata(down)["webhook_rows_waiting"]) == (2, 2)
    waiting = shop.query("SELECT destination, file, row_json, error FROM journey.webhook_failures ORDER BY position")
    assert [(d, f, json.loads(r)) for d, f, r, _ in waiting] == [
        ("crm", f"{D1}.jsonl", row("ann", D1)),
        ("crm", f"{D1}.jsonl", row("bob", D1)),
    ]
    assert all("secret" not in error and "refused" in error.lower() for *_, error in waiting)
    assert pauses == [0.01, 0.02]  # one batch tried; the rest waits rather than time out too

    hook = Webhook(port)
    try:
        up = shop.materialize(D1, D2, assets=EXPORTS)
    finally:
        hook.close()
    assert [rows for _, _, rows, _ in hook.posts] == [[row("ann", D1), row("bob", D1), row("cid", D2)]]
    assert matched(up) == [True]
    metadata = exports_metadata(up)
    assert (metadata["webhook_delivered"], metadata["webhook_failed"], metadata["webhook_rows_waiting"]) == (3, 0, 0)
    assert shop.query("SELECT count(*) FROM journey.webhook_failures") == [(0,)]


def test_days_whose_activations_are_not_built_are_refused(shop, tmp_path):
    destinations(shop, f"{{name: crm, folder: {tmp_path / 'out'}}}")
    defs = build_defs(shop.env())
    result = defs.resolve_job_def("materialize_everything").execute_in_process(
        asset_selection=[activation_exports.EXPORTS_KEY], partition_key=D1, raise_on_error=False
    )
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "journey/activations is not built for every day of 2024-06-01..2024-06-01" in str(
        failure.event_specific_data.error.message
    )
    assert not (tmp_path / "out").exists()
