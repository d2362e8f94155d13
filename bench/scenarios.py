"""The scenarios of issue 10, as simulator configurations plus what OpenMultiStack is told.

Providers are listed in the order the baseline script tries them; OpenMultiStack registers them
all with the same priority and cap.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

LABEL = "bench"
BOOT_SECONDS = 3.0
LATENCY_MS = 50.0
SSH_PORT = 2222  # the simulated sshd's port in `ready: ssh` scenarios (22 would need root)


@dataclass(frozen=True)
class Provider:
    name: str
    cap: int = 20
    sim: dict[str, Any] = field(default_factory=dict)  # simulator settings: quota, mode, error_rate...

    @property
    def fault(self) -> str:
        if self.sim.get("mode", "normal") != "normal":
            return self.sim["mode"]
        if self.sim.get("error_rate"):
            return f"error_rate {self.sim['error_rate']:g}"
        if self.sim.get("rate_limit_per_second"):
            return f"{self.sim['rate_limit_per_second']:g} requests/s, then 429"
        if "quota_instances" in self.sim and self.sim["quota_instances"] < self.cap:
            return f"real quota {self.sim['quota_instances']}"
        return ""


@dataclass(frozen=True)
class Scenario:
    name: str
    count: int
    providers: tuple[Provider, ...]
    boot_seconds: float = BOOT_SECONDS
    latency_ms: float = LATENCY_MS
    timeout_seconds: float = 300.0
    ready: str = "active"  # the label's readiness: "ssh" is ACTIVE only once each sshd answers
    ready_seconds: float = 0.0  # the simulated sshd comes up this long after Nova's ACTIVE

    def sim_config(self, seed: int) -> dict[str, Any]:
        defaults: dict[str, Any] = {"boot_seconds": self.boot_seconds, "latency_ms": self.latency_ms}
        if self.ready == "ssh":  # open to all (OVH-like): what is measured is waiting, not a closed port
            defaults.update(ready_seconds=self.ready_seconds, ssh_port=SSH_PORT, security_groups_open=True)
        return {
            "seed": seed,
            "defaults": defaults,
            "providers": [{"name": p.name, "quota_instances": p.cap, **p.sim} for p in self.providers],
        }

    def label(self) -> dict[str, Any]:
        """The label's mapping, the same on every provider."""
        mapping: dict[str, Any] = {"image": "ubuntu-22.04", "flavor": "m1.small", "network": "public"}
        # Stated either way: a label written without `ready` waits for SSH.
        mapping["ready"] = self.ready
        if self.ready == "ssh":
            mapping["ssh_port"] = SSH_PORT
        return mapping

    @property
    def usable_slots(self) -> int:
        return sum(
            min(p.cap, p.sim.get("quota_instances", p.cap))
            for p in self.providers
            if p.sim.get("mode", "normal") == "normal" and p.sim.get("error_rate", 0) < 1
        )


def s1() -> Scenario:
    """The original need: 100 instances over seven accounts of 20, three of them in trouble."""
    return Scenario(
        name="S1",
        count=100,
        providers=(
            Provider("p1"),
            Provider("p2", sim={"mode": "maintenance"}),
            Provider("p3"),
            Provider("p4", sim={"quota_instances": 10}),
            Provider("p5"),
            Provider("p6", sim={"error_rate": 0.2}),
            Provider("p7"),
        ),
        timeout_seconds=180.0,
    )


def s1_ssh() -> Scenario:
    """S1 with a label that is ready once sshd answers, which it does 1 s after Nova's ACTIVE: what
    waiting for a reachable instance costs over taking Nova's word."""
    return dataclasses.replace(s1(), name="S1-ssh", ready="ssh", ready_seconds=1.0)


def s1_rate() -> Scenario:
    """S1 plus an eighth account that takes 10 requests a second and answers more with `429` and
    `Retry-After: 1` (OVH's 20/s, halved; no burst: 100 ms between requests): its refusals are waited out,
    never held against it."""
    limited = Provider("p8", sim={"rate_limit_per_second": 10, "rate_limit_burst": 1, "rate_limit_retry_after": 1})
    return dataclasses.replace(s1(), name="S1-rate", providers=(*s1().providers, limited))


def s2() -> Scenario:
    """Scale: 1,000 instances. Fifty accounts of 20 hold exactly 1,000, so the two failing ones
    (one in maintenance, one whose every build ends in ERROR) come on top: 52 accounts."""
    working = tuple(Provider(f"w{i:02d}") for i in range(1, 51))
    failing = (Provider("x1", sim={"mode": "maintenance"}), Provider("x2", sim={"error_rate": 1.0}))
    return Scenario(name="S2", count=1000, providers=(*failing[:1], *working[:25], failing[1], *working[25:]))


def smoke() -> Scenario:
    """A few instances on two providers, one of them failing every build: the harness's own test."""
    return Scenario(
        name="smoke",
        count=6,
        providers=(Provider("a", sim={"error_rate": 1.0}), Provider("b")),
        boot_seconds=0.3,
        latency_ms=0.0,
        timeout_seconds=120.0,
    )


SCENARIOS = {"S1": s1, "S1-ssh": s1_ssh, "S1-rate": s1_rate, "S2": s2, "smoke": smoke}
