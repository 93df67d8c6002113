"""Mixed precision on a CUDA GPU (marker ``gpu``: off by default, run with ``-m gpu``)."""

from __future__ import annotations

import math

import pytest

from tests.test_training_helpers import max_weight_difference
from training.config import TrainConfig
from training.run import resolve_precision, run_training

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _need_cuda():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_resumes(tmp_path, small_corpus, tiny_model, precision):
    config = TrainConfig(objective="contriever", data=(str(small_corpus),), base=str(tiny_model), steps=4, batch_size=4,
                         warmup=1, lr=1e-3, queue_size=8, max_tokens=32, precision=precision).validate()
    full = run_training(config, tmp_path / "full", device="cuda")
    assert full.finished and math.isfinite(full.last_loss)
    run_training(config, tmp_path / "part", device="cuda", stop_after=2)
    run_training(config, tmp_path / "part", device="cuda", resume=True)
    assert max_weight_difference(tmp_path / "full", tmp_path / "part") <= 1e-3  # GPU kernels are not bitwise stable
    assert max_weight_difference(tmp_path / "full", tiny_model) > 1e-5


def test_auto_precision_on_gpu():
    import torch

    assert resolve_precision("auto", "cuda") == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    from retriever.devices import native_bf16_cpu

    assert resolve_precision("auto", "cpu") == ("bf16" if native_bf16_cpu() else "fp32")
