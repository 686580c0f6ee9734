"""Templating for the dashboard and the HTML report: Starlette's `Jinja2Templates` over the
service's templates, the filters they use, and the security headers every page carries."""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from service.auth import SESSION_COOKIE
from service.dashboard.views import PHASES, overall_fraction
from service.glossary import term

HERE = Path(__file__).resolve().parent.parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


def duration(seconds: float | None) -> str:
    """A time span as people say it: "45 s", "3 min 20 s", "2 h 5 min"."""
    if seconds is None or seconds < 0:
        return "—"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def _fmt_time(ts: float | None) -> str:
    if not ts:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@lru_cache
def templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters |= {
        "time": _fmt_time,
        "pct": lambda v: "—" if v is None else f"{v:.1%}",
        "prob": lambda v: f"{v:.4f}" if v < 0.9999 else f"{v:.6f}",
        "tojson_attr": lambda v: json.dumps(v, separators=(",", ":")),
        "duration": duration,
    }
    env.globals |= {"phases": PHASES, "overall_fraction": overall_fraction, "term": term}
    return Jinja2Templates(env=env)


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A dashboard page: the template with the signed-in tenant, and strict headers."""
    context.setdefault("tenant", getattr(request.state, "tenant", None))
    context.setdefault("signed_in", SESSION_COOKIE in request.cookies)
    context.setdefault("nav", "")
    return templates().TemplateResponse(
        request,
        name,
        context,
        status_code=status_code,
        headers={
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
        },
    )


@lru_cache
def inline_css() -> str:
    """The dashboard's stylesheet, for pages that must load nothing (the HTML report)."""
    return (STATIC / "dashboard.css").read_text()
