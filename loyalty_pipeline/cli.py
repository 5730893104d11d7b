"""`loyalty-pipeline`: materialize every asset over a range of days, look up a customer, or serve the 360 app.

Only `materialize` imports Dagster: a lookup and the app start without it.
"""

import argparse
import json
import os
import sys
from datetime import date


def materialize(args: argparse.Namespace) -> int:
    from loyalty_pipeline.defs.runs import materialize

    return materialize(args)


def profile(args: argparse.Namespace) -> int:
    """Prints one customer's card (360 profile, points, ledger, journeys, recommendations) from the serving copy.
    An identifier that finds several people (a name two accounts carry) prints them, one a line, and exits 1."""
    from loyalty_pipeline.serve.serving import Ambiguous, NotPublished, ServingCopy, serving_path, warehouse_path

    env = dict(os.environ, **({"LOYALTY_WAREHOUSE": args.warehouse} if args.warehouse else {}))
    copy = ServingCopy(serving_path(warehouse_path(env)))
    try:
        card = copy.card(args.user_id)
    except NotPublished as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Ambiguous as error:
        candidates = [f"  {p['user_id']}  {p['email'] or '-'}  {p['name'] or '-'}" for p in error.candidates]
        print(f"error: {error}", *candidates, sep="\n", file=sys.stderr)
        return 1
    if card is None:
        print(f"error: no customer with id {args.user_id!r} in {copy.path}", file=sys.stderr)
        return 1
    print(json.dumps(json.loads(card), indent=2, ensure_ascii=False))
    return 0


def serve(args: argparse.Namespace) -> int:
    from loyalty_pipeline.serve.app import run

    return run(args.host, args.port, args.warehouse)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loyalty-pipeline", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("materialize", help="materialize every asset for a range of days")
    run.add_argument("--data-dir", help="inputs folder (default: $LOYALTY_DATA_DIR or data)")
    run.add_argument("--warehouse", help="DuckDB file (default: $LOYALTY_WAREHOUSE or <data dir>/warehouse.duckdb)")
    run.add_argument("--from", dest="start", type=_day, help="first day, YYYY-MM-DD (default: first event day)")
    run.add_argument("--to", dest="end", type=_day, help="last day, YYYY-MM-DD (default: last event day)")
    run.add_argument(
        "--rebuild",
        action="store_true",
        help="rebuild the lifetime tables, balances, 360, recommendations and serving store whole, not only for the "
        "people the run touched",
    )
    lookup = commands.add_parser("profile", help="print a customer's card (360 profile, points, journeys) as JSON")
    lookup.add_argument("user_id", help="any identifier the id graph knows: account id, key, email, card, phone, name")
    lookup.add_argument("--warehouse", help="DuckDB file whose serving copy to read (default: $LOYALTY_WAREHOUSE)")
    app = commands.add_parser("serve", help="serve the customer 360 page and API from the serving copy")
    app.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need a token)")
    app.add_argument("--port", type=int, default=8050)
    app.add_argument("--warehouse", help="DuckDB file whose serving copy to read (default: $LOYALTY_WAREHOUSE)")
    args = parser.parse_args(argv)
    return {"materialize": materialize, "profile": profile, "serve": serve}[args.command](args)


def _day(text: str) -> str:
    return date.fromisoformat(text).isoformat()


if __name__ == "__main__":
    sys.exit(main())
