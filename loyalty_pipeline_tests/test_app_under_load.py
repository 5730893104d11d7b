"""Issue 16: lookups while `loyalty-pipeline materialize` rewrites the same warehouse and publishes to the store."""

import json
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection

import pytest

from loyalty_pipeline.serve.serving import serving_path
from loyalty_pipeline_tests.scenarios import SEED_DATA, serve

pytestmark = pytest.mark.e2e


def test_lookups_during_a_run_all_succeed_from_complete_copies(demo, demo_copy):
    with (
        sqlite3.connect(serving_path(str(demo.warehouse))) as store,
        sqlite3.connect(serving_path(str(demo_copy.warehouse))) as copy,
    ):
        store.backup(copy)
    store.close()
    copy.close()
    with serve(demo_copy.warehouse) as url:
        run = subprocess.Popen(
            [sys.executable, "-m", "loyalty_pipeline.cli", "materialize", "--data-dir", str(SEED_DATA)]
            + ["--warehouse", str(demo_copy.warehouse)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        answers, lock = [], threading.Lock()

        def look_up(_: int) -> None:  # one client: lookups until the run is over, and at least 250
            connection = HTTPConnection(url.removeprefix("http://"))
            done = 0
            while run.poll() is None or done < 250:
                connection.request("GET", "/api/customers/kris")
                response = connection.getresponse()
                body = response.read()
                with lock:
                    answers.append((response.status, body))
                done += 1

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(look_up, range(4)))
        output = run.communicate()[0]
    assert run.returncode == 0, output
    assert len(answers) >= 1000
    assert {status for status, _ in answers} == {200}, {body for status, body in answers if status != 200}
    cards = [json.loads(body) for _, body in answers]
    # every answer is a whole card of a published copy: the same numbers, from the old copy or the new one
    assert {(c["points"]["balance"], len(c["ledger"]), c["tier"]["total_spend"]) for c in cards} == {(37, 15, 74.28)}
    assert len({c["copy"]["published_at"] for c in cards}) == 2  # the publish happened while lookups went on
