"""Lazy boto3 clients: a cold start pays only for the clients it uses; tests point them at moto."""

from __future__ import annotations

import functools
import logging
from typing import Any

import boto3
from botocore.config import Config

from chalicelib.settings import settings

# botocore logs whole request and response bodies at DEBUG, Secrets Manager values included:
# however verbose the rest of the logging is set, its loggers never go below INFO.
for _name in ("botocore", "boto3"):
    _logger = logging.getLogger(_name)
    _logger.setLevel(max(_logger.getEffectiveLevel(), logging.INFO))

# Many threads share a client (parallel launches, health checks): give them connections.
_CONFIG = Config(
    connect_timeout=5, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=128
)


# Where DynamoDB and Secrets Manager answer: settings' endpoint, unless `point_at` moved it.
_endpoint = [settings.aws_endpoint]


@functools.cache
def client(service: str) -> Any:
    return boto3.session.Session().client(
        service, region_name=settings.region, endpoint_url=_endpoint[0], config=_CONFIG
    )


def point_at(endpoint: str | None) -> None:
    """Send the models' and the clients' calls to `endpoint` from now on (None: AWS's own, which is
    where moto in-process answers). Tests of the API in-process use it; nothing deployed does."""
    from chalicelib import credentials, models

    _endpoint[0] = endpoint
    client.cache_clear()
    credentials.cursor_key.cache_clear()  # that store's own
    credentials.callback_key.cache_clear()
    for model in models.MODELS:
        model.Meta.host = endpoint
        model._connection = None  # pynamodb builds it again, for the new host, at the next call
