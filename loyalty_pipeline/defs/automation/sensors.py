"""Sensors: new, rewritten or removed input files request one run of everything they feed (see planning.py).

Each sensor's cursor maps every file it has seen to its version, and for Kafka snapshots the days the file held, so
a restart neither misses nor repeats a file, and a rewritten file re-runs the days it used to hold as well as the
new ones. A version is the ETag on S3 and a hash of the bytes of a local file: a rewrite may keep the size and the
mtime (`cp -p`, `rsync -a`).

The cursor also names the last run requested. Its files count as done once that run succeeded; if it failed or
was canceled (a plan a step refused, a killed run), the next tick plans them again on what is built by then, up to
MAX_ATTEMPTS runs in a row, then waits for an input to change. While a run is in progress a tick waits (cursor
unchanged): the next tick plans on the settled warehouse.
"""

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import duckdb

from loyalty_pipeline.defs.automation import planning
from loyalty_pipeline.defs.automation.jobs import everything_job
from loyalty_pipeline.defs.customers import customers
from loyalty_pipeline.defs.dated_files import dated_file
from loyalty_pipeline.defs.exports import historical_purchases, s3_returns
from loyalty_pipeline.defs.ingest import raw_topics
from loyalty_pipeline.defs.resources import EventSources, RulesResource, Warehouse
from loyalty_pipeline.defs.stores import LocalStore, file_version
from loyalty_pipeline.domain.ingest import messages
from loyalty_pipeline.domain.ingest.kafka import TOPICS

TICK_SECONDS = 5  # a landed file waits at most this long for its run (freshness target: 30 s to the app)
MAX_ATTEMPTS = 3  # failed runs of the same files in a row before a sensor waits for a new change
PLAN = "plan"  # the cursor's entry for the last run requested (a file's entry is a path, with a "/")
FAILED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)

HASHES = "hashes"  # the cursor's entry caching local files' hashes: path -> [size-mtime-inode-ctime, hash]


def content_version(path: Path, cached: dict, hashes: dict) -> str:
    """A hash of a local file's bytes, read again only when its size, mtime, inode or ctime moved since the last
    tick's `cached` entry (writing a file moves its ctime, whatever mtime it is given back); kept in `hashes`."""
    stat = path.stat()
    key = f"{stat.st_size}-{stat.st_mtime_ns}-{stat.st_ino}-{stat.st_ctime_ns}"
    entry = cached.get(str(path))
    if entry is None or entry[0] != key:
        with path.open("rb") as file:
            entry = [key, hashlib.file_digest(file, lambda: hashlib.blake2b(digest_size=16)).hexdigest()]
    hashes[str(path)] = entry
    return entry[1]


@dataclass
class Tick:
    """What a tick starts from: the stored cursor, read back."""

    seen: dict  # path -> version: the files counted as done (a failed plan's files as they were before it)
    requested: dict  # path -> version as the last plan requested them
    failed: dg.DagsterRun | None  # that plan's run, if it failed or was canceled
    attempts: int  # its failed runs in a row
    cached: dict  # HASHES of the last tick
    hashes: dict = field(default_factory=dict)  # HASHES of this tick

    def cursor(self, now: dict, plan: dict | None = None) -> str:
        extra = {HASHES: self.hashes} if self.hashes else {}
        return json.dumps({**now, **extra, **({PLAN: plan} if plan else {})}, sort_keys=True)


def _read_cursor(context: dg.SensorEvaluationContext) -> Tick:
    requested = json.loads(context.cursor or "{}")
    plan, cached = requested.pop(PLAN, None), requested.pop(HASHES, {})
    if plan:
        runs = context.instance.get_runs(filters=dg.RunsFilter(tags={planning.PLAN_TAG: plan["run_key"]}), limit=1)
        # a run the instance does not know (deleted from the history) counts as done
        if runs and runs[0].status in FAILED:
            seen = dict(requested)
            for path, entry in plan["before"].items():
                if entry is None:
                    seen.pop(path, None)
                else:
                    seen[path] = entry
            return Tick(seen, requested, runs[0], plan["attempts"], cached)
    return Tick(requested, requested, None, 0, cached)


def _shown(path: str | Path) -> str:
    """A Kafka file as a run's reason names it: kafka/<topic>/<file>, as S3 objects are s3/<key> (the data folder's
    layout), wherever the data folder is."""
    return f"kafka/{Path(path).parent.name}/{Path(path).name}"


def _days(entry: list) -> tuple[date, date] | None:
    """The days of a Kafka cursor entry [version, first day, last day]."""
    return (date.fromisoformat(entry[1]), date.fromisoformat(entry[2])) if entry[1] else None


