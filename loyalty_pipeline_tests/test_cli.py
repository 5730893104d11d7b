"""`loyalty-pipeline materialize` as a user runs it (a subprocess, or `main` in process): a summary, an exit status."""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from loyalty_pipeline.cli import main
from loyalty_pipeline_tests.scenarios import SEED_DATA, buy, priced

CLI = str(Path(sys.executable).parent / "loyalty-pipeline")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.e2e
def test_materialize_seed_prints_the_tables_and_exits_zero(tmp_path):
    done = run("materialize", "--data-dir", str(SEED_DATA), "--warehouse", str(tmp_path / "w.duckdb"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "materializing 2024-06-01 .. 2024-06-05" in out
    assert "loyalty.enriched_purchases" in out and "30" in out
    assert "│ u2001   │ kris    │ loose_leaf     │ [coffee]  │" in out  # names beside ids
    assert "pass  customer/profile_360:purchases_by_known_users" in out  # every purchase finds an account
    assert "FAIL" not in out and out.rstrip().endswith("OK")


@pytest.mark.e2e
def test_explicit_range_materializes_only_those_days(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    done = run(
        "materialize",
        "--data-dir",
        str(SEED_DATA),
        "--warehouse",
        str(warehouse),
        "--from",
        "2024-06-01",
        "--to",
        "2024-06-01",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr

    with duckdb.connect(str(warehouse), read_only=True) as conn:
        assert conn.execute("SELECT min(day)::VARCHAR, max(day)::VARCHAR, count(*) FROM raw.purchases").fetchall() == [
            ("2024-06-01", "2024-06-01", 8)
        ]
        assert conn.execute("SELECT day::VARCHAR FROM points.ledger_days").fetchall() == [("2024-06-01",)]


@pytest.mark.e2e
def test_missing_inputs_and_bad_rules_are_clear_errors(tmp_path):
    done = run(
        "materialize", "--data-dir", str(tmp_path / "nowhere"), "--warehouse", str(tmp_path / "w.duckdb"), cwd=tmp_path
    )
    assert done.returncode == 2 and "no inputs" in done.stderr
    (tmp_path / "kafka").mkdir()
    (tmp_path / "loyalty.yaml").write_text("tiers: [{name: GOLD, abve: 1}]\n")
    done = run("materialize", "--data-dir", str(tmp_path), "--warehouse", str(tmp_path / "w.duckdb"), cwd=tmp_path)
    assert done.returncode == 2 and "tiers.0" in done.stderr and "abve" in done.stderr


def test_a_failed_step_is_reported_and_exits_one(inputs, capsys):
    inputs.kafka("purchases", [("ann", {"product_id": "tea"}, f"2024-06-0{day}T10:00:00") for day in (1, 2, 3)])
    common = ["materialize", "--data-dir", str(inputs.root), "--warehouse", str(inputs.warehouse)]
    assert main([*common, "--from", "2024-06-01", "--to", "2024-06-01"]) == 0
    capsys.readouterr()
    assert main([*common, "--from", "2024-06-03", "--to", "2024-06-03"]) == 1  # day 2 missing
    out, err = capsys.readouterr()
    assert out.rstrip().endswith("FAILED: a step or a blocking check failed (see above)")
    assert "id graph: 2024-06-03 needs the graph at the end of 2024-06-02" in out + err  # the first chain step


def test_profile_of_a_name_two_accounts_carry_lists_them_and_exits_one(inputs, capsys):
    priced(inputs, ten=10)
    inputs.kafka(
        "users",
        [
            ("u1", {"name": "Sam", "email": "sam@one.example"}, "2022-10-01T07:00:00"),
            ("u3", {"name": "Kim"}, "2022-10-01T07:40:00"),
            ("u2", {"name": "SAM ", "email": "sam@two.example"}, "2022-10-02T07:00:00"),  # the name was unique before
        ],
        file="users.jsonl",
    )
    buy(inputs, ("sam", "ten", "2022-10-01T08:00:00"), ("kim", "ten", "2022-10-02T08:00:00"))
    inputs.materialize("2022-10-01", "2022-10-02", assets=("customer/serving_snapshot",))
    common = ["--warehouse", str(inputs.warehouse)]
    for name in ("Sam", "sam", " SAM"):
        assert main(["profile", name, *common]) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert err.splitlines() == [
            f"error: {name!r} finds 2 customers: look one up by id",
            "  u1  sam@one.example  Sam",
            "  u2  sam@two.example  SAM ",
        ]
    for identifier, person in (("u2", "u2"), ("sam@two.example", "u2"), ("u1", "u1"), ("kim", "u3")):
        assert main(["profile", identifier, *common]) == 0
        assert json.loads(capsys.readouterr().out)["user_id"] == person


def test_profile_on_a_database_that_is_not_a_serving_copy_is_one_line(tmp_path, capsys):
    with sqlite3.connect(tmp_path / "warehouse.serving.sqlite") as conn:
        conn.execute("CREATE TABLE notes (x INTEGER)")
    conn.close()
    assert main(["profile", "kris", "--warehouse", str(tmp_path / "warehouse.duckdb")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: the serving copy {tmp_path / 'warehouse.serving.sqlite'} has no baskets, cards, identifiers, info, "
        "large_items, names, rec_counts (not a serving copy, or one an older version published): run "
        "`loyalty-pipeline materialize` to publish it again"
    ]
