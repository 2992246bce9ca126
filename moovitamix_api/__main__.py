"""Command line: ``python -m moovitamix_api --port 8000 --records 1000 --seed 42 [faults]``.

``--taste none`` (or ``MOOVITAMIX_STANDIN_TASTE=none``) serves listening with no taste structure:
every listen is a uniform draw over the catalogue. ``MOOVITAMIX_STANDIN_DAY`` sets the default of
``--day``. Both variables are read when the command line is parsed, so a parent process (such as
``python -m moovitamix_assets.cli run``) configures its stand-in through its environment.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import psutil
import uvicorn

from moovitamix_api.app import StandInState, create_app
from moovitamix_api.config import (
    DEFAULT_DUPLICATE_RATE,
    DEFAULT_TASTE,
    ENDPOINTS,
    FAULT_FIELDS,
    TASTE_ENV,
    TASTES,
    DataConfig,
    StandInConfig,
)
from moovitamix_api.data import Dataset
from moovitamix_api.server import HOST, READY_PREFIX, bind_socket, run_subprocess, uvicorn_config

DAY_ENV = "MOOVITAMIX_STANDIN_DAY"
_DEFAULTS = DataConfig()


def _fault_setting(text: str) -> tuple[str | None, str, Any]:
    """Parse ``[ENDPOINT:]NAME=JSON`` (e.g. ``users:slow_pages={"2": 10}``)."""
    name, _, raw = text.partition("=")
    endpoint, _, field = name.rpartition(":")
    if field not in FAULT_FIELDS:
        raise argparse.ArgumentTypeError(f"unknown fault {field!r}; one of {sorted(FAULT_FIELDS)}")
    if endpoint and endpoint not in ENDPOINTS:
        raise argparse.ArgumentTypeError(f"unknown endpoint {endpoint!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: value is not JSON") from exc
    return endpoint or None, field, value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m moovitamix_api", description=__doc__)
    parser.add_argument("--host", default=HOST, help="bind address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    data = parser.add_argument_group("data")
    data.add_argument("--records", type=int, default=1000, help="users and tracks per day")
    data.add_argument("--users", type=int, help="overrides --records for /users")
    data.add_argument("--tracks", type=int, help="overrides --records for /tracks")
    data.add_argument("--seed", type=int, default=42)
    data.add_argument(
        "--day",
        default=os.environ.get(DAY_ENV) or None,
        help=f"served day YYYY-MM-DD (default: ${DAY_ENV}, else today's UTC date)",
    )
    data.add_argument("--mean-listens", type=float, default=5.0)
    data.add_argument(
        "--taste",
        choices=sorted(TASTES),
        default=os.environ.get(TASTE_ENV) or DEFAULT_TASTE,
        help="structured: listens follow a genre, a scene and a Zipf popularity; none: every "
        "listen is a uniform draw over the catalogue, no genre preference "
        f"(default: ${TASTE_ENV}, else %(default)s)",
    )
    data.add_argument(
        "--favourite-share",
        type=float,
        help=f"share of listens from the listening genre (default {_DEFAULTS.favourite_share}; "
        "--taste none: 0)",
    )
    data.add_argument(
        "--taste-scenes",
        type=int,
        default=_DEFAULTS.taste_scenes,
        help="listening communities per genre, each with its own favourite tracks",
    )
    data.add_argument(
        "--declared-genre-share",
        type=float,
        default=_DEFAULTS.declared_genre_share,
        help="share of users whose declared favorite_genres is the genre they listen to",
    )
    data.add_argument(
        "--zipf-exponent",
        type=float,
        help=f"track popularity skew (default {_DEFAULTS.zipf_exponent}; --taste none: 0)",
    )
    data.add_argument("--user-churn", type=float, default=0.01, help="users replaced per day")
    data.add_argument("--track-churn", type=float, default=0.002, help="tracks replaced per day")
    data.add_argument("--change-rate", type=float, default=0.02, help="records modified per day")
    data.add_argument("--listen-null-rate", type=float, default=0.001)
    data.add_argument("--duplicate-rate", type=float, default=DEFAULT_DUPLICATE_RATE)
    faults = parser.add_argument_group("faults (every endpoint; --fault for one endpoint)")
    faults.add_argument("--error-rate", type=float, default=0.0, help="random 500/503 share")
    faults.add_argument("--fail-first-n", type=int, default=0)
    faults.add_argument("--rate-limit-first-n", type=int, default=0)
    faults.add_argument("--rate-limit-per-s", type=float, default=0.0)
    faults.add_argument("--retry-after-s", type=int, default=1)
    faults.add_argument("--latency-ms", type=float, default=0.0)
    faults.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_fault_setting,
        metavar="[ENDPOINT:]NAME=JSON",
        help="any FaultConfig field, e.g. --fault users:slow_pages='{\"2\": 10}'",
    )
    parser.add_argument(
        "--bench",
        type=int,
        metavar="PAGES",
        help="instead of serving: time PAGES pages in-process and over HTTP, print pages/s",
    )
    args = parser.parse_args(argv)
    if args.taste not in TASTES:  # from the environment, which argparse does not check
        parser.error(f"{TASTE_ENV}={args.taste!r}: expected one of {', '.join(sorted(TASTES))}")
    taste = TASTES[args.taste]
    for name, value in taste.items():
        if getattr(args, name) not in (None, value):
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag} contradicts --taste {args.taste}, which sets it")
    for name in ("favourite_share", "zipf_exponent"):
        if getattr(args, name) is None:
            setattr(args, name, taste.get(name, getattr(_DEFAULTS, name)))
    return args


def build_config(args: argparse.Namespace) -> StandInConfig:
    global_faults: dict[str, Any] = {
        "error_rate": args.error_rate,
        "fail_first_n": args.fail_first_n,
        "rate_limit_first_n": args.rate_limit_first_n,
        "rate_limit_per_s": args.rate_limit_per_s,
        "retry_after_s": args.retry_after_s,
        "latency_ms": args.latency_ms,
    }
    endpoint_faults: dict[str, dict[str, Any]] = {}
    for endpoint, field, value in args.fault:
        target = global_faults if endpoint is None else endpoint_faults.setdefault(endpoint, {})
        target[field] = value
    return StandInConfig.build(
        seed=args.seed,
        records=args.records,
        users=args.users,
        tracks=args.tracks,
        day=args.day,
        mean_listens=args.mean_listens,
        favourite_share=args.favourite_share,
        taste_scenes=args.taste_scenes,
        declared_genre_share=args.declared_genre_share,
        zipf_exponent=args.zipf_exponent,
        user_churn=args.user_churn,
        track_churn=args.track_churn,
        change_rate=args.change_rate,
        listen_null_rate=args.listen_null_rate,
        duplicate_rate=args.duplicate_rate,
        endpoint_faults=endpoint_faults,
        **global_faults,
    )


def bench(argv: Sequence[str], pages: int) -> None:
    """Print generation cost per page and pages/s served by one uvicorn worker (a subprocess)."""
    args = parse_args(argv)
    config = build_config(args)
    dataset = Dataset(config.data)
    n_pages = max(1, math.ceil(dataset.total("users") / 100))
    print(f"records={config.data.n_users} mean_listens={config.data.mean_listens}")
    for endpoint in ENDPOINTS:
        started = time.process_time()
        for i in range(pages):
            dataset.page(endpoint, 1 + (i * 7919) % n_pages, 100)
        cpu_ms = (time.process_time() - started) / pages * 1000
        print(f"in-process {endpoint:15s} {cpu_ms:6.2f} ms CPU per page of 100")
    child_args = [a for a in argv if not a.startswith("--bench")]
    if "--bench" in child_args:
        raise SystemExit("use --bench=PAGES")
    with run_subprocess([*child_args, "--port", "0"]) as process:
        server = psutil.Process(process.process.pid)
        host, port = process.base_url.removeprefix("http://").split(":")
        # http.client rather than requests: the client must cost less than the server it measures.
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        for endpoint in ENDPOINTS:
            cpu_before = sum(server.cpu_times()[:2])
            started = time.perf_counter()
            for i in range(pages):
                page = 1 + (i * 7919) % n_pages
                connection.request("GET", f"/{endpoint}?page={page}&size=100")
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    raise SystemExit(f"{endpoint} page {page}: HTTP {response.status}")
            rate = pages / (time.perf_counter() - started)
            cpu_ms = (sum(server.cpu_times()[:2]) - cpu_before) / pages * 1000
            print(
                f"http       {endpoint:15s} {rate:6.0f} pages/s (1 worker, 1 client, keep-alive), "
                f"server {cpu_ms:.2f} ms CPU per request = {1000 / cpu_ms:.0f} pages/s per core"
            )
        connection.close()


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.bench:
        bench(argv, args.bench)
        return
    config = build_config(args)
    sock = bind_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn_config(create_app(StandInState(config)), host, port))
    # run_subprocess waits for this exact line to learn the port.
    print(f"{READY_PREFIX}http://{host}:{port}", flush=True)
    server.run(sockets=[sock])
    sys.exit(0)


if __name__ == "__main__":
    main()
