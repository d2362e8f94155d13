"""Lazy boto3 clients: a cold start pays only for the clients it uses; tests point them at moto."""

from __future__ import annotations

import functools
from typing import Any

import boto3
from botocore.config import Config

from chalicelib.settings import settings

# Many threads share a client (parallel launches, health checks): give them connections.
_CONFIG = Config(
    connect_timeout=5, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=64
)


@functools.cache
def client(service: str) -> Any:
    return boto3.session.Session().client(
        service, region_name=settings.region, endpoint_url=settings.aws_endpoint, config=_CONFIG
    )
