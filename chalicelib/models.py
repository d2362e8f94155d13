"""The data model: pynamodb declarations and their indexes.

Invariants live in write conditions, not in checks before writes: an instance's state changes are
written by `lifecycle` only, each conditioned on the state and claim its writer saw; a provider's
slots by `slots`, conditioned on its cap.
"""

from __future__ import annotations

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.constants import PAY_PER_REQUEST_BILLING_MODE, STREAM_NEW_AND_OLD_IMAGE
from pynamodb.exceptions import DeleteError, PutError, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.settings import settings

# Instance states (API.md). LIVE ones may hold a server or a slot, or are on their way to one.
PENDING, LAUNCHING, BUILDING, ACTIVE = "PENDING", "LAUNCHING", "BUILDING", "ACTIVE"
DELETING, DELETED, FAILED = "DELETING", "DELETED", "FAILED"
STATES = (PENDING, LAUNCHING, BUILDING, ACTIVE, DELETING, DELETED, FAILED)
LIVE_STATES = (PENDING, LAUNCHING, BUILDING, ACTIVE, DELETING)
ON_THE_WAY = (PENDING, LAUNCHING, BUILDING)
TERMINAL_STATES = (DELETED, FAILED)
# States in which an instance holds a slot on its provider (counted in the provider's `in_use`).
HOLDING = (LAUNCHING, BUILDING, ACTIVE, DELETING)

# The account's resources a check reads a room of (quota.py), by the name the views give them.
QUOTA_RESOURCES = ("instances", "cores", "ram_mb", "floating_ips", "ports")

# Provider health (the circuit breaker's view, DESIGN.md): never checked, answering, failing
# some launches, circuit open.
UNKNOWN_HEALTH, HEALTHY, DEGRADED, DOWN = "unknown", "healthy", "degraded", "down"
HEALTH_STATES = (UNKNOWN_HEALTH, HEALTHY, DEGRADED, DOWN)

# Creates under way at once at one provider when its item does not say (nodepool's Rackspace
# regions run at 5; our creates are single POSTs).
DEFAULT_CONCURRENT_CREATES = 8

# Boot and ready times kept per provider (the most recent ones).
BOOT_SAMPLES = 50


class _Meta:
    region = settings.region
    host = settings.aws_endpoint
    billing_mode = PAY_PER_REQUEST_BILLING_MODE
    connect_timeout_seconds = 5
    read_timeout_seconds = 10
    # The local stack runs every function in one process: launches, teardowns, sweeps and watchers
    # together can use more than a hundred threads, and a full pool only drops connections noisily.
    max_pool_connections = 128


def _index(name: str) -> type:
    class Meta:
        index_name = name
        projection = AllProjection()

    return Meta


# A constant partition ("kind") gives an ordered listing of a whole table through a query:
# request paths never scan.
class ProvidersByKind(GlobalSecondaryIndex):
    Meta = _index("by_kind")
    kind = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute(range_key=True)


