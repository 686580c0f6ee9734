"""Finished jobs as the worker leaves them, made by the engine itself, for the read benchmarks
(bench/dashboard.py, bench/downloads.py): a paper-cnn trained on scikit-learn's digits,
inverted by `c3` (one job per seed), audited against the held-out digits; the artifacts and
records written through the contracts, the exports built as the worker builds them, and the
progress events of a `steps`-step training run."""

from __future__ import annotations

import time


def seed_jobs(
    per_class: int, side: int, steps: int, threads: int, seeds: tuple[int, ...] = (0, 1)
) -> list[str]:
    """One finished c3 job per seed on one digits classifier (in the store `C3_DATA_DIR`
    names); their ids."""
    import torch

    from models.audit import Reference, audit
    from models.classifier import LoadedClassifier
    from models.contracts.artifacts import Phase
    from models.contracts.inversion import InversionConfig
    from models.digits import load_digits_data, train_classifier
    from service import exports
    from service.records import (
        ClassifierRecord,
        DatasetRecord,
        JobParams,
        JobRecord,
        JobState,
        ProgressEvent,
        StateEvent,
        TaskState,
        events_stream,
        new_id,
    )  # fmt: skip
    from service.settings import ServiceSettings
    from service.storage import keys, open_stores

    torch.set_num_threads(threads)
    shape = (1, side, side)
    data = load_digits_data(shape)
    model = train_classifier("paper-cnn", data, epochs=5).model
    classifier = LoadedClassifier(model, shape, data.class_names)
    stores = open_stores(ServiceSettings())
    clf = ClassifierRecord(
        id=new_id("clf"), tenant="local", state="ready", name="digits", format="safetensors",
        input_shape=shape, class_names=data.class_names, architecture="paper-cnn",
        sha256="0" * 64, size_bytes=1,
    )  # fmt: skip
    ref = DatasetRecord(
        id=new_id("ds"), tenant="local", state="ready", name="held-out digits", format="npz",
        sha256="0" * 64, size_bytes=1, input_shape=shape, count=len(data.test_y),
    )  # fmt: skip
    stores.jobs.create(clf)
    stores.jobs.create(ref)
    ids = []
    for seed in seeds:
        config = InversionConfig(seed=seed, steps=100)
        result = audit(
            classifier, config, samples_per_class=per_class,
            reference=Reference(data.test_x, data.test_y),
        )  # fmt: skip
        job = JobRecord(
            id=new_id("job"), tenant="local", state=JobState.SUCCEEDED, classifier_id=clf.id,
            dataset_id=ref.id, method="c3", class_names=list(data.class_names),
            input_shape=shape, sample_count=len(result.samples), metrics=result.metrics.overall,
            params=JobParams(classes=list(range(10)), samples_per_class=per_class,
                             steps=steps, seed=seed),
            started_at=time.time() - 60, finished_at=time.time(),
        )  # fmt: skip
        job.task.state = TaskState.DONE
        for name, blob in result.artifacts().items():
            key = keys.job_artifact("local", job.id, name)
            if isinstance(blob, bytes):
                stores.artifacts.put(key, blob)
            else:
                with blob.open("rb") as f:
                    stores.artifacts.put_stream(key, exports.file_chunks(f))
        exports.build(stores.artifacts, job)
        stream = events_stream(job.id)
        for step in range(15, steps + 1, 15):  # a progress event every 15 steps
            stores.jobs.append_event(stream, ProgressEvent(
                phase=Phase.TRAINING, step=step, total_steps=steps,
                fraction=step / steps, losses={"kl": 1 / step, "total": 1 / step + 0.1},
                confident_share=min(1.0, 2 * step / steps), updated_at=time.time(),
            ))  # fmt: skip
        stores.jobs.append_event(stream, StateEvent(state=JobState.SUCCEEDED))
        stores.jobs.create(job)
        ids.append(job.id)
    stores.close()
    return ids
