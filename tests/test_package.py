"""The AWS deployment, built offline: `python -m infra package`, then cfn-lint on what it wrote."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from chalicelib import canary

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("package")
    done = subprocess.run(
        [sys.executable, "-m", "infra", "package", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def template(packaged) -> dict:
    return json.loads((packaged / "sam.json").read_text())


def actions(document) -> list[str]:
    found = []
    for statement in document["Statement"]:
        listed = statement["Action"]
        found += [listed] if isinstance(listed, str) else listed
    return found


def test_cfn_lint_finds_nothing(packaged):
    lint = Path(sys.executable).parent / "cfn-lint"
    done = subprocess.run([str(lint), str(packaged / "sam.json")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr  # no error, no warning, no note


def test_tables_are_the_models_with_billing_recovery_streams_and_ttl(template):
    from chalicelib import models

    resources = template["Resources"]
    for model in models.MODELS:
        table = resources[f"{model.__name__}Table"]["Properties"]
        assert table["TableName"] == f"oms-prod-{model.Meta.table_name.rsplit('-', 1)[1]}"
        assert table["BillingMode"] == "PAY_PER_REQUEST"
        assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        declared = {i["index_name"] for i in model._get_schema()["global_secondary_indexes"]}
        assert {i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])} == declared
    instances = resources["InstanceTable"]["Properties"]
    assert instances["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert instances["TimeToLiveSpecification"] == {"AttributeName": "purge_at", "Enabled": True}


def test_the_stream_source_reports_partial_failures_bisects_and_gives_up_into_a_queue(template):
    source = template["Resources"]["OnInstanceChange"]["Properties"]["Events"]["OnInstanceChangeDynamodbEventSource"]
    props = source["Properties"]
    assert props["Stream"] == {"Fn::GetAtt": ["InstanceTable", "StreamArn"]}  # not a literal ARN
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BisectBatchOnFunctionError"] is True
    assert 0 < props["MaximumRetryAttempts"] <= 10 and 0 < props["MaximumRecordAgeInSeconds"] <= 86400
    assert props["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["FailedStreamBatches", "Arn"]}
    assert template["Resources"]["FailedStreamBatches"]["Type"] == "AWS::SQS::Queue"
    sweep_events = template["Resources"]["Sweep"]["Properties"]["Events"]
    assert [e["Type"] for e in sweep_events.values()] == ["Schedule"]


def test_the_role_names_every_action_and_secrets_only_under_this_deployments_prefix(template):
    policies = template["Resources"]["DefaultRole"]["Properties"]["Policies"]
    statements = [s for p in policies for s in p["PolicyDocument"]["Statement"]]
    for name in actions({"Statement": statements}):
        assert "*" not in name, name
    secrets = next(s for s in statements if any(a.startswith("secretsmanager:") for a in actions({"Statement": [s]})))
    assert "secret:oms/prod/providers/*" in json.dumps(secrets["Resource"])
    wildcard_resources = [s["Sid"] for s in statements if s["Resource"] == "*"]
    assert wildcard_resources == ["Tracing"]  # X-Ray has no resource-level permissions


# What each call in the code needs of IAM (pynamodb's methods, and the boto3 clients' methods).
_NEEDS = {
    r"\.batch_write\(": "dynamodb:BatchWriteItem",
    r"\.batch_get\(": "dynamodb:BatchGetItem",
    r"\.query\(|\.count\(": "dynamodb:Query",
    r"\.get\(|\.refresh\(": "dynamodb:GetItem",
    r"\.save\(": "dynamodb:PutItem",
    r"\.update\(": "dynamodb:UpdateItem",
    r"\.delete\(\)": "dynamodb:DeleteItem",
    r"\.scan\(": "dynamodb:Scan",
    r"transact_write|TransactWrite": "dynamodb:TransactWriteItems",
    r"create_secret\(": "secretsmanager:CreateSecret",
    r"put_secret_value\(": "secretsmanager:PutSecretValue",
    r"get_secret_value\(": "secretsmanager:GetSecretValue",
    r"delete_secret\(": "secretsmanager:DeleteSecret",
    r"Tags=": "secretsmanager:TagResource",
    r'client\("lambda"\)\.invoke\(': "lambda:InvokeFunction",
}


def test_the_role_allows_every_call_the_code_makes(template):
    code = "\n".join(p.read_text() for p in (ROOT / "chalicelib").glob("*.py"))
    policies = template["Resources"]["DefaultRole"]["Properties"]["Policies"]
    allowed = set(actions({"Statement": [s for p in policies for s in p["PolicyDocument"]["Statement"]]}))
    needed = {action for pattern, action in _NEEDS.items() if re.search(pattern, code)}
    assert "dynamodb:BatchWriteItem" in needed and "dynamodb:Scan" not in needed  # the search works
    assert needed - allowed == set()


def test_tracing_throttling_and_alarms(template):
    resources = template["Resources"]
    functions = [k for k, v in resources.items() if v["Type"] == "AWS::Serverless::Function"]
    assert sorted(functions) == ["APIHandler", "BuildWatcher", "CanaryBoot", "OnInstanceChange", "PoolRefill", "Sweep"]
    for function in functions:
        assert resources[function]["Properties"]["Tracing"] == "Active"
        assert resources[function]["Properties"]["FunctionName"].startswith("openmultistack-prod-")
        assert resources[function]["Properties"]["Environment"]["Variables"]["OMS_TRACING"] == "on"
        assert resources[function]["Properties"]["Timeout"] >= 30
    assert resources["BuildWatcher"]["Properties"]["Timeout"] > 600  # it watches for up to 10 minutes
    assert resources["CanaryBoot"]["Properties"]["Timeout"] > canary.MAX_BOOT_SECONDS + canary.DELETE_WAIT_SECONDS
    api = resources["RestAPI"]["Properties"]
    assert api["TracingEnabled"] is True
    assert api["MethodSettings"][0]["ThrottlingRateLimit"] > 0
    alarms = {k: v["Properties"] for k, v in resources.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    watched = {(a["Namespace"], a["MetricName"]) for a in alarms.values()}
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible") in watched
    assert ("OpenMultiStack", "ProvidersDown") in watched
    assert {f"{f}ErrorsAlarm" for f in functions} <= set(alarms)
    assert all(a["AlarmActions"] == [{"Ref": "AlarmTopic"}] for a in alarms.values())  # someone is told


def test_the_deployment_package_holds_the_service_only(packaged):
    with zipfile.ZipFile(packaged / "deployment.zip") as archive:
        names = archive.namelist()
    assert "app.py" in names and "chalicelib/web/app.js" in names
    for never in ("oms_cli/", "sim/", "local/", "tests/", "infra/"):
        assert not any(n.startswith(never) for n in names), never
