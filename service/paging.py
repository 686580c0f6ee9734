"""Paging for every list, in one place: bounded `offset` and `limit` query parameters, and the
next page's link in the body (`next`) and in a `Link: <…>; rel="next"` header (RFC 8288).

Clients follow `next` instead of computing offsets, so a list can move to cursors without
breaking them. The order of every list is fixed (records newest first, samples by index), so
the pages of an unchanged list never overlap.
"""

# No `from __future__ import annotations`: FastAPI reads the query parameters' annotations, which
# name the bounds of the closure in `_paging`.
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request, Response
from starlette.datastructures import URL

__all__ = ["RecordPaging", "SamplePaging"]


@dataclass(frozen=True)
class Paging:
    """One page's request: where it starts and how long it is, and how to link the next."""

    offset: int
    limit: int
    request: Request
    response: Response

    @property
    def end(self) -> int:
        return self.offset + self.limit

    def next(self, count: int) -> str | None:
        """The next page's URL (path and query, the filters kept), also set as the `Link`
        header; None on the last page."""
        if self.end >= count:
            return None
        return self._link(self.request.url.include_query_params(offset=self.end, limit=self.limit))

    def next_after(self, last: int) -> str:
        """The next page's URL by cursor: the items after `last` (a list whose order has a key,
        like the samples' index, costs a page to read from there, wherever it is)."""
        url = self.request.url.include_query_params(after=last, limit=self.limit)
        return self._link(url.remove_query_params("offset"))

    def _link(self, url: URL) -> str:
        link = f"{url.path}?{url.query}"
        self.response.headers["Link"] = f'<{link}>; rel="next"'
        return link


def _paging(default: int, maximum: int, order: str) -> Callable[..., Paging]:
    def paging(
        request: Request,
        response: Response,
        offset: Annotated[
            int, Query(ge=0, description=f"Items to skip ({order}); follow `next` instead.")
        ] = 0,
        limit: Annotated[
            int, Query(ge=1, le=maximum, description=f"Items per page, at most {maximum}.")
        ] = default,
    ) -> Paging:
        return Paging(offset, limit, request, response)

    return paging


RecordPaging = Annotated[Paging, Depends(_paging(50, 500, "newest first"))]
SamplePaging = Annotated[Paging, Depends(_paging(100, 1000, "by sample index"))]
