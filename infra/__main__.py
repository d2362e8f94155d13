"""python -m infra package [--stage prod] OUT   |   python -m infra admin-key [--stage prod] --name NAME

`package` writes OUT/deployment.zip and OUT/sam.json: chalice's SAM template with
infra/template.py's resources merged in (tables, role, queue, alarms, tracing, throttling).
`admin-key` registers an admin key in a deployed stage's keys table, with your AWS credentials.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _stage_environment(stage: str) -> None:
    # chalicelib reads its settings once, at import: name the stage's tables and real AWS first.
    os.environ["OMS_DEPLOYMENT"] = stage
    os.environ["OMS_AWS_ENDPOINT"] = ""
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def package(stage: str, out: Path) -> Path:
    from infra.template import merge_template

    out.mkdir(parents=True, exist_ok=True)
    merge = out / "merge.json"
    merge.write_text(json.dumps(merge_template(), indent=1))
    chalice = Path(sys.executable).parent / "chalice"
    subprocess.run(
        [str(chalice), "package", "--stage", stage, "--merge-template", str(merge), str(out)],
        cwd=ROOT,
        check=True,
    )
    return out / "sam.json"


def admin_key(name: str) -> str:
    from chalicelib import auth

    _, key = auth.create_key(name, auth.ADMIN)
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack = commands.add_parser("package", help="write deployment.zip and the merged sam.json")
    pack.add_argument("out", type=Path)
    pack.add_argument("--stage", default="prod")
    key = commands.add_parser("admin-key", help="register an admin key in a deployed stage (prints it once)")
    key.add_argument("--name", required=True)
    key.add_argument("--stage", default="prod")
    args = parser.parse_args(argv)
    _stage_environment(args.stage)
    if args.command == "package":
        print(f"packaged: {package(args.stage, args.out)}")
    else:
        print(admin_key(args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
