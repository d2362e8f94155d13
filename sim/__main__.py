"""Command line entry point: ``python -m sim --port PORT --providers N`` (or ``--config FILE``).

Prints one ``sim ready <base-url>`` line once it accepts requests, then serves until
SIGINT/SIGTERM so a parent process can start it, read that line and terminate it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from sim.config import ConfigError, SimConfig, default_config, load_config
from sim.server import SimServer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--providers", type=int, default=3, help="number of providers p1..pN")
    parser.add_argument("--quota", type=int, default=20, help="instance quota per provider (-1: unlimited)")
    parser.add_argument("--boot-seconds", type=float, default=2.0, help="seconds a server stays in BUILD")
    parser.add_argument(
        "--network-layout", default="public", help="public, floating, multi or ipv6 (see sim/README.md)"
    )
    parser.add_argument("--ssh-port", type=int, default=22, help="port of each server's simulated sshd")
    parser.add_argument("--ready-seconds", type=float, default=0.0, help="seconds from ACTIVE until sshd answers")
    parser.add_argument("--seed", type=int, default=None, help="seed for ids and error_rate decisions")
    parser.add_argument("--config", help="scenario YAML; replaces --providers/--quota/--boot-seconds")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> SimConfig:
    if args.config:
        return load_config(args.config, seed=args.seed)
    settings = {"ssh_port": args.ssh_port, "ready_seconds": args.ready_seconds}
    return default_config(args.providers, args.quota, args.boot_seconds, args.seed or 0, args.network_layout, settings)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = build_config(args)
    except ConfigError as exc:
        print(f"sim: {exc}", file=sys.stderr)
        return 2
    server = SimServer(config, verbose=args.verbose)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        url = server.start(args.host, args.port)
    except OSError as exc:
        print(f"sim: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    print(f"sim ready {url}", flush=True)
    # Waiting with a timeout keeps the main thread responsive to signals.
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