class Provider(Model):
    """One OpenStack account at one provider, in one region. Secrets live in Secrets Manager."""

    class Meta(_Meta):
        table_name = settings.providers_table

    name = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute(default="provider")
    auth_url = UnicodeAttribute()
    region = UnicodeAttribute(null=True)
    project_name = UnicodeAttribute(null=True)
    project_id = UnicodeAttribute(null=True)
    user_domain_name = UnicodeAttribute(null=True)
    project_domain_name = UnicodeAttribute(null=True)
    auth_type = UnicodeAttribute()
    username = UnicodeAttribute(null=True)
    application_credential_id = UnicodeAttribute(null=True)
    # A reference only: the secret's ARN and the version this provider uses.
    secret_arn = UnicodeAttribute()
    secret_version = UnicodeAttribute()
    interface = UnicodeAttribute(default="public")
    verify_tls = BooleanAttribute(default=True)
    max_instances = NumberAttribute()
    priority = NumberAttribute(default=100)
    enabled = BooleanAttribute(default=True)
    labels = MapAttribute(default=dict)
    # "auto": each instance gets a floating IP (from `floating_network`, else the first external one).
    floating_ip = UnicodeAttribute(default="never")  # addresses.FLOATING_IP_MODES
    floating_network = UnicodeAttribute(null=True)
    # A security group we ensure (tcp/22 and the labels' SSH ports open) and give every server.
    ssh_security_group = UnicodeAttribute(null=True)
    # Which family's address to SSH to when a server has both (addresses.FAMILIES).
    address_family = UnicodeAttribute(default="ipv4")
    # How long a launch there may take to be ready; None: the deployment's OMS_BOOT_TIMEOUT_SECONDS.
    boot_timeout_seconds = NumberAttribute(null=True)
    # False for clouds that refuse MIME multipart user data (ConoHa): userdata.compose avoids it.
    multipart_user_data = BooleanAttribute(default=True)
    # The rate governor (governor.py): HTTP requests a second at most (None: no limit), and creates
    # under way at once at most; both per process, with `rate_limited_until` shared by all.
    rate_limit_per_second = NumberAttribute(null=True)
    max_concurrent_creates = NumberAttribute(default=DEFAULT_CONCURRENT_CREATES)
    # Until when the account asked us to wait (a 429's Retry-After), in seconds since the epoch
    # with their fractions (a Retry-After of 1 s is no longer): every process waits it out.
    rate_limited_until = NumberAttribute(null=True)
    # What the last explicit check found wrong in the labels' settings for this account.
    setup_problems = ListAttribute(of=UnicodeAttribute, null=True)
    # Announced maintenance windows, [{start, end, note}] (maintenance.py): ended ones are dropped
    # whenever the list is written, and mean nothing meanwhile.
    maintenance = ListAttribute(null=True)
    # Slots held by instances of ours (reserved with a conditional `in_use < cap`).
    in_use = NumberAttribute(default=0)
    # Bumped with every change of `in_use`: the drift check's proof that no slot changed hands
    # between two sweeps.
    slot_changes = NumberAttribute(default=0)
    # The instances of ours the account takes, whichever quota runs out first (quota.py), and
    # each limited resource's room as the last check read it (what the views show).
    quota_instances = NumberAttribute(null=True)
    quota_rooms = MapAttribute(null=True)
    health_state = UnicodeAttribute(default=UNKNOWN_HEALTH)
    # When a health check last ran (what it proves: the API answers, or not).
    checked_at = UnicodeAttribute(null=True)
    # The last error seen there (a check's, a launch's, a build's) and when: kept as the record of
    # what went wrong last; `health_state` says whether it still holds.
    last_error = UnicodeAttribute(null=True)
    last_error_at = UnicodeAttribute(null=True)
    # Provider-wide failures in a row, checks and launches alike: the circuit's count and cooldown.
    consecutive_failures = NumberAttribute(default=0)
    # Launches that failed for the provider's fault since one last succeeded: only a launch (or a
    # passed canary) clears them, never a check, which proves only that the API answers.
    launch_failures = NumberAttribute(default=0)
    retry_at = UnicodeAttribute(null=True)
    # When a create last succeeded here: a provider without a recent one is on probation.
    last_launch_ok_at = UnicodeAttribute(null=True)
    # Builds here that ended in ERROR since one last came up ACTIVE: past a few, the provider is
    # on probation (one instance per launch pass) until a build succeeds again.
    build_failures = NumberAttribute(default=0)
    # Our servers there that no live instance claimed at the last sweep: deleted if seen again.
    leak_suspects = UnicodeSetAttribute(null=True)
    # "in_use:counted:slot_changes@first seen" when a sweep found `in_use` off the number of
    # instances holding slots; a sweep that finds the very same OMS_LAUNCH_STALE_SECONDS later, no
    # slot having changed hands, corrects it (a reserve or release in flight, or slots reserved and
    # not yet claimed, look like drift for a while).
    drift_seen = UnicodeAttribute(null=True)
    # The build watcher's lease: one watcher per provider at a time.
    watch_lease_until = UnicodeAttribute(null=True)
    # The last canary boot (canary.py): its steps so far while it runs, its result after. Held
    # by one runner at a time: `canary_until` is its lease, past which the sweeper ends it.
    canary = MapAttribute(null=True)
    canary_until = UnicodeAttribute(null=True)
    # A canary of this label every so many hours while the provider is idle (both or neither).
    canary_label = UnicodeAttribute(null=True)
    canary_every_hours = NumberAttribute(null=True)
    # Measured launches (the sweeper's, once per pass, from the instances that came up ACTIVE since
    # `samples_through`): seconds from the claim to ACTIVE (boot) and from the request to ACTIVE
    # (ready), the last BOOT_SAMPLES of each, oldest first. They feed the waiting instances' ETA.
    boot_samples = ListAttribute(of=NumberAttribute, null=True)
    ready_samples = ListAttribute(of=NumberAttribute, null=True)
    samples_through = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    by_kind = ProvidersByKind()

    def update(self, actions, condition=None, **kwargs):
        """Update this provider only if it still exists: a write racing its deletion (a sweep, a
        launch outcome) must not leave a stub item behind that blocks the name and breaks reads.
        A conditional failure is raised when the caller had a condition of its own (a deleted
        provider then simply fails it); without one, a provider that is gone has nothing to record.
        """
        exists = Provider.name.exists()
        try:
            return super().update(
                actions=actions, condition=exists if condition is None else condition & exists, **kwargs
            )
        except UpdateError as error:
            if condition is None and is_conditional_failure(error):
                return None
            raise

    @property
    def cap(self) -> int:
        """The most instances we may hold here: our own limit, lowered by the real quota."""
        if self.quota_instances is None:
            return int(self.max_instances)
        return max(0, min(int(self.max_instances), int(self.quota_instances)))

    @property
    def free(self) -> int:
        """Slots we may still take here, as read: the cap less what our instances hold."""
        return max(0, self.cap - int(self.in_use))

    @property
    def boot_timeout(self) -> int:
        """How long an instance here may take from its launch to ready: the provider's own boot
        timeout (regions whose builds take many minutes, or clouds that boot in seconds), else the
        deployment's (`OMS_BOOT_TIMEOUT_SECONDS`)."""
        return int(self.boot_timeout_seconds or settings.boot_timeout_seconds)


