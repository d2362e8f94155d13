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


@functools.cache
def client(service: str) -> Any:
    return boto3.session.Session().client(
        service, region_name=settings.region, endpoint_url=settings.aws_endpoint, config=_CONFIG
    )
