"""A journey as a table of nodes (docs/decisions.md, Journeys that decide): each stage, step, branch, variant and
exit a node, in pre-order, with its successor and what the move there waits for. The day's SQL (journeys.sql) moves
customers along it."""

import hashlib

from loyalty_pipeline.domain.config import (
    AbTestStep,
    ActivationStep,
    DecisionStep,
    Journey,
    JumpStep,
    WaitStep,
    WaitUntilStep,
)

NODE_COLUMNS = {  # journey_nodes: one row per node
    "journey_id": "VARCHAR",
    "node": "VARCHAR",
    "kind": "VARCHAR",  # stage step wait_until jump decision branch ab_test variant control exit goal end holdout
    "position": "INTEGER",  # pre-order: every move goes to a higher position
    "stage_index": "INTEGER",
    "next_node": "VARCHAR",  # the successor once complete (decisions and A/B tests choose theirs)
    "next_gate": "VARCHAR",  # the criterion the successor waits for (a stage's entry)
    "wait_days": "INTEGER",
    "max_days": "INTEGER",  # wait_until's, a decision's max_wait_days
    "activation": "VARCHAR",
    "criterion": "VARCHAR",  # where the node's criterion is written: a branch's when, wait_until
    "choice_of": "VARCHAR",  # a branch's (and no_branch's) decision, a variant's A/B test; 'entry': holdout or not
    "choice_order": "INTEGER",
    "bucket_from": "VARCHAR",  # a variant's range of buckets, as 4 hex digits (below: NULL to the end)
    "bucket_below": "VARCHAR",
    "salt": "VARCHAR",  # an A/B test's
}
BUCKETS = 65536  # an A/B test's or a holdout's bucket: the first 4 hex digits of an md5


def assignment_bucket(journey_id: str, step: str, person: str, salt: str) -> str:
    """What the SQL computes for an A/B test's step (or 'holdout'): md5(journey|step|person|salt)'s first 4 hex
    digits."""
    return hashlib.md5(f"{journey_id}|{step}|{person}|{salt}".encode()).hexdigest()[:4]


def bucket(percent: float) -> str:
    """The bucket at `percent` of the range, as the 4 lowercase hex digits the SQL compares."""
    return f"{int(BUCKETS * percent / 100):04x}"


def flatten(journey: Journey) -> tuple[list[dict], list[list], list]:
    """The journey's nodes, its exits (stage_index, order, node, criterion) and its rules row, for the SQL."""
    nodes, exits = [], []
    stages = journey.stages

    def add(name: str, kind: str, stage_index: int | None, **fields) -> None:
        nodes.append({"node": name, "kind": kind, "position": len(nodes), "stage_index": stage_index, **fields})

    def first_of(steps: list, prefix: str, after: tuple) -> tuple:
        return (f"{prefix}:step:1", None) if steps else after

    def add_steps(steps: list, prefix: str, path: str, i: int, after: tuple) -> None:
        """`after`: the (node, gate) the list continues to; `path` where the list is written in the rules."""
        for n, step in enumerate(steps, start=1):
            name, here = f"{prefix}:step:{n}", f"{path}[{n - 1}]"
            following = (f"{prefix}:step:{n + 1}", None) if n < len(steps) else after
            successor = {"next_node": following[0], "next_gate": following[1]}
            if isinstance(step, ActivationStep):
                add(name, "step", i, activation=step.activation, **successor)
            elif isinstance(step, WaitStep):
                add(name, "step", i, wait_days=step.wait_days, **successor)
            elif isinstance(step, WaitUntilStep):
                add(name, "wait_until", i, criterion=f"{here}.wait_until", max_days=step.max_days, **successor)
            elif isinstance(step, JumpStep):
                add(name, "jump", i, next_node=f"stage:{step.jump}")
            elif isinstance(step, DecisionStep):
                add(name, "decision", i, max_days=step.decision.max_wait_days)
                arms = _branches(step, here)
                add_arms(name, arms, i, following)
                add(f"{name}:no_branch", "exit", i, choice_of=name, choice_order=len(arms))
            elif isinstance(step, AbTestStep):
                add(name, "ab_test", i, salt=step.ab_test.salt)
                add_arms(name, _variants(step, here), i, following)

    def add_arms(step: str, arms: list[tuple], i: int, after: tuple) -> None:
        """A decision's branches or an A/B test's variants, each followed by its steps, then `after`."""
        for order, (suffix, kind, steps, path, fields) in enumerate(arms):
            node = f"{step}:{suffix}"
            target, gate = first_of(steps, node, after)
            add(node, kind, i, next_node=target, next_gate=gate, choice_of=step, choice_order=order, **fields)
            add_steps(steps, node, f"{path}.steps", i, after)

    # an entry's two arms, for a merge to keep the earlier: the holdout or the first stage
    add("holdout", "holdout", None, choice_of="entry", choice_order=1)
    for i, stage in enumerate(stages):
        following = stages[i + 1] if i + 1 < len(stages) else None
        after = (
            (f"stage:{following.id}", f"stages[{i + 1}].entry" if following.entry else None)
            if following
            else ("end", None)
        )
        target, gate = first_of(stage.steps, f"stage:{stage.id}", after)
        add(
            f"stage:{stage.id}",
            "stage",
            i,
            next_node=target,
            next_gate=gate,
            **({"choice_of": "entry", "choice_order": 0} if i == 0 else {}),
        )
        add_steps(stage.steps, f"stage:{stage.id}", f"stages[{i}].steps", i, after)
        for order, exit in enumerate(stage.exit_criteria):
            node = f"stage:{stage.id}:exit:{exit.name}"
            exits.append([i, order, node, f"stages[{i}].exit_criteria[{order}].when"])
            add(node, "exit", i)
    add("goal", "goal", None)
    add("end", "end", None)
    criteria = journey.criteria()
    for node in nodes:  # a node's criterion is one the journey's criteria() checked, by the same path
        assert all(node.get(key) in criteria for key in ("criterion", "next_gate") if node.get(key)), node
    rules = [
        f"stage:{stages[0].id}",
        journey.reentry,
        journey.after_days or 0,
        bucket(journey.holdout_pct),
        journey.salt,
    ]
    return nodes, exits, rules


def _branches(step: DecisionStep, path: str) -> list[tuple]:
    """(suffix, kind, steps, path, fields) of each branch, the else branch last."""
    decision = step.decision
    written = [(branch, f"{path}.decision.branches[{n}]") for n, branch in enumerate(decision.branches)]
    if decision.else_:
        written.append((decision.else_, f"{path}.decision.else"))
    return [
        (
            f"branch:{branch.name}",
            "branch",
            branch.steps,
            where,
            {"criterion": f"{where}.when" if branch.when else None},
        )
        for branch, where in written
    ]


def _variants(step: AbTestStep, path: str) -> list[tuple]:
    """(suffix, kind, steps, path, fields) of each variant, then the control, with their consecutive bucket ranges."""
    test, arms, start = step.ab_test, [], 0
    weighted = [(v.name, v.weight, v.steps, "variant") for v in test.variants]
    if test.control:
        weighted.append(("control", test.control, [], "control"))
    for n, (name, weight, steps, kind) in enumerate(weighted):
        end = start + weight
        ranges = {"bucket_from": bucket(start), "bucket_below": None if end == 100 else bucket(end)}
        arms.append((f"variant:{name}", kind, steps, f"{path}.ab_test.variants[{n}]", ranges))
        start = end
    return arms
