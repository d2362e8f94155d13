"""The CloudFormation that `chalice package` does not write, merged into its SAM template.

Tables come from the pynamodb models themselves (keys, indexes, stream), so the deployed schema
cannot drift from the code's. The rest: the stream's event source wired to the table's
StreamArn with partial batch failures, bisecting, bounded retries and an SQS dead end; one
least-privilege role; X-Ray on every function and the API stage; throttling; alarms.
"""

from __future__ import annotations

from typing import Any

from chalicelib import models
from chalicelib.settings import settings

METRICS_NAMESPACE = "OpenMultiStack"
# Chalice's logical ids for the functions app.py registers: their names once deployed (the
# code starts the build watcher and canary boots by name: settings.function_prefix + its Python
# name), their time limit and memory. The build watcher runs up to OMS_WATCH_BUDGET_SECONDS; a
# canary boot waits at most canary.MAX_BOOT_SECONDS for its server, then deletes it; a pool
# refill writes a few items; a stream
# batch may launch 100 instances; API Gateway gives up on a route after 29 s.
FUNCTIONS = {
    "APIHandler": ("api_handler", 30, 256),
    "OnInstanceChange": ("on_instance_change", 300, 512),
    "BuildWatcher": ("build_watcher", settings.watch_budget_seconds + 60, 512),
    "CanaryBoot": ("canary_boot", 900, 256),
    "PoolRefill": ("pool_refill", 60, 256),
    "Sweep": ("sweep", 120, 512),
}
STREAM_SOURCE = "OnInstanceChangeDynamodbEventSource"
ASYNC_FUNCTIONS = ("build_watcher", "canary_boot", "pool_refill")  # what invoke.invoke_async starts


def _logical(model: type) -> str:
    return f"{model.__name__}Table"


def table(model: type) -> dict:
    """A pay-per-request table with point-in-time recovery, from a pynamodb model."""
    schema = model._get_schema()
    hash_first = lambda keys: sorted(keys, key=lambda k: k["KeyType"] != "HASH")  # noqa: E731
    properties: dict[str, Any] = {
        "TableName": model.Meta.table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": schema["attribute_definitions"],
        "KeySchema": hash_first(schema["key_schema"]),
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "SSESpecification": {"SSEEnabled": True},
    }
    if schema["global_secondary_indexes"]:
        properties["GlobalSecondaryIndexes"] = [
            {"IndexName": i["index_name"], "KeySchema": hash_first(i["key_schema"]), "Projection": i["projection"]}
            for i in schema["global_secondary_indexes"]
        ]
    if getattr(model.Meta, "stream_view_type", None):
        properties["StreamSpecification"] = {"StreamViewType": model.Meta.stream_view_type}
    if model is models.Instance:
        # The record of a DELETED or FAILED instance goes OMS_KEEP_ENDED_DAYS after it ended.
        properties["TimeToLiveSpecification"] = {"AttributeName": models.Instance.purge_at.attr_name, "Enabled": True}
    return {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": properties,
    }


def _arn(service: str, resource: str) -> dict:
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{resource}"}


def role() -> dict:
    """The one role of every function: named actions on named resources only."""
    tables = [{"Fn::GetAtt": [_logical(m), "Arn"]} for m in models.MODELS]
    indexes = [{"Fn::Sub": f"${{{_logical(m)}.Arn}}/index/*"} for m in models.MODELS]
    statements = [
        {
            "Sid": "Tables",
            "Effect": "Allow",
            "Action": [
                "dynamodb:GetItem",
                "dynamodb:BatchGetItem",
                "dynamodb:BatchWriteItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
                "dynamodb:Query",
                "dynamodb:DescribeTable",
            ],
            "Resource": tables + indexes,
        },
        {
            "Sid": "InstancesStream",
            "Effect": "Allow",
            "Action": [
                "dynamodb:DescribeStream",
                "dynamodb:GetRecords",
                "dynamodb:GetShardIterator",
                "dynamodb:ListStreams",
            ],
            "Resource": {"Fn::GetAtt": [_logical(models.Instance), "StreamArn"]},
        },
        {
            "Sid": "ProviderSecrets",
            "Effect": "Allow",
            "Action": [
                "secretsmanager:CreateSecret",
                "secretsmanager:PutSecretValue",
                "secretsmanager:GetSecretValue",
                "secretsmanager:DeleteSecret",
                "secretsmanager:TagResource",
            ],
            # Only this deployment's secrets (the name's random suffix is the last six characters):
            # its providers' credentials and the key that signs list cursors.
            "Resource": [
                _arn("secretsmanager", f"secret:{settings.secrets_prefix}providers/*"),
                _arn("secretsmanager", f"secret:{settings.secrets_prefix}cursor-key-??????"),
                _arn("secretsmanager", f"secret:{settings.secrets_prefix}callback-key-??????"),
            ],
        },
        {
            "Sid": "StartAsyncFunctions",
            "Effect": "Allow",
            "Action": ["lambda:InvokeFunction"],
            "Resource": [_arn("lambda", f"function:{settings.function_prefix}{name}") for name in ASYNC_FUNCTIONS],
        },
        {
            "Sid": "FailedBatches",
            "Effect": "Allow",
            "Action": ["sqs:SendMessage"],
            "Resource": {"Fn::GetAtt": ["FailedStreamBatches", "Arn"]},
        },
        {
            "Sid": "Logs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": _arn("logs", f"log-group:/aws/lambda/{settings.function_prefix}*"),
        },
        {
            # X-Ray takes no resource-level permissions: these two actions, on any trace.
            "Sid": "Tracing",
            "Effect": "Allow",
            "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
            "Resource": "*",
        },
    ]
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
                ],
            },
            "Policies": [
                {"PolicyName": "openmultistack", "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}
            ],
        },
    }


