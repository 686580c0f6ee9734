"""The asynchronous client: `service.client.sync.Client` method for method, awaited (the
requests and what they mean are shared, in `service.client.calls`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx
from httpx_sse import EventSource

from models.contracts.inversion import MethodName
from service.client import calls
from service.client.calls import Call, Export, JobEvent, Progress, RetryPolicy, Upload
from service.client.errors import C3Error, ConnectionFailed, InvalidInputError, error_for
from service.client.sync import Page
from service.schemas import ClassifierPublic, DatasetPublic, InversionPublic
from service.settings import ClientSettings

__all__ = ["AsyncClient"]

P = ParamSpec("P")
T = TypeVar("T")
U = TypeVar("U", ClassifierPublic, DatasetPublic)
X = TypeVar("X")
POLL_SECONDS = 0.5


def endpoint(
    build: Callable[P, Call[T]],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    """A client method that sends `build(...)` and reads the answer."""

    async def method(self: AsyncClient, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.run(build(*args, **kwargs))

    method.__doc__ = build.__doc__
    return method


def uploading(
    build: Callable[P, Upload[U]],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, U]]:
    """A client method that sends the upload `build(...)` describes."""

    async def method(self: AsyncClient, *args: P.args, **kwargs: P.kwargs) -> U:
        return await self._upload(build(*args, **kwargs))

    method.__doc__ = build.__doc__
    return method


def every(
    build: Callable[P, Call[Page[X]]],
) -> Callable[Concatenate[AsyncClient, P], AsyncIterator[X]]:
    """A client method that yields every item of a list, following its `next` links."""

    async def method(self: AsyncClient, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[X]:
        call = build(*args, **kwargs)
        page = await self.run(call)
        for item in page.data:
            yield item
        while page.next is not None:
            page = await self.run(calls.next_page(call, page.next))
            for item in page.data:
                yield item

    return method


class AsyncClient:
    """A C3 service, awaited: `AsyncClient(url, api_key=...)` or `AsyncClient.from_env()`.
    Use it as an async context manager, or `await aclose()`."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    @classmethod
    def from_env(cls, **options: Any) -> AsyncClient:
        settings = ClientSettings()
        key = settings.api_key.get_secret_value() if settings.api_key else None
        return cls(settings.server, key, **options)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # --- sending ------------------------------------------------------------------------------

    async def response(
        self, call: Call[Any], *, stream: bool = False, **body: Any
    ) -> httpx.Response:
        """The answer to `call` (`body`: httpx's `files` and `data`), retried per `retry`;
        an error answer is raised as its `ApiError`."""
        attempt = 0
        while True:
            attempt += 1
            request = self._http.build_request(
                call.method, call.path, params=call.params, json=call.json,
                headers=call.headers, **body,
            )  # fmt: skip
            try:
                response = await self._http.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                delay = self.retry.delay(attempt, None)
                if delay is None:
                    raise ConnectionFailed(f"cannot reach {self.base_url}: {exc}") from exc
                await asyncio.sleep(delay)
                continue
            except httpx.TransportError as exc:
                raise ConnectionFailed(f"the connection to {self.base_url} failed: {exc}") from exc
            if response.is_success or response.status_code in call.ok:
                return response
            if stream:
                await response.aread()
                await response.aclose()
            delay = self.retry.delay(attempt, response)
            if delay is None:
                raise error_for(response)
            await asyncio.sleep(delay)

    async def run(self, call: Call[T]) -> T:
        return call.read(await self.response(call))

    # --- the endpoints ------------------------------------------------------------------------

    health = endpoint(calls.health)
    readiness = endpoint(calls.readiness)
    prometheus_metrics = endpoint(calls.prometheus_metrics)
    list_classifiers = endpoint(calls.list_classifiers)
    iter_classifiers = every(calls.list_classifiers)
    get_classifier = endpoint(calls.get_classifier)
    delete_classifier = endpoint(calls.delete_classifier)
    list_datasets = endpoint(calls.list_datasets)
    iter_datasets = every(calls.list_datasets)
    get_dataset = endpoint(calls.get_dataset)
    delete_dataset = endpoint(calls.delete_dataset)
    start_inversion = endpoint(calls.start_inversion)
    list_inversions = endpoint(calls.list_inversions)
    iter_inversions = every(calls.list_inversions)
    get_inversion = endpoint(calls.get_inversion)
    cancel_inversion = endpoint(calls.cancel_inversion)
    resume_inversion = endpoint(calls.resume_inversion)
    delete_inversion = endpoint(calls.delete_inversion)
    list_samples = endpoint(calls.list_samples)
    iter_samples = every(calls.list_samples)
    sample_more = endpoint(calls.sample_more)
    sample_png = endpoint(calls.sample_png)
    metrics = endpoint(calls.metrics)
    report = endpoint(calls.report)

    # --- uploads ------------------------------------------------------------------------------

    upload_classifier = uploading(calls.classifier_upload)
    upload_dataset = uploading(calls.dataset_upload)

    async def _upload(self, upload: Upload[U]) -> U:
        deadline = time.monotonic() + upload.wait
        path = upload.path
        with calls.ProgressFile(path, upload.on_progress) as body:
            try:
                response = await self.response(
                    upload.call(), files={"file": (path.name, body)}, data=upload.fields
                )
            except InvalidInputError as exc:
                raise calls.rejected_upload(exc) from None
        record = upload.call().read(response)
        return await self.wait_for_validation(record, max(0.0, deadline - time.monotonic()))

    async def wait_for_validation(self, record: U, timeout: float = 120.0) -> U:
        """The upload's record once validated (or as it is after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while record.status == "validating" and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            record = await self.run(calls.refresh(record))
        return calls.verdict(record)

    # --- jobs ---------------------------------------------------------------------------------

    async def events(self, id: str, *, last_event_id: str | None = None) -> AsyncIterator[JobEvent]:
        """A job's events (progress, state changes) as they happen, until its final state;
        a dropped connection is resumed where it left off."""
        reconnects = 0
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            try:
                async with self._http.stream(
                    "GET", f"/inversions/{id}/events", headers=headers,
                    timeout=httpx.Timeout(self._timeout, read=None),
                ) as response:  # fmt: skip
                    if not response.is_success:
                        await response.aread()
                        raise error_for(response)
                    async for sse in EventSource(response).aiter_sse():
                        if not sse.data:
                            continue
                        last_event_id = sse.id or last_event_id
                        event = calls.job_event(sse.data)
                        yield event
                        if calls.is_final(event):
                            return
            except httpx.TransportError as exc:
                reconnects += 1
                delay = self.retry.delay(reconnects, None)
                if delay is None:
                    raise ConnectionFailed(f"lost the events of {id}: {exc}") from exc
                await asyncio.sleep(delay)
                continue
            if (await self.get_inversion(id)).state in calls.FINAL_STATES:
                return  # its final event was read before a reconnect
            await asyncio.sleep(POLL_SECONDS)  # the stream ended early (a restart?): again

    async def wait_for_inversion(
        self,
        id: str,
        *,
        on_event: Callable[[JobEvent], None] | None = None,
        timeout: float | None = None,
    ) -> InversionPublic:
        """Follow a job over its events until it finishes; the finished job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        async for event in self.events(id):
            if on_event is not None:
                on_event(event)
            if deadline is not None and time.monotonic() > deadline:
                raise C3Error(f"job {id} did not finish within {timeout:.0f} s")
        return await self.get_inversion(id)

    async def invert(
        self, classifier_id: str, *, method: MethodName = "c3", **params: Any
    ) -> InversionPublic:
        """Start a job and wait for it: `start_inversion` then `wait_for_inversion`."""
        job = await self.start_inversion(classifier_id, method=method, **params)
        return await self.wait_for_inversion(job.id)

    # --- downloads ----------------------------------------------------------------------------

    async def download(
        self,
        id: str,
        what: Export,
        destination: str | Path,
        *,
        on_progress: Progress | None = None,
        **params: Any,
    ) -> Path:
        """Stream a file to `destination` (written whole or not at all): a job's `zip`, `npz`,
        `report-json`, `report-html`, `reject-dataset` or `grid` (`params`: its query, e.g.
        `per_class=8`), or a classifier's validated `model`."""
        target = Path(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = calls.part_file(target)
        response = await self.response(calls.export_call(id, what, **params), stream=True)
        total = int(response.headers.get("content-length") or 0)
        try:
            with part.open("wb") as out:
                async for chunk in response.aiter_bytes(1 << 20):
                    out.write(chunk)
                    if on_progress is not None:
                        on_progress(response.num_bytes_downloaded, total)
        except httpx.TransportError as exc:
            part.unlink(missing_ok=True)
            raise ConnectionFailed(f"the download of {what} broke off: {exc}") from exc
        finally:
            await response.aclose()
        part.replace(target)
        return target