class RequestsByOwner(GlobalSecondaryIndex):
    Meta = _index("by_owner")
    owner = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


class RequestsByKind(GlobalSecondaryIndex):
    Meta = _index("by_kind")
    kind = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


# Sparse: only requests with a callback event pending carry `callback_queue`, so the sweeper's
# query costs what is due, not every request kept.
class RequestsByCallbackDue(GlobalSecondaryIndex):
    Meta = _index("by_callback_due")
    callback_queue = UnicodeAttribute(hash_key=True)
    callback_due_at = UnicodeAttribute(range_key=True)


CALLBACK_QUEUE = "due"


# Sparse: only scheduled requests not yet launched carry `schedule_queue` (schedule.py).
class RequestsBySchedule(GlobalSecondaryIndex):
    Meta = _index("by_schedule")
    schedule_queue = UnicodeAttribute(hash_key=True)
    start_at = UnicodeAttribute(range_key=True)


SCHEDULE_QUEUE = "due"


class Request(Model):
    """A group of instances of one label with one lifetime."""

    class Meta(_Meta):
        table_name = settings.requests_table

    id = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute(default="request")
    owner = UnicodeAttribute()
    label = UnicodeAttribute()
    count = NumberAttribute()
    lifetime_minutes = NumberAttribute()
    name_prefix = UnicodeAttribute()
    ssh_public_key = UnicodeAttribute(null=True)
    user_data = UnicodeAttribute(null=True)
    client_token = UnicodeAttribute(null=True)
    # Fingerprint of the body that created it, to tell a retry from a conflicting reuse.
    body_hash = UnicodeAttribute()
    created_at = UnicodeAttribute()
    expires_at = UnicodeAttribute()
    delete_requested = BooleanAttribute(default=False)
    # Where events about this request are POSTed (callbacks.py), and each event raised so far by
    # its id: {id, type, state (pending/delivered/failed), tries, next_try_at, last_error, body}.
    callback_url = UnicodeAttribute(null=True)
    callbacks = MapAttribute(null=True)
    # The earliest next_try_at of a pending event, and CALLBACK_QUEUE beside it; both absent when
    # none is pending (what the sweeper looks for, through the sparse by_callback_due index).
    callback_due_at = UnicodeAttribute(null=True)
    callback_queue = UnicodeAttribute(null=True)
    # A scheduled request (schedule.py): when its life starts (`expires_at` counts from it), when
    # the sweeper expects to launch it, and the forecast answered at creation ({status, reason,
    # capacity, needed}). Its instances are written only at launch: until then it carries
    # SCHEDULE_QUEUE in `schedule_queue` (the sparse by_schedule index the sweeper reads), and
    # `launched_at` is the launch's claim (a claim this old is stale, taken again by a later pass).
    start_at = UnicodeAttribute(null=True)
    launch_at = UnicodeAttribute(null=True)
    admission = MapAttribute(null=True)
    schedule_queue = UnicodeAttribute(null=True)
    launched_at = UnicodeAttribute(null=True)
    # Which warm pool instance each index of it takes ({"0": instance id, ...}; {} for none),
    # written once, conditionally, before any hand-over (pools.take): a retried or concurrent
    # launch of the request follows the same plan instead of taking a second set.
    pool_plan = MapAttribute(null=True)
    by_owner = RequestsByOwner()
    by_kind = RequestsByKind()
    by_callback_due = RequestsByCallbackDue()
    by_schedule = RequestsBySchedule()


