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
    """The stage's settings, as its functions will have them: .chalice/config.json's variables
    (global, then the stage's), never stray OMS_* ones from this shell. chalicelib reads its
    settings once, at import, so this runs first."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    if stage not in config["stages"]:
        raise SystemExit(f"no stage {stage} in .chalice/config.json")
    for name in [n for n in os.environ if n.startswith("OMS_")]:
        del os.environ[name]
    os.environ.update(config.get("environment_variables", {}))
    os.environ.update(config["stages"][stage].get("environment_variables", {}))
    os.environ.setdefault("OMS_DEPLOYMENT", stage)
    os.environ["OMS_AWS_ENDPOINT"] = ""


def _region(fallback: str | None) -> None:
    # settings read the region from the environment only: take the AWS CLI's configured one.
    if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        import boto3

        region = boto3.session.Session().region_name or fallback
        if not region:
            raise SystemExit("no AWS region: set AWS_DEFAULT_REGION or `aws configure set region ...`")
        os.environ["AWS_DEFAULT_REGION"] = region


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
        _region("us-east-1")  # any region does: the template names none
        print(f"packaged: {package(args.stage, args.out)}")
    else:
        _region(None)
        print(admin_key(args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
