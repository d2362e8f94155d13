"""Provider credentials in Secrets Manager. DynamoDB keeps only the secret's ARN and version.

Each provider has one secret; rotating its credentials adds a version, and the provider item
records which version is current, so an old version stops being used the moment PATCH returns.
"""

from __future__ import annotations

import base64
import functools
import json
import secrets

from botocore.exceptions import ClientError

from chalicelib import aws
from chalicelib.settings import settings


def secret_name(provider: str) -> str:
    return f"{settings.secrets_prefix}providers/{provider}"


def store(provider: str, secret: dict[str, str]) -> tuple[str, str]:
    """Create or update the provider's secret; returns (arn, version_id) of the new version."""
    client = aws.client("secretsmanager")
    body = json.dumps(secret)
    try:
        created = client.create_secret(
            Name=secret_name(provider),
            SecretString=body,
            Description=f"OpenMultiStack provider {provider} credentials",
            Tags=[{"Key": "oms:deployment", "Value": settings.deployment}],
        )
        return created["ARN"], created["VersionId"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceExistsException":
            raise
    updated = client.put_secret_value(SecretId=secret_name(provider), SecretString=body)
    return updated["ARN"], updated["VersionId"]


# Secrets are addressed by name: the name is ours and stable, while the ARN carries a random
# suffix that changes if the secret is ever re-created (as when the local stack rebuilds state).


def load(provider: str, version: str) -> dict[str, str]:
    """The secret at exactly `version` (never 'latest': rotation is atomic with the provider item)."""
    value = aws.client("secretsmanager").get_secret_value(SecretId=secret_name(provider), VersionId=version)
    return json.loads(value["SecretString"])


def delete(provider: str) -> None:
    try:
        aws.client("secretsmanager").delete_secret(SecretId=secret_name(provider), ForceDeleteWithoutRecovery=True)
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise


def cursor_key_name() -> str:
    return f"{settings.secrets_prefix}cursor-key"


def callback_key_name() -> str:
    return f"{settings.secrets_prefix}callback-key"


@functools.cache
def cursor_key() -> bytes:
    """The key that signs list cursors."""
    return _deployment_key(cursor_key_name(), "OpenMultiStack: signs list cursors")


@functools.cache
def callback_key() -> bytes:
    """The key each API key's callback secret is derived from (callbacks.secret_for)."""
    return _deployment_key(callback_key_name(), "OpenMultiStack: derives callback signing secrets")


def _deployment_key(name: str, description: str) -> bytes:
    """A key of this deployment's, made on first use and read once per process. Two processes
    making it at once agree on the one that was stored first."""
    client = aws.client("secretsmanager")
    try:
        return base64.b64decode(client.get_secret_value(SecretId=name)["SecretString"])
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    try:
        client.create_secret(
            Name=name,
            SecretString=base64.b64encode(secrets.token_bytes(32)).decode(),
            Description=description,
            Tags=[{"Key": "oms:deployment", "Value": settings.deployment}],
        )
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceExistsException":
            raise
    return base64.b64decode(client.get_secret_value(SecretId=name)["SecretString"])
