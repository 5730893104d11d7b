"""`loyalty-pipeline materialize`: every asset over a range of days in one in-process run, then a summary."""

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

import dagster as dg
import duckdb

from loyalty_pipeline.definitions import EVERYTHING_JOB, build_defs
from loyalty_pipeline.defs.automation import planning
from loyalty_pipeline.defs.errors import OneLineError
from loyalty_pipeline.defs.resources import connect_when_free
from loyalty_pipeline.domain.config import RulesError
from loyalty_pipeline.lib import touched

# What the summary prints in full: the small tables a person checks by eye, people by id and name (a heading is
# its table's name, then what of it is shown).
SHOWN = {
    "loyalty.sales_totals": "SELECT user_id, name, total, reward_level FROM loyalty.sales_totals {names} ORDER BY user_id",
    "loyalty.tier_history": "SELECT user_id, name, tier, valid_from, valid_until, reason, qualifying_value "
    "FROM loyalty.tier_history {names} ORDER BY user_id, valid_from",
    "loyalty.caffeine_index": "SELECT user_id, name, total, sequence, next_one_free FROM loyalty.caffeine_index {names} "
    "ORDER BY user_id",
    "loyalty.promotions": "SELECT user_id, name, promotion_name, products FROM loyalty.promotions {names} ORDER BY ALL",
    "loyalty.returns": "SELECT user_id, name, returned_at, product_id, price FROM (SELECT r.user_id, r.returned_at, "
    "p.product_id, p.price FROM loyalty.returns AS r JOIN loyalty.enriched_purchases AS p USING (purchase_id)) {names} "
    "ORDER BY ALL",
    "points.point_transactions": "SELECT day, kind, count(*) AS rows, sum(points)::BIGINT AS points "
    "FROM points.point_transactions GROUP BY ALL ORDER BY ALL",
    "points.point_transactions (campaign and event awards)": "SELECT txn_id, user_id, name, points, occurred_at FROM points.point_transactions {names} "
    "WHERE kind = 'earn' AND NOT starts_with(txn_id, 'earn:') ORDER BY occurred_at, txn_id",
    "points.point_balances": "SELECT user_id, name, balance, available, pending, debt, next_expiry_at, next_expiry_points "
    "FROM points.point_balances {names} ORDER BY user_id",
    "journey.journey_state": "SELECT journey_id, node, count(*) AS customers, min(entered_at) AS first_entered "
    "FROM journey.journey_state GROUP BY ALL ORDER BY journey_id, first_entered, node",
    "journey.activations": "SELECT * FROM journey.activations ORDER BY activated_on, journey_id, customer_id",
}
NAMES = "LEFT JOIN (SELECT user_id, name FROM customer.profiles) AS people USING (user_id)"
NO_NAMES = "CROSS JOIN (SELECT NULL::VARCHAR AS name)"


PID_TAG, HOST_TAG = "loyalty/pid", "loyalty/host"


