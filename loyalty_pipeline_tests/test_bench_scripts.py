"""Every script of `bench/` at its smallest scale, as `make bench` runs it (a subprocess writing JSON): it exits 0
and no figure in its JSON failed. A bench script is run only by `make bench`; this keeps it from rotting unseen
(as when a timed wrapper of `Warehouse.get_connection` stopped taking its arguments and every one-day figure
became `ok: false`). Results go to tmp_path, never to bench/results/.

Not here: `bench/engines.py` (`make bench ENGINE=spark`) runs the whole pipeline through the CLI on Spark, minutes
even on tiny data; its comparison of two warehouses is tested in test_spark.py."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def failures(result, path: str = "") -> list[str]:
    """Where a bench JSON reports a failure: `ok` false, an error, a non-zero exit code, a failed run."""
    found = []
    if isinstance(result, dict):
        for key, value in result.items():
            where = f"{path}.{key}"
            if key == "ok" and value is not True:
                found.append(f"{where} = {value!r}")
            elif key in ("error", "agreement_error", "first_errors", "failed") and value:
                found.append(f"{where} = {value!r}")
            elif key in ("exit_code", "writer_exit_code", "errors") and value != 0:
                found.append(f"{where} = {value!r}")
            elif key == "timed_out_after_s":
                found.append(f"{where} = {value!r}")
            else:
                found += failures(value, where)
    elif isinstance(result, list):
        for i, value in enumerate(result):
            found += failures(value, f"{path}[{i}]")
    return found


def test_failures_finds_every_kind_of_failed_figure():
    assert failures({"a": {"ok": True, "exit_code": 0, "errors": 0, "failed": []}}) == []
    assert failures({"one_day": {"on_time_day": {"ok": False}}, "runs": [{"exit_code": 2}], "error": "boom"}) == [
        ".one_day.on_time_day.ok = False",
        ".runs[0].exit_code = 2",
        ".error = 'boom'",
    ]


def run(script: str, tmp_path: Path, *args: str) -> dict:
    """`python bench/<script> <args> --out <tmp>`: its JSON, after checking it exited 0."""
    out = tmp_path / f"{script}.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def test_run_bench_with_the_app(tmp_path):
    """Without its incremental section (five more CLI runs, tens of seconds): that section's one-day figures are
    late_file_cost's, run below; its other runs are `materialize --from/--to`, as the pipeline's own runs above."""
    result = run(
        "run_bench.py",
        tmp_path,
        *("--customers", "200", "--days", "3", "--no-incremental", "--app-clients", "2", "--app-seconds", "1"),
        *("--work-dir", str(tmp_path / "work")),
    )
    assert failures(result) == []
    assert result["agree"] and result["agree_profile_spend"]
    assert result["pipeline"]["steps"] and result["app_lookups"]["lookups"] > 0


def test_late_file_cost(tmp_path):
    result = run("late_file_cost.py", tmp_path, "--customers", "100", "--days", "2", "--back", "2", "--profile")
    assert failures(result) == []
    assert result["on_time_day"]["steps"] > 0 and result["late_file_2_days_back"]["steps"] > 0
    # where the SQL went: the project's functions that ran it, which account for no more than all of it
    by_caller = result["on_time_day"]["sql_s_by_caller"]
    assert any(caller.startswith("ledger.build_day:") for caller in by_caller)
    assert sum(by_caller.values()) <= result["on_time_day"]["sql_alone_s"] + 0.01


def test_ledger_day_cost_with_a_busy_person(tmp_path):
    result = run(
        "ledger_day_cost.py",
        tmp_path,
        *("--customers", "50", "--per-day", "20", "--short-history", "2", "--long-history", "4"),
        *("--busy-events", "200"),
    )
    assert failures(result) == []
    assert result["day_after_2_days_s"] > 0 and result["day_after_4_days_s"] > 0
    busy = result["busy_person"]
    assert busy["events"] == 200 and busy["day_s"] > 0
    assert busy["ledger_rows_by_kind"]["earn"] == 180  # nine purchases in ten, each of at least 1 point


def test_a_busy_person_day_that_hangs_is_reported_not_waited_for(tmp_path):
    out = tmp_path / "ledger.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "ledger_day_cost.py"), "--customers", "10", "--per-day", "10"]
        + ["--short-history", "1", "--long-history", "2", "--busy-events", "200", "--busy-timeout", "0.01"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1
    assert failures(json.loads(out.read_text())) == [
        ".busy_person.ok = False",
        ".busy_person.error = 'timed out after 0.01 s'",
        ".ok = False",
    ]


def test_journey_day_cost(tmp_path):
    result = run("journey_day_cost.py", tmp_path, "--customers", "100", "--purchases", "300", "--days", "3")
    assert failures(result) == []
    assert len(result["day_seconds"]) == 3 and result["state_rows"] > 0


def test_connect_cost(tmp_path):
    result = run("connect_cost.py", tmp_path, "--customers", "200", "--days", "8")
    assert failures(result) == []
    assert result["purchases_differing"] == 0 and result["raw_purchases"] > 0
