"""The one run that brings the warehouse up to date after inputs changed: which days, which assets.

The sensors and the schedule ask here, so whatever order files arrive in, the runs converge on the answer of one
batch run over the same files:

* a change to day D re-runs D through the last built day of everything downstream of the changed sources, in
  one run (the ledger and journeys walk those days in order inside their steps);
* a run that reaches past the last built day, or starts before the first, or fills a gap, runs every asset,
  because every source then has new days;
* a change without a day (a customers export) re-runs its downstream over every built day: journeys judge
  exported customers from the first day.

"Built" counts every chain (id graph, ledger, journey state, activations): a run killed between their steps leaves
one ahead of another, and the next plan runs everything from the first day one of them lacks.

One run at a time: while one of the instance's runs is queued or in progress, nothing is planned (each plan
reads a settled warehouse, and DuckDB has one writer).
"""

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb

from loyalty_pipeline.defs.dated_files import dated_file
from loyalty_pipeline.defs.metadata import REASON_TAG
from loyalty_pipeline.domain.ingest import kafka, messages

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
# Dagster's tags for a run over a partition key range: public as strings, not as names in its public API.
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
# Every table of days a step marks built: the self-dependent chains (id graph, ledger, journey state) and the
# activations handed out. A run killed between steps leaves them apart; a plan covers the days any one lacks.
CHAIN_DAYS = ["identity.graph_days", "points.ledger_days", "journey.journey_days", "journey.activation_days"]
PLAN_TAG = "loyalty/plan"  # a sensor's run carries its run key: the next tick looks at how the run ended


def input_days(sources, rules) -> tuple[date, date] | None:
    """First and last UTC day of the valid events in the inputs: Kafka messages and dated CSV exports from the
    first partition through now plus the tolerance (an event in 2099 or in seconds must not set the range); the last
    day is at most today."""
    first, latest = rules.first_day(), rules.latest_event_time()
    days = []
    for topic in kafka.TOPICS.values():
        source = rules.rules.kafka.source(topic.name)
        days += messages.event_day_range(sources.kafka_files(topic.name, source), first, latest, topic, source) or []
    store = sources.object_store()
    days += [
        (dated_file(obj.key) or (None, None))[1]
        for prefix in ("historical_purchases/", "returns/")
        for obj in store.list_objects(prefix)
    ]
    days = [day for day in days if day and first <= day <= latest.date()]
    if not days:
        return None
    # An event within the tolerance ahead of now waits for its day: "as of" never moves into the future.
    return min(days), max(min(days), min(max(days), datetime.now(UTC).date()))


def run_in_flight(instance: dg.DagsterInstance) -> str | None:
    """Why not to plan now: a run of this instance is queued or in progress (None when all are settled)."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT), limit=1)
    return f"waiting for run {runs[0].run_id} ({runs[0].status.value}) to settle" if runs else None


@dataclass(frozen=True)
class Built:
    """The days the chains have built (CHAIN_DAYS)."""

    first: date | None = None  # the first day any chain built
    last: date | None = None  # the last day any chain built
    gap: date | None = None  # the first day in [first, last] that one of them lacks


def built_days(database: str) -> Built:
    """Read from the warehouse; raises duckdb.IOException while a writer holds it. A missing table has no day."""
    if not Path(database).exists():
        return Built()
    with duckdb.connect(database, read_only=True) as conn:
        present = {
            f"{schema}.{table}"
            for schema, table in conn.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
        }
        chains = [table for table in CHAIN_DAYS if table in present]
        if not chains:
            return Built()
        first, last, gap = conn.execute(
            f"""WITH chains AS ({" UNION ALL ".join(f"SELECT day, '{t}' AS chain FROM {t}" for t in chains)}),
                     span AS (SELECT min(day) AS first, max(day) AS last FROM chains)
                SELECT first, last, (SELECT min(d::DATE) FROM range(first, last + 1, INTERVAL 1 DAY) AS r(d)
                                     WHERE (SELECT count(DISTINCT chain) FROM chains WHERE day = d::DATE) < $chains)
                FROM span""",
            {"chains": len(CHAIN_DAYS)},
        ).fetchall()[0]
    return Built(first, last, gap)


@dataclass
class Change:
    """Inputs that changed since the last plan: the raw assets they feed and the days they touch."""

    sources: set[dg.AssetKey] = field(default_factory=set)
    first: date | None = None
    last: date | None = None
    whole_history: bool = False  # a change without a day that every built day depends on
    what: list[str] = field(default_factory=list)  # the changed inputs, for the run's reason
    versions: list[str] = field(default_factory=list)  # with their versions: the same change is one run key

    def add(self, source: dg.AssetKey, what: str, version: str, days: tuple[date, date] | None = None) -> None:
        self.sources.add(source)
        self.what.append(what)
        self.versions.append(f"{what}@{version}")
        if days:
            self.first = min(days[0], self.first or days[0])
            self.last = max(days[1], self.last or days[1])

    def __bool__(self) -> bool:
        return bool(self.sources)


def run_request(
    repository: dg.RepositoryDefinition,
    job_name: str,
    change: Change,
    built: Built,
    bounds: tuple[date, date],
) -> dg.RunRequest | None:
    """One run over the days and assets `change` needs, given what is built; None when there is nothing to run.

    `bounds` are the first and last day partitions: days outside them cannot be materialized."""
    first, last = change.first, change.last
    if built.last:
        if first is None:  # no day: a customers export, or a file without a readable event (the last day reads it)
            first = last = built.last
        if change.whole_history:
            first = min(first, built.first)
        if built.gap:
            first = min(first, built.gap)
        if last > built.last:  # new days: fill from the day after the last built one
            first = min(first, built.last + timedelta(days=1))
        last = max(last, built.last)
    if first is None:  # nothing built and no day: the first run with days reads it (a new file is always read)
        return None
    first, last = max(first, bounds[0]), min(last, bounds[1])
    if first > last:
        return None
    graph = repository.asset_graph
    new_days = not built.last or first < built.first or last > built.last or built.gap
    selection = None if new_days else dg.AssetSelection.assets(*change.sources).downstream().resolve(graph)
    checks = None if selection is None else [key for key in graph.asset_check_keys if key.asset_key in selection]
    fingerprint = hashlib.sha1(repr((sorted(change.versions), first, last)).encode()).hexdigest()
    run_key = f"{first}..{last}:{fingerprint[:12]}"
    # the plan's tag finds its run again, whoever launched it (the daemon, or run_in_process)
    tags = {REASON_TAG: "; ".join(change.what)[:1000], PLAN_TAG: run_key}
    partition_key = None
    if first == last:
        partition_key = first.isoformat()
    else:
        tags |= {RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()}
    return dg.RunRequest(
        run_key=run_key,
        job_name=job_name,
        partition_key=partition_key,
        asset_selection=None if selection is None else sorted(selection),
        asset_check_keys=checks,
        tags=tags,
    )


def run_in_process(defs: dg.Definitions, request: dg.RunRequest, instance: dg.DagsterInstance, run_config=None):
    """Executes a run request in this process, as the daemon would launch it (tests and the bench drive the
    sensors this way)."""
    return defs.resolve_job_def(request.job_name).execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        asset_selection=request.asset_selection,
        tags=request.tags,
        run_config=run_config,
        raise_on_error=False,
    )