def release_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Marks failed the CLI runs on this host whose process is gone (killed mid-way) and frees their pool slots,
    so the next run does not wait forever for the warehouse."""
    released = []
    started = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED], tags={HOST_TAG: socket.gethostname()})
    for run in instance.get_runs(filters=started):
        try:
            os.kill(int(run.tags[PID_TAG]), 0)
        except ProcessLookupError:
            instance.report_run_failed(run, "the process running it is gone (killed?)")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            released.append(run.run_id)
    return released


def materialize_days(
    defs: dg.Definitions,
    first: str,
    last: str,
    instance: dg.DagsterInstance | None = None,
    assets: tuple[str, ...] = (),
    rebuild: bool = False,
):
    """Every asset and check for days first..last (inclusive) as one in-process run over a partition key range;
    with `assets` ("loyalty/sales_totals", ...), only those and what they read; `rebuild`: the lifetime tables and
    balances are rebuilt whole rather than updated for the people the run touched."""
    selection = None
    if assets:
        keys = [dg.AssetKey.from_user_string(name) for name in assets]
        selection = list(dg.AssetSelection.assets(*keys).upstream().resolve(defs.resolve_asset_graph()))
    return defs.resolve_job_def(EVERYTHING_JOB).execute_in_process(
        asset_selection=selection,
        instance=instance or dg.DagsterInstance.ephemeral(),
        tags={
            planning.RANGE_START_TAG: first,
            planning.RANGE_END_TAG: last,
            PID_TAG: str(os.getpid()),
            HOST_TAG: socket.gethostname(),
            **({touched.REBUILD_TAG: "true"} if rebuild else {}),
        },
        # Dagster's console log prints stack traces; the CLI prints warnings and failures itself (print_problems)
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        raise_on_error=False,
    )


def materialize(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.data_dir:
        env["LOYALTY_DATA_DIR"] = args.data_dir
    if args.warehouse:
        env["LOYALTY_WAREHOUSE"] = args.warehouse
    try:
        defs = build_defs(env)
    except RulesError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sources = defs.resources["sources"]
    data_dir = Path(sources.data_dir)
    if (
        not (data_dir / "kafka").is_dir()
        and not Path(sources.s3_url).exists()
        and not sources.s3_url.startswith("s3://")
    ):
        print(f"error: no inputs: neither {data_dir / 'kafka'} nor {sources.s3_url} exists", file=sys.stderr)
        return 2
    database = defs.resources["warehouse"].database
    try:
        connect_when_free(database).close()  # a path that cannot work fails here
        try:
            built = planning.built_days(database)
        except duckdb.IOException:  # another run writes it now: plan as if nothing were known
            built = planning.Built()
        # an explicit range on a warehouse with days needs no scan of every input file (a cost that grows)
        found = (
            None if args.start and args.end and built.first else planning.input_days(sources, defs.resources["rules"])
        )
    except OneLineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if found is None and not (args.start and args.end):
        print(f"error: no events found under {data_dir}; nothing to materialize", file=sys.stderr)
        return 2
    first = args.start or max(found[0], defs.resources["rules"].first_day()).isoformat()
    last = args.end or found[1].isoformat()
    if first > last:
        print(f"error: the range {first} .. {last} is empty (--from after --to?)", file=sys.stderr)
        return 2
    rules = defs.resources["rules"]
    if first < rules.first_day().isoformat():
        print(f"error: --from {first} is before the first day partition {rules.first_day()}", file=sys.stderr)
        return 2
    latest, bound = rules.latest_event_bound()
    if last > latest.date().isoformat():
        print(f"error: --to {last} is after {latest.date()} ({bound}): no event can be on it yet", file=sys.stderr)
        return 2
    if found and first > found[0].isoformat() and built.first is None:
        # nothing in an empty warehouse says earlier events exist: the ledger and journeys would start from zero
        print(
            f"error: {database} has no day built yet and the inputs start at {found[0]}: materialize from "
            f"{found[0]} first (each day builds on the days before it)",
            file=sys.stderr,
        )
        return 2
    print(f"materializing {first} .. {last} into {defs.resources['warehouse'].database}")

    # With DAGSTER_HOME set (as `make run` and `make dev` do) the run shows in the UI's history and waits for
    # the warehouse pool like any other run.
    if os.environ.get("DAGSTER_HOME"):
        try:
            instance = dg.DagsterInstance.get()
        except dg.DagsterInvariantViolationError as error:  # a relative path, a missing folder, a file
            print(f"error: DAGSTER_HOME={os.environ['DAGSTER_HOME']}: {str(error).splitlines()[0]}", file=sys.stderr)
            return 2
        for run_id in release_dead_runs(instance):
            print(f"released run {run_id}: its process was gone")
    else:
        # An in-memory instance is gone after the run, and nobody looks at its partitions' status: one "planned"
        # event per asset rather than one per asset and day (Dagster's documented switch) saves ~3 ms an event.
        os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")
        instance = dg.DagsterInstance.ephemeral()
    result = materialize_days(defs, first, last, instance, rebuild=getattr(args, "rebuild", False))
    print_problems(instance, result.run_id)
    failed_blocking = print_summary(defs.resources["warehouse"].database, result)
    print_step_seconds(instance, result.run_id)
    ok = result.success and not failed_blocking
    print("OK" if ok else "FAILED: a step or a blocking check failed (see above)")
    return 0 if ok else 1


def print_problems(instance: dg.DagsterInstance, run_id: str) -> None:
    """The run's warnings and step failures, one line each: a user fixes input, config or environment, and a stack
    trace only hides the line that says what (the instance's event log keeps the whole error)."""
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None and entry.user_message.startswith("Dependencies for step"):
            print(f"skipped: {entry.step_key}: a step it reads from failed", file=sys.stderr)
        elif event is None and entry.level >= logging.WARNING:
            print(f"warning: {entry.step_key}: {entry.user_message}", file=sys.stderr)
        elif event is not None and event.is_step_failure:
            data = event.step_failure_data
            error = data.error.cause if data.error and data.error.cause else data.error
            line = data.user_failure_data.description if data.user_failure_data else error and error.message
            print(f"error: {entry.step_key}: {(line or 'failed').strip().splitlines()[0]}", file=sys.stderr)


def print_summary(database: str, result: dg.ExecuteInProcessResult) -> list[str]:
    """Rows per table, the small loyalty tables in full, rejected rows and check results; returns failed blocking checks."""
    # another run's step may hold the lock: wait for it, as steps do
    with connect_when_free(database, read_only=True) as conn:
        print("\nrows per table")
        tables = conn.execute("SELECT schema_name || '.' || table_name FROM duckdb_tables() ORDER BY ALL").fetchall()
        for (table,) in tables:
            print(f"  {table:<34} {conn.execute(f'SELECT count(*) FROM {table}').fetchall()[0][0]:>10}")
        names = NAMES if ("customer.profiles",) in tables else NO_NAMES
        for table, sql in SHOWN.items():
            if (table.split(" ")[0],) in tables:
                print(f"\n{table}")
                print(conn.sql(sql.format(names=names)))
        print("rejected rows")
        print(conn.sql("SELECT source, reason, count(*) AS rows FROM raw.rejected_records GROUP BY ALL ORDER BY ALL"))
    failed_blocking = []
    print("checks")
    for evaluation in result.get_asset_check_evaluations():
        name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        blocking = evaluation.blocking if evaluation.blocking is not None else False
        severity = evaluation.severity.value
        status = "pass" if evaluation.passed else ("FAIL" if blocking or severity == "ERROR" else "warn")
        if not evaluation.passed and blocking:
            failed_blocking.append(name)
        print(f"  {status:<5} {name}")
    return failed_blocking


def print_step_seconds(instance: dg.DagsterInstance, run_id: str) -> None:
    """Seconds per step, slowest first: where a run's time went."""
    stats = instance.get_run_step_stats(run_id)
    print("step seconds")
    for stat in sorted(stats, key=lambda stat: (stat.start_time or 0) - (stat.end_time or 0)):
        print(f"  {stat.step_key:<34} {(stat.end_time or 0) - (stat.start_time or 0):>8.2f}")