def _alarm(description: str, metric: dict, threshold: float = 0, period: int = 60) -> dict:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": description,
            "AlarmActions": [{"Ref": "AlarmTopic"}],
            "OKActions": [{"Ref": "AlarmTopic"}],
            "ComparisonOperator": "GreaterThanThreshold",
            "EvaluationPeriods": 1,
            "Period": period,
            "Statistic": "Maximum",
            "Threshold": threshold,
            "TreatMissingData": "notBreaching",
            **metric,
        },
    }


def alarms() -> dict:
    found = {
        "FailedStreamBatchesAlarm": _alarm(
            "Stream batches gave up after their retries: instances may be stuck (see the queue)",
            {
                "Namespace": "AWS/SQS",
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["FailedStreamBatches", "QueueName"]}}],
            },
        ),
        "ProvidersDownAlarm": _alarm(
            "Provider accounts are down (health checks failing): launches go elsewhere",
            {
                "Namespace": METRICS_NAMESPACE,
                "MetricName": "ProvidersDown",
                "Dimensions": [{"Name": "deployment", "Value": settings.deployment}],
            },
            period=300,
        ),
    }
    for function in FUNCTIONS:
        found[f"{function}ErrorsAlarm"] = _alarm(
            f"{function} failed (unhandled errors)",
            {
                "Namespace": "AWS/Lambda",
                "MetricName": "Errors",
                "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": function}}],
                "Statistic": "Sum",
            },
            period=300,
        )
    return found


def merge_template() -> dict:
    """The fragment `chalice package --merge-template` merges into its SAM template."""
    resources: dict[str, Any] = {_logical(m): table(m) for m in models.MODELS}
    resources["DefaultRole"] = role()
    resources["FailedStreamBatches"] = {
        "Type": "AWS::SQS::Queue",
        "Properties": {"MessageRetentionPeriod": 1209600, "SqsManagedSseEnabled": True},
    }
    resources["OnInstanceChange"] = {
        "Properties": {
            "Events": {
                STREAM_SOURCE: {
                    "Type": "DynamoDB",
                    "Properties": {
                        "Stream": {"Fn::GetAtt": [_logical(models.Instance), "StreamArn"]},
                        "StartingPosition": "TRIM_HORIZON",
                        "BatchSize": 100,
                        "FunctionResponseTypes": ["ReportBatchItemFailures"],
                        "BisectBatchOnFunctionError": True,
                        "MaximumRetryAttempts": 5,
                        "MaximumRecordAgeInSeconds": 3600,
                        "DestinationConfig": {
                            "OnFailure": {"Type": "SQS", "Destination": {"Fn::GetAtt": ["FailedStreamBatches", "Arn"]}}
                        },
                    },
                }
            }
        }
    }
    resources["RestAPI"] = {
        "Properties": {
            "TracingEnabled": True,
            "MethodSettings": [
                {
                    "ResourcePath": "/*",
                    "HttpMethod": "*",
                    "ThrottlingBurstLimit": 100,
                    "ThrottlingRateLimit": 50,
                    "MetricsEnabled": True,
                }
            ],
        }
    }
    for function, (name, timeout, memory) in FUNCTIONS.items():
        properties = resources.setdefault(function, {}).setdefault("Properties", {})
        properties.update(
            Tracing="Active", FunctionName=f"{settings.function_prefix}{name}", Timeout=timeout, MemorySize=memory
        )
    # Every alarm tells this topic: subscribe to it (README) to be told.
    resources["AlarmTopic"] = {"Type": "AWS::SNS::Topic", "Properties": {"DisplayName": "OpenMultiStack alarms"}}
    resources.update(alarms())
    outputs = {"AlarmTopicArn": {"Value": {"Ref": "AlarmTopic"}}}
    return {"Resources": resources, "Outputs": outputs}
