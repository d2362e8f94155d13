"""Run the local stack until Ctrl-C.

    python -m local            # moto + API + stream pump + scheduler on 127.0.0.1
    python -m local --demo     # ... plus the OpenStack simulator with six providers and a warm pool
    python -m local --moto-only   # moto with the tables and admin key only, for `chalice local --stage local`

Settings come from the environment (see README: OMS_PORT, OMS_STATE_DIR, OMS_SWEEP_SECONDS,
OMS_BOOTSTRAP_ADMIN_KEY, ...).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local",
        description="Run OpenMultiStack's local stack (moto, the API, the stream pump and the scheduler) "
        "on 127.0.0.1 until Ctrl-C. Configure it with OMS_* environment variables (see README).",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="also run the OpenStack simulator (on OMS_SIM_PORT, default OMS_PORT+2) with providers "
        "demo-p1..demo-p6 registered (20 instances each, demo-p6 in maintenance), all offering label ubuntu-small, "
        "and a warm pool keeping 10 of it booted",
    )
    parser.add_argument(
        "--moto-only",
        action="store_true",
        help="run only moto (DynamoDB and Secrets Manager on OMS_MOTO_PORT, default OMS_PORT+1) with the tables "
        "and the admin key, for `chalice local --stage local` to serve the API on; no stream pump or scheduler, "
        "so requests wait in PENDING",
    )
    args = parser.parse_args(argv)
    if args.moto_only and args.demo:
        parser.error("--moto-only and --demo exclude each other")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for chatty in ("botocore", "pynamodb", "urllib3"):
        logging.getLogger(chatty).setLevel(logging.WARNING)

    from chalicelib.settings import settings
    from local.stack import LocalStack

    stack = LocalStack(settings)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.moto_only:
        stack.start_backend()
        print(f"moto (DynamoDB, Secrets Manager) is running at {stack.moto_url}", flush=True)
        print("serve the API on it with: .venv/bin/chalice local --stage local", flush=True)
        print(f"admin key: {stack.admin_key}", flush=True)
        print(f"state folder: {stack.state_dir.resolve()} (Ctrl-C stops it)", flush=True)
        stop.wait()
        print("stopping...", flush=True)
        stack.stop()
        return 0
    simulator = None
    if args.demo:
        from local import demo

        simulator = demo.start_simulator(settings.host, settings.sim_port)
    stack.start()
    if simulator is not None:
        names = demo.register_providers(simulator)
        print(
            f"simulated OpenStack at {simulator.base_url}: providers {', '.join(names)} offer label {demo.LABEL} "
            f"(20 each; demo-{demo.IN_MAINTENANCE} is in maintenance)"
        )
        print(f"warm pool: {demo.keep_warm_pool()} x {demo.LABEL} kept booted (oms pools list)")
    print(f"OpenMultiStack is running at {stack.url}", flush=True)
    print(f"admin key: {stack.admin_key}", flush=True)
    print(f"state folder: {stack.state_dir.resolve()} (Ctrl-C stops everything)", flush=True)
    stop.wait()
    print("stopping...", flush=True)
    stack.stop()
    if simulator is not None:
        simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
