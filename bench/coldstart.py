"""Cold start: what a new Lambda container pays before its handler runs, and what it loads.

Each measurement is a fresh interpreter with the prod stage's environment (.chalice/config.json,
tracing on, as deployed) timing the imports its function does before handling its first event:
the API handler imports `app`; the stream worker imports `app` and then the launch path
(`chalicelib.worker`, which brings openstacksdk), as its handler does on the first event.
The package is chalice's own deployment.zip for stage prod (`python -m infra package`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

FUNCTIONS = {
    "api": "import app",
    "worker": "import app\nfrom chalicelib import worker",
    "sweeper": "import app\nfrom chalicelib import sweeper",
}

_PROBE = """
import time
started = time.perf_counter()
{imports}
print(time.perf_counter() - started)
"""


def stage_environment(stage: str = "prod") -> dict[str, str]:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMS_", "AWS_"))}
    env.update(config.get("environment_variables", {}))
    env.update(config["stages"][stage].get("environment_variables", {}))
    env.update(
        AWS_LAMBDA_FUNCTION_NAME=f"openmultistack-{stage}",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="cold",
        AWS_SECRET_ACCESS_KEY="cold",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def import_seconds(function: str, runs: int) -> list[float]:
    """Seconds the function's imports take in `runs` fresh interpreters (bytecode already cached,
    as in a deployment package)."""
    env = stage_environment()
    code = _PROBE.format(imports=FUNCTIONS[function])
    times = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return times


def package_size(out: Path) -> dict[str, Any]:
    """Build stage prod's deployment package and measure it."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "infra", "package", str(out)],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    archive = out / "deployment.zip"
    with zipfile.ZipFile(archive) as zipped:
        infos = zipped.infolist()
    return {
        "zip_bytes": archive.stat().st_size,
        "unzipped_bytes": sum(i.file_size for i in infos),
        "files": len(infos),
        "build_seconds": round(time.monotonic() - started, 1),
    }
