"""Each optional behaviour of the training loop as a part, alone, on tiny tensors and the tiny model; and the
composition a configuration asks for."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from indexing.errors import RetrieverError
from training.config import TrainConfig
from training.data import SpecialTokens, collate
from training.trainer_parts import (AdversarialPart, EmaPart, EmbeddingPerturbation, FreezePart, FrozenKeysPart,
                                    MomentumKeysPart, QueuePart, TrainerPart, build_parts)


class _Encoder(nn.Module):
    """A stand-in for a SentenceTransformer: ``{"input_ids": (n, t)}`` -> mean of token embeddings, ``(n, 4)``."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embedding = nn.Embedding(10, 4)
        self.dropout = nn.Dropout(0.5)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"sentence_embedding": self.dropout(self.embedding(features["input_ids"])).mean(1)}

    def get_embedding_dimension(self) -> int:
        return 4


@pytest.fixture(scope="module")
def tiny_encoder(tiny_model):
    from training.export import load_encoder_for_training

    return lambda: load_encoder_for_training(str(tiny_model), max_tokens=32)


def _config(**changes) -> TrainConfig:
    return TrainConfig(objective="contriever", data=("c.jsonl",), **changes)


def test_build_parts_composes_what_the_config_asks_in_hook_order():
    special = SpecialTokens(prefix=(2,), suffix=(3,), pad_id=0)
    kinds = lambda config: [type(p) for p in build_parts(config, special=special, device="cpu")]  # noqa: E731
    assert kinds(_config()) == []
    assert kinds(_config(queue_size=8, ema=0.5, adversarial=0.1)) == [MomentumKeysPart, QueuePart, EmaPart, AdversarialPart]
    assert kinds(_config(queue_size=8, teacher_keys=True, freeze_layers=1)) == [FreezePart, FrozenKeysPart, QueuePart]
    assert kinds(_config(query_only=True, freeze_embeddings=True)) == [FreezePart, FrozenKeysPart]
    with pytest.raises(RetrieverError, match="--adversarial needs trainable input embeddings"):
        build_parts(_config(adversarial=0.1, freeze_embeddings=True), special=special, device="cpu")


def test_the_base_part_changes_nothing():
    part, model = TrainerPart(), nn.Linear(2, 2)
    assert part.evaluated(model) is model and part.output_model(model) is model
    assert part.extra_negatives() is None and part.modules() == {} and part.state_dict() == ({}, {})
    assert part.key_embeddings({}, []) is None and part.dev_documents(None) is None


def test_freeze_keeps_the_embeddings_and_the_lower_layers(tiny_encoder):
    encoder = tiny_encoder()
    FreezePart(layers=0).setup(encoder)
    frozen = {name for name, p in encoder.named_parameters() if not p.requires_grad}
    assert frozen == {"0.model.embeddings.word_embeddings.weight"}
    encoder = tiny_encoder()
    FreezePart(layers=1).setup(encoder)
    trained = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert trained and all(".encoder.layer.1." in name or "pooler" in name for name in trained)
    with pytest.raises(RetrieverError, match="--freeze-layers 2: the model has 2 layers"):
        FreezePart(layers=2).setup(tiny_encoder())


def test_perturbation_has_the_asked_norm_per_example():
    embedding = nn.Embedding(10, 4)
    perturbation = EmbeddingPerturbation(embedding)
    out = embedding(torch.tensor([[1, 2, 3], [4, 5, 6]]))
    (out * torch.arange(24, dtype=torch.float32).view(2, 3, 4)).sum().backward()
    perturbation.prepare(0.5)
    assert perturbation.deltas is not None
    assert torch.allclose(perturbation.deltas[0].flatten(1).norm(dim=1), torch.tensor([0.5, 0.5]))
    shifted = embedding(torch.tensor([[1, 2, 3], [4, 5, 6]]))
    assert torch.allclose((shifted - out).detach().flatten(1).norm(dim=1), torch.tensor([0.5, 0.5]), atol=1e-6)
    perturbation.remove()


