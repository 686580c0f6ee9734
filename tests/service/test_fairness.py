"""Fair turns across tenants (service.fairness), on both job stores: a burst from one tenant
does not hold back another tenant's job, and each tenant's own jobs keep their order."""

from __future__ import annotations

import itertools

from service.fairness import claim_in_turn, in_turn, next_turn
from service.jobs import resume
from service.records import JobRecord, JobState, TaskState
from service.storage import JobStore
from tests import records

_clock = itertools.count(1_000)


def queue(store: JobStore, tenant: str) -> str:
    """Queue a job of `tenant` as the API does: in its tenant's next turn."""
    job = records.job_record(records.classifier_record(tenant), created_at=next(_clock))
    job.turn = next_turn(store, tenant)
    store.create(job)
    return job.id


def take(store: JobStore) -> str:
    claimed = claim_in_turn(store, max_attempts=3)
    assert claimed is not None
    return claimed[1].id


def finish(store: JobStore, id: str) -> None:
    def done(record: JobRecord) -> JobRecord:
        record.state = JobState.CANCELLED
        record.task = record.task.model_copy(update={"state": TaskState.DONE, "lease": None})
        return record

    assert store.update(JobRecord, id, done) is not None


def test_a_late_tenant_goes_next_not_last(job_store: JobStore) -> None:
    a = [queue(job_store, "a") for _ in range(5)]
    assert take(job_store) == a[0]  # one worker, busy with a's first job
    b = queue(job_store, "b")
    c = queue(job_store, "c")
    assert [j.id for j in in_turn(job_store)] == [b, c, *a[1:]]
    finish(job_store, a[0])
    assert take(job_store) == b  # b waited for one job, not for a's four others
    finish(job_store, b)
    assert take(job_store) == c  # a newcomer after b waits behind b, not ahead of it


def test_tenants_with_backlogs_alternate(job_store: JobStore) -> None:
    a = [queue(job_store, "a") for _ in range(3)]
    b = [queue(job_store, "b") for _ in range(3)]
    order = []
    while (claimed := claim_in_turn(job_store, max_attempts=3)) is not None:
        order.append(claimed[1].id)
        finish(job_store, claimed[1].id)
    assert order == [a[0], b[0], a[1], b[1], a[2], b[2]]


def test_a_claimed_job_gives_way_and_nothing_queued_is_none(job_store: JobStore) -> None:
    first, second = queue(job_store, "a"), queue(job_store, "a")
    assert take(job_store) == first
    assert take(job_store) == second  # the first is held: the next in turn
    assert claim_in_turn(job_store, max_attempts=3) is None  # a surplus message


def test_a_resumed_job_queues_in_its_tenants_next_turn(job_store: JobStore) -> None:
    old = queue(job_store, "a")
    assert take(job_store) == old
    finish(job_store, old)  # cancelled
    a = [queue(job_store, "a") for _ in range(2)]
    b = queue(job_store, "b")
    stopped = job_store.get(JobRecord, old)
    assert stopped is not None
    resume(job_store, stopped)
    # the resumed job does not jump the queue with its old turn: it follows a's other jobs
    assert [j.id for j in in_turn(job_store)] == [a[0], b, a[1], old]
