"""Lookups under load (issue 16; run by `make bench` after the pipeline, or alone on a materialized warehouse).

    python bench/app_load.py --warehouse W --data-dir D [--clients 20] [--seconds 30] [--out FILE]

Starts `loyalty-pipeline serve` on a free loopback port, then, while `loyalty-pipeline materialize` rebuilds the
warehouse's last day (and publishes it to the serving store), runs `--clients` keep-alive HTTP/1.1 clients for
`--seconds` against GET /api/customers/{id} on random ids of the serving store. The clients run in this process
(asyncio), apart from the server's. Reports p50/p99 latency, lookups per second, errors, and the copies seen.
"""

import argparse
import asyncio
import json
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from loyalty_pipeline.serve.serving import serving_path  # noqa: E402

CLI = Path(sys.executable).parent / "loyalty-pipeline"


async def _client(port: int, ids: list[str], deadline: float, latencies: list[float], failures: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rng = random.Random()
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        writer.write(f"GET /api/customers/{quote(rng.choice(ids))} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        if status != 200:
            failures.append(f"{status} {body[:200].decode(errors='replace')}")
    writer.close()


async def _load(port: int, ids: list[str], clients: int, seconds: float) -> tuple[list[float], list[str]]:
    latencies, failures = [], []
    deadline = time.perf_counter() + seconds
    await asyncio.gather(*(_client(port, ids, deadline, latencies, failures) for _ in range(clients)))
    return latencies, failures


def _published_at(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"GET /api/version HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return json.loads(answer.split(b"\r\n\r\n", 1)[1]).get("published_at", "")


def measure(warehouse: Path, data_dir: Path, clients: int, seconds: float, logs: Path) -> dict:
    copy = serving_path(str(warehouse))
    conn = sqlite3.connect(copy.absolute().as_uri() + "?mode=ro", uri=True)
    ids = [row[0] for row in conn.execute("SELECT user_id FROM cards ORDER BY random() LIMIT 20000").fetchall()]
    last_day = conn.execute("SELECT as_of FROM info").fetchall()[0][0]
    conn.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "app_server.log", "w") as server_log, open(logs / "app_writer.log", "w") as writer_log:
        server = subprocess.Popen(
            [str(CLI), "serve", "--port", str(port), "--warehouse", str(warehouse)],
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        try:
            for _ in range(200):
                try:
                    before = _published_at(port)
                    break
                except OSError:
                    time.sleep(0.05)
            writer = subprocess.Popen(
                [str(CLI), "materialize", "--data-dir", str(data_dir), "--warehouse", str(warehouse)]
                + ["--from", last_day, "--to", last_day],
                stdout=writer_log,
                stderr=subprocess.STDOUT,
            )
            latencies, failures = asyncio.run(_load(port, ids, clients, seconds))
            writer_running_at_end = writer.poll() is None
            writer.wait()
            after = _published_at(port)
        finally:
            server.terminate()
            server.wait()
    latencies.sort()
    return {
        "clients": clients,
        "seconds": seconds,
        "lookups": len(latencies),
        "lookups_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(statistics.median(latencies) * 1e3, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1e3, 2),
        "max_ms": round(latencies[-1] * 1e3, 2),
        "errors": len(failures),
        "first_errors": failures[:3],
        "writer_exit_code": writer.returncode,
        "writer_ran_the_whole_time": writer_running_at_end,
        "copy_published_during_the_load": before != after,
        "goals": {"p99_ms_at_most": 50, "lookups_per_s_at_least": 500, "errors": 0},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = measure(args.warehouse, args.data_dir, args.clients, args.seconds, args.warehouse.parent / "logs")
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