def test_adversarial_part_perturbs_the_second_pass_only(tiny_encoder):
    encoder = tiny_encoder()
    part = AdversarialPart(0.25)
    part.setup(encoder)
    assert part.extra_passes == 1
    ids = {"input_ids": torch.tensor([[2, 5, 6, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    clean = encoder(dict(ids))["sentence_embedding"]
    clean.sum().backward()
    part.after_pass(0)  # the clean pass's gradient becomes the perturbation
    perturbed = encoder(dict(ids))["sentence_embedding"]
    assert not torch.allclose(perturbed, clean)
    part.after_pass(1)
    part.after_batch(clean.detach())  # the next batch starts clean
    assert torch.equal(encoder(dict(ids))["sentence_embedding"], clean)


def test_momentum_keys_follow_the_encoder():
    encoder = _Encoder()
    part = MomentumKeysPart(0.75)
    part.setup(encoder)
    assert part.embeds_keys and part.encoder.training and not any(p.requires_grad for p in part.encoder.parameters())
    start = part.encoder.embedding.weight.clone()
    with torch.no_grad():
        encoder.embedding.weight.add_(1.0)
    part.before_step(encoder)
    torch.testing.assert_close(part.encoder.embedding.weight, start + 0.25)
    part.encoder.eval()
    keys = part.key_embeddings({"input_ids": torch.tensor([[1, 2]])}, [[1, 2]])
    torch.testing.assert_close(keys, part.encoder.embedding.weight[[1, 2]].mean(0, keepdim=True))
    assert part.modules() == {"key_model": part.encoder}


def test_frozen_keys_are_cached_per_distinct_sequence():
    special = SpecialTokens(prefix=(2,), suffix=(3,), pad_id=0)
    part = FrozenKeysPart(special=special, max_tokens=4, device="cpu", query_only=False)
    part.setup(_Encoder())
    assert part.embeds_keys and not part.encoder.training  # eval mode: no dropout, so a key is a function of its text
    sequences = [[5, 6], [7], [5, 6], [5, 6, 8, 9]]  # the last is cut to [5, 6] by max_tokens (room for 2)
    keys = part.embed(sequences)
    assert keys.shape == (4, 4) and len(part.cache) == 2
    with torch.no_grad():
        direct = part.encoder(collate(sequences, special, 4))["sentence_embedding"]
    torch.testing.assert_close(keys, direct)
    assert part.output_model(nn.Linear(1, 1)).__class__ is nn.Linear  # not query-only: the output is the encoder
    assert part.dev_documents(None) is None


def test_queue_part_offers_past_positives_and_round_trips():
    part = QueuePart(3, device="cpu")
    part.setup(_Encoder())
    assert part.extra_negatives() is None  # empty: in-batch negatives only
    part.after_batch(torch.arange(8, dtype=torch.float32).view(2, 4))
    part.after_batch(torch.ones(2, 4))
    negatives = part.extra_negatives()
    assert negatives is not None and negatives.shape == (3, 4)
    tensors, entries = part.state_dict()
    assert entries == {"queue": {"pointer": 1, "filled": 3, "size": 3}}
    other = QueuePart(3, device="cpu")
    other.setup(_Encoder())
    other.load_state_dict(tensors, entries)
    torch.testing.assert_close(other.extra_negatives(), negatives)


def test_ema_part_averages_and_is_what_is_evaluated():
    encoder = _Encoder()
    part = EmaPart(0.5)
    part.setup(encoder)
    weights = []
    for step in range(3):
        with torch.no_grad():
            encoder.embedding.weight.add_(float(step + 1))
        weights.append(encoder.embedding.weight.detach().clone())
        part.after_step(encoder)
    expected = 0.5 * (0.5 * weights[0] + 0.5 * weights[1]) + 0.5 * weights[2]  # the first update copies
    evaluated = part.evaluated(encoder)
    assert evaluated is not encoder
    torch.testing.assert_close(evaluated.embedding.weight, expected)
    assert set(part.modules()) == {"averaged_model"}
