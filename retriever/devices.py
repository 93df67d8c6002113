"""Torch device and precision selection: ``auto`` picks what is there; an explicit GPU that is missing is an error."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from indexing.errors import DeviceError

log = logging.getLogger(__name__)


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


Precision = Literal["auto", "fp32", "bf16", "fp16"]
"""What ``--precision`` accepts; every choice but ``auto`` is also a resolved precision."""
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
# what encodes bf16 documents on the CPU (see retriever.encoders.base.SentenceTransformerEncoder)
DocumentBackend = Literal["auto", "torch", "openvino"]
DOCUMENT_BACKENDS: tuple[str, ...] = ("auto", "torch", "openvino")
CPUINFO = Path("/proc/cpuinfo")
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
"""CPU flags (Linux ``/proc/cpuinfo``) of bf16 arithmetic in hardware: AMX tiles, or AVX-512 BF16 dot products."""


def native_bf16_cpu(cpuinfo: Path = CPUINFO) -> bool:
    """Whether this CPU computes in bf16 natively (so bf16 matmuls are faster than fp32, not emulated).

    Reads the ``flags`` lines of ``cpuinfo`` (Linux) for ``amx_bf16`` or ``avx512_bf16``; where that file cannot
    be read, trusts ``torch.backends.cpu.get_cpu_capability()`` only when it names AMX or BF16; else False.
    Never raises.
    """
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = None
    if text is not None:
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags" and BF16_CPU_FLAGS & set(value.split()):
                return True
        return False
    try:
        import torch

        capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    except (ImportError, AttributeError, RuntimeError):
        return False
    return "AMX" in capability or "BF16" in capability


def resolve_precision(precision: str, device: str) -> tuple[str, str]:
    """The precision documents are encoded in on ``device`` (a resolved torch device string), and why.

    ``auto`` is bf16 on a CPU with native bf16 (:func:`native_bf16_cpu`), fp16 on CUDA, fp32 elsewhere.
    bf16 asked for on a CPU without native bf16 is allowed (torch emulates it) and logged as slow.

    Returns:
        ``(resolved, note)``: resolved is ``fp32``, ``bf16`` or ``fp16``; note is a few words for the user,
        e.g. ``"native on this CPU"``.

    Raises:
        DeviceError: an unknown precision, or ``fp16`` on the CPU (no fast fp16 CPU kernels: use bf16 or fp32).
    """
    cuda = device.startswith("cuda")
    if precision not in PRECISIONS:
        raise DeviceError(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if cuda:
            return "fp16", f"auto: half precision on {device}"
        if native_bf16_cpu():
            return "bf16", "auto: native on this CPU"
        return "fp32", "auto: this CPU has no native bf16"
    if precision == "fp16" and not cuda:
        raise DeviceError(f"--precision fp16 needs a CUDA device (got {device}); on the CPU use bf16 or fp32")
    if precision == "bf16" and not cuda and not native_bf16_cpu():
        log.warning("bf16 on a CPU without native bf16 (no amx_bf16/avx512_bf16): torch emulates it, "
                    "expect it slower than fp32")
        return "bf16", "emulated on this CPU: slower than fp32"
    if precision == "bf16" and cuda:
        import torch

        if not torch.cuda.is_bf16_supported():
            raise DeviceError(f"--precision bf16: {device} has no bf16 support; use fp16 or fp32")
    if precision == "bf16":
        return "bf16", f"native on {device if cuda else 'this CPU'}"
    return precision, "as asked"