class Attempt(MapAttribute):
    provider = UnicodeAttribute()
    error = UnicodeAttribute()
    message = UnicodeAttribute()
    at = UnicodeAttribute()
    # False when the provider was not at fault (our worker was interrupted): try it again.
    excludes = BooleanAttribute(default=True)


class IpAddress(MapAttribute):
    """One of a server's addresses, typed (addresses.Address)."""

    addr = UnicodeAttribute()
    version = NumberAttribute()
    type = UnicodeAttribute()
    network = UnicodeAttribute()


class InstancesByRequest(GlobalSecondaryIndex):
    Meta = _index("by_request")
    request_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute(range_key=True)


class InstancesByOwner(GlobalSecondaryIndex):
    Meta = _index("by_owner")
    owner = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


class InstancesByProviderState(GlobalSecondaryIndex):
    Meta = _index("by_provider_state")
    provider = UnicodeAttribute(hash_key=True)
    state = UnicodeAttribute(range_key=True)


class InstancesByStateExpiry(GlobalSecondaryIndex):
    Meta = _index("by_state_expires")
    state = UnicodeAttribute(hash_key=True)
    expires_at = UnicodeAttribute(range_key=True)


class InstancesByLabelState(GlobalSecondaryIndex):
    Meta = _index("by_label_state")
    label = UnicodeAttribute(hash_key=True)
    state = UnicodeAttribute(range_key=True)


class InstancesByKind(GlobalSecondaryIndex):
    Meta = _index("by_kind")
    kind = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


class Instance(Model):
    """One server we keep (or will keep) at some provider. Its state changes are the events."""

    class Meta(_Meta):
        table_name = settings.instances_table
        stream_view_type = STREAM_NEW_AND_OLD_IMAGE

    id = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute(default="instance")
    request_id = UnicodeAttribute()
    owner = UnicodeAttribute()
    name = UnicodeAttribute()
    label = UnicodeAttribute()
    state = UnicodeAttribute(default=PENDING)
    provider = UnicodeAttribute(null=True)
    server_id = UnicodeAttribute(null=True)
    addresses = MapAttribute(default=dict)  # {"ipv4": [...], "ipv6": [...]}
    # Every address, typed (fixed/floating, v4/v6, network), and the one to SSH to.
    ips = ListAttribute(of=IpAddress, null=True)
    access_ip = UnicodeAttribute(null=True)
    # The server's SSH host keys ("type base64"), read from its console once sshd answered.
    host_keys = ListAttribute(of=UnicodeAttribute, null=True)
    # The floating IP given to its server (provider floating_ip: auto), released with it.
    floating_ip_id = UnicodeAttribute(null=True)
    attempts = ListAttribute(of=Attempt, default=list)
    failure_reason = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    # When it last changed state (every transition sets it).
    state_changed_at = UnicodeAttribute(null=True)
    # When the current launch claimed it (LAUNCHING); a claim this old is stale.
    launched_at = UnicodeAttribute(null=True)
    # Touched to fire the stream again for a PENDING instance (a re-drive), state unchanged.
    redrive_at = UnicodeAttribute(null=True)
    active_at = UnicodeAttribute(null=True)
    expires_at = UnicodeAttribute()
    deleted_at = UnicodeAttribute(null=True)
    # When DynamoDB's TTL may drop the record of an ended (DELETED/FAILED) instance: epoch seconds.
    purge_at = NumberAttribute(null=True)
    # A delete that failed (DELETING): how often, and when the sweeper tries again (backoff).
    delete_failures = NumberAttribute(null=True)
    delete_retry_at = UnicodeAttribute(null=True)
    # A PENDING instance that found no provider: why (placement.WAITING_REASONS, set by the launch
    # pass that found none) and when it is expected to be ready (set by the sweeper from the slots'
    # expiries and the queue ahead of it). Each written only when it changes; a claim removes both.
    waiting_reason = UnicodeAttribute(null=True)
    waiting_eta = UnicodeAttribute(null=True)
    # When a request took it from its label's warm pool (pools.py): it was launched for the pool
    # (request_id POOL_PREFIX + label, owner POOL_OWNER) and handed over, already booted.
    pooled_at = UnicodeAttribute(null=True)
    by_request = InstancesByRequest()
    by_owner = InstancesByOwner()
    by_provider_state = InstancesByProviderState()
    by_state_expires = InstancesByStateExpiry()
    by_label_state = InstancesByLabelState()
    by_kind = InstancesByKind()


