"""Run-time device choice: the one place that asks whether CUDA is present."""

from __future__ import annotations

import torch

__all__ = ["pick_device"]


def pick_device(prefer: str | None = None) -> torch.device:
    """`prefer` ("cpu", "cuda", "cuda:1", None or "auto"); CUDA when present, else the CPU.

    Asking for CUDA on a machine without it falls back to the CPU rather than failing, so a
    job configured on a GPU box still runs elsewhere.
    """
    if prefer in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(prefer)
    if device.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")
    return device


def to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """Store 4-D weights NHWC: oneDNN (CPU) and cuDNN run (de)convolutions faster that way.

    Values are unchanged; applied to the classifier and the generator alike, so every
    method (pixel included) gets the same speed-up.
    """
    return module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
