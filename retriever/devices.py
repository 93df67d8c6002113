"""Torch device selection: ``auto`` picks what is there; an explicit GPU that is missing is an error."""

from __future__ import annotations

from indexing.errors import DeviceError


def resolve_device(device: str) -> str:
    """Map ``auto|cpu|cuda|cuda:N`` to a concrete torch device string.

    Raises:
        DeviceError: ``cuda`` was asked for and torch sees no CUDA device (never a silent CPU fallback).
    """
    import torch

    if device == "cpu":
        return "cpu"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device}: no CUDA device is available (torch {torch.__version__})")
        ordinal = int(device.split(":", 1)[1]) if ":" in device else 0
        if ordinal >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
        return device
    raise DeviceError(f"unknown device {device!r}: use auto, cpu or cuda[:N]")