# A warm pool's instances are filed under this request id (its label after it) and owner until a
# request takes them: no request item exists for them, and no key can own them.
POOL_PREFIX = "pool:"
POOL_OWNER = "pool"


class PoolsByKind(GlobalSecondaryIndex):
    Meta = _index("by_kind")
    kind = UnicodeAttribute(hash_key=True)
    label = UnicodeAttribute(range_key=True)


class Pool(Model):
    """A label's warm pool (pools.py): how many instances to keep booted and idle, when."""

    class Meta(_Meta):
        table_name = settings.pools_table

    label = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute(default="pool")
    # Instances kept ready outside the schedule's windows (0: none).
    min_ready = NumberAttribute()
    # [{days: ["mon", ...], from: "HH:MM", to: "HH:MM", min_ready}] in `time_zone`: the first window
    # that holds now sets the number instead.
    schedule = ListAttribute(null=True)
    time_zone = UnicodeAttribute(default="UTC")
    # An idle instance is retired (and replaced) this long after it was launched: images stay fresh.
    max_idle_minutes = NumberAttribute()
    # The key pool instances boot with besides the label's: a request asking for this very key may
    # take them (one asking for another key, or for user data, may not: both are given at boot).
    ssh_public_key = UnicodeAttribute(null=True)
    # One refill at a time: the lease of whoever is adding instances.
    refill_until = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    by_kind = PoolsByKind()

    @property
    def request_id(self) -> str:
        return POOL_PREFIX + self.label


class ApiKeysByKind(GlobalSecondaryIndex):
    Meta = _index("by_kind")
    kind = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


class ApiKey(Model):
    """An API key, stored only as the SHA-256 of the key (keys are high-entropy, so no KDF)."""

    class Meta(_Meta):
        table_name = settings.keys_table

    id = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute(default="key")
    name = UnicodeAttribute()
    role = UnicodeAttribute()
    key_hash = UnicodeAttribute()
    created_at = UnicodeAttribute()
    by_kind = ApiKeysByKind()


MODELS: tuple[type[Model], ...] = (Provider, Request, Instance, ApiKey, Pool)


def ensure_tables() -> None:
    """Create any missing table (with its indexes and, for instances, its stream), and any index
    a table made by an older version lacks (a local stack's kept state); wait for them."""
    for model in MODELS:
        if not model.exists():
            model.create_table(wait=True)
        else:
            _add_missing_indexes(model)


def _add_missing_indexes(model: type[Model]) -> None:
    from chalicelib import aws

    dynamodb = aws.client("dynamodb")
    table = model.Meta.table_name
    found = dynamodb.describe_table(TableName=table)["Table"]
    have = {i["IndexName"] for i in found.get("GlobalSecondaryIndexes", [])}
    schema = model._get_schema()
    for index in schema["global_secondary_indexes"]:
        if index["index_name"] in have:
            continue
        names = {k["AttributeName"] for k in index["key_schema"]}
        dynamodb.update_table(
            TableName=table,
            AttributeDefinitions=[d for d in schema["attribute_definitions"] if d["AttributeName"] in names],
            GlobalSecondaryIndexUpdates=[
                {
                    "Create": {
                        "IndexName": index["index_name"],
                        "KeySchema": index["key_schema"],
                        "Projection": index["projection"],
                    }
                }
            ],
        )
        dynamodb.get_waiter("table_exists").wait(TableName=table)


def is_conditional_failure(error: Exception) -> bool:
    """True when a write lost its condition (someone else changed the item first)."""
    return isinstance(error, UpdateError | PutError | DeleteError) and (
        getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException"
    )
