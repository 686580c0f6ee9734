"""Fair turns across tenants: one tenant's burst of jobs does not starve another's.

Start-time fair queuing (Goyal, Vin & Cheng, SIGCOMM 1996) with every job costing one turn: a
job enters the queue with the turn `max(V, the tenant's last turn + 1)`, where the virtual time
`V` is the turn being served (the highest turn among running jobs, else the lowest queued one).
Workers take queued jobs by turn, then by age. So a tenant's 50 jobs take turns 0…49, and
another tenant's job, arriving while turn 0 runs, takes turn 0 too and starts next.

The order lives in the job records, not in the broker: a message only says "a job is waiting",
and the worker that receives it claims the queued job whose turn is next (`claim_in_turn`), not
necessarily the one the message named. Every queued job sent one message and every message
claims at most one job, so no job waits without a message; a message that finds nothing queued
is a no-op, as a duplicate always was. Both deployments (Redis, and SQLite with its local
broker) run this same code, since it reads only the job store. Uploads' validations are short
and bounded per tenant by `C3_QUOTA_VALIDATIONS`: they stay first come, first served.
"""

from __future__ import annotations

import time

from service.background import Claim, Clock, claim
from service.records import JobRecord, JobState
from service.storage import JobStore


def next_turn(store: JobStore, tenant: str) -> int:
    """The turn of a job `tenant` queues now (or queues again: a resumed job)."""
    queued = store.list(JobRecord, state=JobState.QUEUED).items
    running = store.list(JobRecord, state=JobState.RUNNING).items
    turns = [j.turn for j in running] or [min((j.turn for j in queued), default=0)]
    virtual = max(turns)
    own = [j.turn + 1 for j in (*queued, *running) if j.tenant == tenant]
    return max([virtual, *own])


def in_turn(store: JobStore) -> list[JobRecord]:
    """The queued jobs in the order workers take them."""
    queued = store.list(JobRecord, state=JobState.QUEUED).items
    return sorted(queued, key=lambda job: (job.turn, job.created_at, job.id))


def claim_in_turn(
    store: JobStore, *, max_attempts: int, clock: Clock = time.time
) -> tuple[Claim[JobRecord], JobRecord] | None:
    """Claim the queued job whose turn is next; None when none is left to claim. A job another
    worker claimed first (or that ran out of attempts) gives way to the one after it."""
    for job in in_turn(store):
        claimed = claim(store, JobRecord, job.id, max_attempts=max_attempts, clock=clock)
        if claimed is not None:
            return claimed
    return None
