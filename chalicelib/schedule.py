"""Scheduled requests: when one is launched, and whether it is expected to find room. Pure functions.

A request with `start_at` waits in the sparse `by_schedule` index until the sweeper launches it at
`launch_at = start_at - lead`: the slowest p90 of the measured ready times among the providers
offering its label (DEFAULT_BOOT_SECONDS where none was measured), plus one sweep interval (the
pass may come that late) and a margin.

`admission` is the forecast answered at creation: the room at each critical time point of the
request's life, [start_at, expires_at). Room only shrinks at a point where something starts (the
request itself, another scheduled request) and only grows as holders expire, so the minimum over
those points is the minimum over the whole life.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from chalicelib import eta, timeutil
from chalicelib.maintenance import Window

DEFAULT_BOOT_SECONDS = eta.DEFAULT_BOOT_SECONDS
LEAD_MARGIN_SECONDS = 10.0  # on top of the slowest p90 and one sweep interval
MAX_LEAD_SECONDS = 3600.0  # the sweeper looks this far ahead: no lead is longer
EXPECTED, AT_RISK = "expected", "at_risk"


@dataclass(frozen=True)
class Account:
    """A provider offering the label: its cap, its windows, and when each instance holding one of
    its slots expires."""

    name: str
    cap: int
    windows: Sequence[Window] = ()
    holders: Sequence[datetime] = ()


@dataclass(frozen=True)
class Booking:
    """Slots wanted from `start` to `end`: another scheduled request."""

    start: datetime
    end: datetime
    count: int


@dataclass
class Admission:
    status: str
    reason: str
    capacity: int
    needed: int
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"status": self.status, "reason": self.reason, "capacity": self.capacity, "needed": self.needed}


def lead_seconds(ready_samples: Iterable[Sequence[float]], sweep_seconds: float) -> float:
    """How long before its start a request is launched: the slowest p90 of the providers' ready
    times (DEFAULT_BOOT_SECONDS for one without samples), one sweep interval and a margin."""
    slowest = max((eta.percentile(list(s), 90) or DEFAULT_BOOT_SECONDS for s in ready_samples), default=None)
    lead = (DEFAULT_BOOT_SECONDS if slowest is None else slowest) + sweep_seconds + LEAD_MARGIN_SECONDS
    return min(lead, MAX_LEAD_SECONDS)


def launch_at(start_at: datetime, lead: float) -> datetime:
    return start_at - timedelta(seconds=round(lead))


def blocked(account: Account, start: datetime, end: datetime) -> bool:
    """A maintenance window overlapping [start, end) takes the account out of the forecast."""
    return any(w.start < end and w.end > start for w in account.windows)


def admission(
    label: str,
    needed: int,
    start: datetime,
    end: datetime,
    accounts: Sequence[Account],
    pending: Iterable[datetime] = (),
    scheduled: Iterable[Booking] = (),
) -> Admission:
    """Whether `needed` slots are expected free from `start` to `end` for `label`.

    `pending`: when each PENDING instance of a label these accounts offer expires (it takes a slot
    while it lives); `scheduled`: the other scheduled requests for such labels."""
    pending = list(pending)
    scheduled = list(scheduled)
    open_accounts = [a for a in accounts if not blocked(a, start, end)]
    away = [a.name for a in accounts if blocked(a, start, end)]
    slots = sum(a.cap for a in open_accounts)
    points = sorted({start, *(b.start for b in scheduled if start <= b.start < end)})
    worst = None
    for point in points:
        held = sum(1 for a in open_accounts for expires in a.holders if expires > point)
        waiting = sum(1 for expires in pending if expires > point)
        booked = sum(b.count for b in scheduled if b.start <= point < b.end)
        room = slots - held - waiting - booked
        if worst is None or room < worst[0]:
            worst = (room, point, held, waiting, booked)
    room, point, held, waiting, booked = worst
    capacity = max(0, room)
    accounts_text = f"{len(accounts)} account{'' if len(accounts) == 1 else 's'} offering {label}"
    taken = []
    if held:
        taken.append(f"{held} slots held by instances running past then")
    if waiting:
        taken.append(f"{waiting} by instances waiting to launch")
    if booked:
        taken.append(f"{booked} by other scheduled requests")
    has = "has" if len(accounts) == 1 else "have"
    text = f"at {timeutil.iso(point)} the {accounts_text} {has} room for {capacity} of {slots} slots"
    if taken:
        text += ": " + ", ".join(taken)
    if away:
        text += f"; {', '.join(away)} {'is' if len(away) == 1 else 'are'} in maintenance then"
    status = EXPECTED if room >= needed else AT_RISK
    reason = f"needs {needed}; {text}"
    return Admission(status, reason, capacity, needed, {"point": point, "held": held, "booked": booked})