def _plan(
    context: dg.SensorEvaluationContext,
    change: planning.Change,
    tick: Tick,
    now: dict,
    warehouse: Warehouse,
    rules: RulesResource,
) -> dg.SensorResult:
    """The run `change` needs on the settled warehouse, and the cursor that remembers it was requested."""
    attempts = 1
    if tick.failed is not None:
        if now == tick.requested and tick.attempts >= MAX_ATTEMPTS:
            return dg.SensorResult(
                skip_reason=f"run {tick.failed.run_id} failed {tick.attempts} times in a row on the same files; "
                "waiting for an input to change (see the run's log)"
            )
        attempts = tick.attempts + 1 if now == tick.requested else 1
        change.what.append(f"retry of run {tick.failed.run_id} ({tick.failed.status.value})")
    # Every plan is a new run key: Dagster launches a key once, and contents put back as they were (A, B, A, B)
    # would repeat an earlier plan's versions; the cursor, not the key, is what makes ticks restart-safe.
    change.versions.append(f"planned at {time.time_ns()}")
    try:
        built = planning.built_days(warehouse.database)
    except duckdb.IOException:
        return dg.SensorResult(skip_reason="the warehouse is being written by another process; trying next tick")
    last = rules.until_end_date(datetime.now(UTC).date())  # the last day partition
    request = planning.run_request(
        context.repository_def, everything_job.name, change, built, (rules.first_day(), last)
    )
    if request is None:
        return dg.SensorResult(skip_reason=f"nothing to run for {', '.join(change.what)}", cursor=tick.cursor(now))
    seen = tick.seen
    before = {path: seen.get(path) for path in set(now) | set(seen) if now.get(path) != seen.get(path)}
    plan = {"run_key": request.run_key, "before": before, "attempts": attempts}
    return dg.SensorResult(run_requests=[request], cursor=tick.cursor(now, plan))


@dg.sensor(
    job=everything_job,
    minimum_interval_seconds=TICK_SECONDS,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Kafka snapshot files under <data dir>/kafka/<topic>/ (or Kafka Connect objects under "
    "<data dir>/<topics_dir>/<topic>/) that are new, rewritten or removed: one run "
    "over the days they hold through the last built day, of their topics and everything downstream.",
)
def kafka_new_files(
    context: dg.SensorEvaluationContext, sources: EventSources, warehouse: Warehouse, rules: RulesResource
) -> dg.SensorResult:
    waiting = planning.run_in_flight(context.instance)
    if waiting:
        return dg.SensorResult(skip_reason=waiting)
    tick = _read_cursor(context)
    # path -> [version, first day, last day]; a cursor of older releases held the version alone
    tick.seen = {path: entry if isinstance(entry, list) else [entry, None, None] for path, entry in tick.seen.items()}
    seen = tick.seen
    now, change = {}, planning.Change()
    for topic, asset in raw_topics.items():
        source = rules.rules.kafka.source(topic)
        for path in sources.kafka_files(topic, source):
            version, before = content_version(path, tick.cached, tick.hashes), seen.get(str(path))
            if before and before[0] in (version, file_version(path)):  # older releases stored mtime and size
                now[str(path)] = [version, *before[1:]]
                continue
            days = messages.event_day_range([path], rules.first_day(), rules.latest_event_time(), TOPICS[topic], source)
            now[str(path)] = [version, *(day.isoformat() if day else None for day in days or (None, None))]
            change.add(asset.key, f"{_shown(path)} ({'rewritten' if before else 'new'})", version, days)
            if before and before[1]:  # the days it held before count too
                change.add(asset.key, f"{_shown(path)} (before)", before[0], _days(before))
    for path, before in seen.items():
        if path not in now:
            topic = next(part for part in reversed(Path(path).parent.parts) if part in raw_topics)  # kcat or Connect
            change.add(raw_topics[topic].key, f"{_shown(path)} (removed)", before[0], _days(before))
    if not change:
        return dg.SensorResult(skip_reason="no new, rewritten or removed Kafka snapshot files", cursor=tick.cursor(now))
    return _plan(context, change, tick, now, warehouse, rules)


@dg.sensor(
    job=everything_job,
    minimum_interval_seconds=TICK_SECONDS,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="S3 files: a new, rewritten or removed historical_purchases/ or returns/YYYY-MM-DD.csv runs that day through the "
    "last built day; a customers/*.csv export refreshes everything downstream of the customers.",
)
def s3_new_files(
    context: dg.SensorEvaluationContext, sources: EventSources, warehouse: Warehouse, rules: RulesResource
) -> dg.SensorResult:
    waiting = planning.run_in_flight(context.instance)
    if waiting:
        return dg.SensorResult(skip_reason=waiting)
    tick = _read_cursor(context)
    seen = tick.seen
    store = sources.object_store()
    listed = {
        obj.key: obj.version
        for prefix in ("historical_purchases/", "returns/", "customers/")
        for obj in store.list_objects(prefix)
    }
    local = isinstance(store, LocalStore)  # listed with mtime and size, which a rewrite may keep: hash the bytes
    now = {
        key: content_version(store.root / key, tick.cached, tick.hashes) if local else version
        for key, version in listed.items()
    }
    change, skipped = planning.Change(), []
    for key in sorted(set(now) | set(seen)):
        if key in now and seen.get(key) in (now[key], listed[key]):  # older releases stored the listed version
            continue
        what = f"s3/{key} ({'removed' if key not in now else 'rewritten' if key in seen else 'new'})"
        if key.startswith("customers/"):
            if key.endswith(".csv"):
                change.add(customers.key, what, now.get(key, "removed"))
                change.whole_history = True
        elif (dated := dated_file(key)) is not None:
            export, day = dated
            asset = historical_purchases if export == "historical_purchases" else s3_returns
            change.add(asset.key, what, now.get(key, "removed"), (day, day))
        else:
            skipped.append(key)
    if skipped:
        context.log.warning(f"skipped files not named historical_purchases/ or returns/YYYY-MM-DD.csv: {skipped}")
    if not change:
        return dg.SensorResult(
            skip_reason="no new files under historical_purchases/, returns/ or customers/",
            cursor=tick.cursor(now),
        )
    return _plan(context, change, tick, now, warehouse, rules)
