"""Validation errors as one readable line, for the API's problem+json and the CLI alike."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

__all__ = ["FieldError", "field_errors"]


@dataclass(frozen=True)
class FieldError:
    field: str | None  # dotted path of the input at fault (a list's field, not its item)
    detail: str

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}" if self.field else self.detail


def field_errors(exc: ValidationError) -> list[FieldError]:
    """Each error of `exc`, its location without list indices (`input_shape`, not
    `input_shape.2`) and its message without pydantic's "Value error, " prefix."""
    return [
        FieldError(
            ".".join(str(p) for p in error["loc"] if not isinstance(p, int)) or None,
            error["msg"].removeprefix("Value error, "),
        )
        for error in exc.errors()
    ]
