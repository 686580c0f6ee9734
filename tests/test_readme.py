"""The README's generated tables (settings, ONNX operators) match their sources: no drift."""

from __future__ import annotations

from pathlib import Path

from models.onnx.registry import implementation, registered_versions
from service.settings import ClientSettings, ServiceSettings
from worker.settings import WorkerSettings

README = Path(__file__).resolve().parents[1] / "README.md"


def render_settings_table() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    seen: set[str] = set()
    for cls, who in (
        (ServiceSettings, "API"),
        (WorkerSettings, "worker"),
        (ClientSettings, "client"),
    ):
        for name, field in cls.model_fields.items():
            if name in seen:
                continue
            seen.add(name)
            shared = name in WorkerSettings.model_fields and name in ServiceSettings.model_fields
            default = "unset" if field.default is None else f"`{field.default}`"
            scope = "" if shared else f" ({who})"
            rows.append(f"| `C3_{name.upper()}` | {default} | {field.description}{scope} |")
    return "\n".join(rows)


def between_markers(name: str) -> str:
    """The README's text between `<!-- name:start -->` and `<!-- name:end -->`."""
    text = README.read_text()
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    return text[text.index(start) + len(start) : text.index(end)].strip()


def test_settings_table_matches_the_settings() -> None:
    expected = render_settings_table()
    assert between_markers("settings") == expected, f"paste this between the markers:\n{expected}"


ONNX_FAMILIES = {
    "models.onnx.ops.elementwise": "element-wise",
    "models.onnx.ops.nn": "layers",
    "models.onnx.ops.shape": "shapes and data movement",
    "models.onnx.ops.reduce": "reductions",
}


def render_onnx_operator_table() -> str:
    """One row per operator family: each operator with the since_versions C3 runs."""
    by_family: dict[str, list[str]] = {family: [] for family in ONNX_FAMILIES.values()}
    for op_type, versions in registered_versions().items():
        family = ONNX_FAMILIES[implementation(op_type, versions[0]).__module__]
        by_family[family].append(f"{op_type} {', '.join(map(str, versions))}")
    rows = ["| Family | Operator and the versions (since_version) C3 runs |", "|---|---|"]
    rows += [f"| {family} | {' · '.join(ops)} |" for family, ops in by_family.items()]
    return "\n".join(rows)


def test_onnx_operator_table_matches_the_registry() -> None:
    expected = render_onnx_operator_table()
    assert between_markers("onnx-operators") == expected, f"paste between the markers:\n{expected}"
