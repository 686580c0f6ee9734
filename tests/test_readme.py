"""The README's settings table is generated from the settings classes: it cannot drift."""

from __future__ import annotations

from pathlib import Path

from service.settings import ServiceSettings
from worker.settings import WorkerSettings

README = Path(__file__).resolve().parents[1] / "README.md"


def render_settings_table() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    seen: set[str] = set()
    for cls, who in ((ServiceSettings, "API"), (WorkerSettings, "worker")):
        for name, field in cls.model_fields.items():
            if name in seen:
                continue
            seen.add(name)
            shared = name in WorkerSettings.model_fields and name in ServiceSettings.model_fields
            default = "unset" if field.default is None else f"`{field.default}`"
            scope = "" if shared else f" ({who})"
            rows.append(f"| `C3_{name.upper()}` | {default} | {field.description}{scope} |")
    return "\n".join(rows)


def test_settings_table_matches_the_settings() -> None:
    text = README.read_text()
    start, end = "<!-- settings:start -->\n", "<!-- settings:end -->"
    current = text[text.index(start) + len(start) : text.index(end)].strip()
    expected = render_settings_table()
    assert current == expected, f"paste this between the settings markers:\n{expected}"
