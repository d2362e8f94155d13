"""How fast the local stack's DynamoDB (moto) is on this machine: the ceiling under S1 and S2.

    python -m bench.store --out store.json

A fresh moto server with our tables; 16 threads make the writes a launch makes (an instance's
conditional state transition, pynamodb as the app uses it) and the reads a watcher makes (a
query of 20 instances on the provider/state index). Reports operations per second and the CPU
seconds moto spent per operation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.run import configure, cpu_seconds, emit

THREADS = 16


def measure(count: int = 400) -> dict[str, Any]:
    configure(Path(tempfile.mkdtemp(prefix="oms-store-")))
    from chalicelib import lifecycle, models, timeutil
    from chalicelib.settings import settings
    from local.stack import LocalStack, _aws_defaults
    from local.statefiles import ensure_dir

    stack = LocalStack(settings)
    _aws_defaults()
    ensure_dir(stack.state_dir)
    stack._start_moto()
    try:
        models.ensure_tables()
        now = timeutil.now_iso()
        instances = [
            models.Instance(
                id=f"i-{uuid.uuid4().hex}",
                request_id="r-store",
                owner="bench",
                name=f"store-{n:04d}",
                label="bench",
                created_at=now,
                expires_at=now,
            )
            for n in range(count)
        ]
        with models.Instance.batch_write() as batch:
            for instance in instances:
                batch.save(instance)

        def claim(instance: models.Instance) -> bool:
            return lifecycle.claim(instance, f"p{hash(instance.id) % (count // 20)}")

        def query(n: int) -> int:
            return len(
                list(models.Instance.by_provider_state.query(f"p{n}", models.Instance.state == models.LAUNCHING))
            )

        out = {}
        with ThreadPoolExecutor(THREADS) as pool:
            for name, function, items in (("update", claim, instances), ("query", query, range(count // 20))):
                moto_before = cpu_seconds(stack._moto.pid)
                started = time.perf_counter()
                done = list(pool.map(function, items))
                seconds = time.perf_counter() - started
                moto = cpu_seconds(stack._moto.pid) - moto_before
                out[name] = {
                    "operations": len(done),
                    "per_second": round(len(done) / seconds, 1),
                    "moto_cpu_ms": round(1000 * moto / len(done), 2),
                }
        out["query"]["items_each"] = 20
        return out
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    emit(measure(), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
