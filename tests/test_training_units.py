"""Pure parts of training: the loss, the MoCo queue, crops and augmentations, checkpoint flattening, schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.checkpoint import capture_rng, flatten_optimizer, restore_rng, unflatten_optimizer
from training.crops import TokenSpace, augment, crop_pair, crop_span, delete_tokens, mask_tokens, replace_tokens, split_chunks
from training.data import EpochOrder, SpecialTokens, collate
from training.losses import info_nce
from training.moco import KeyQueue, make_key_encoder, momentum_update
from training.trainer import warmup_linear


# --- loss ----------------------------------------------------------------------------------------------
def test_info_nce_hand_computed():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    t = 0.5
    # query 0: logits [1, 0.6]/t, positive 0; query 1: logits [0, 0.8]/t, positive 1
    expected = 0.5 * (-math.log(math.exp(2) / (math.exp(2) + math.exp(1.2))) - math.log(math.exp(1.6) / (1 + math.exp(1.6))))
    assert info_nce(q, k, temperature=t).item() == pytest.approx(expected, rel=1e-6)
    extra = torch.tensor([[0.0, 1.0]])  # one more negative for both queries
    expected_extra = 0.5 * (
        -math.log(math.exp(2) / (math.exp(2) + math.exp(1.2) + math.exp(0)))
        - math.log(math.exp(1.6) / (1 + math.exp(1.6) + math.exp(2)))
    )
    assert info_nce(q, k, temperature=t, extra_negatives=extra).item() == pytest.approx(expected_extra, rel=1e-6)


def test_info_nce_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        info_nce(torch.zeros(2, 4), torch.zeros(3, 4))


def test_moco_with_empty_queue_equals_in_batch():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1).requires_grad_()
    k = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    queue = KeyQueue(16, 8)
    moco = info_nce(q, k, extra_negatives=queue.negatives())
    (grad_moco,) = torch.autograd.grad(moco, q)
    plain = info_nce(q, k)
    (grad_plain,) = torch.autograd.grad(plain, q)
    assert torch.equal(moco, plain) and torch.allclose(grad_moco, grad_plain)
    queue.enqueue(k)
    assert queue.negatives().shape == (6, 8)
    assert info_nce(q, k, extra_negatives=queue.negatives()).item() > plain.item()


def test_queue_is_fifo_and_wraps():
    queue = KeyQueue(4, 1)
    queue.enqueue(torch.tensor([[1.0], [2.0], [3.0]]))
    queue.enqueue(torch.tensor([[4.0], [5.0]]))
    assert queue.filled == 4 and sorted(queue.negatives().flatten().tolist()) == [2.0, 3.0, 4.0, 5.0]
    queue.enqueue(torch.arange(10.0).unsqueeze(1))  # more than the queue holds: the last 4 stay
    assert sorted(queue.negatives().flatten().tolist()) == [6.0, 7.0, 8.0, 9.0]
    tensors, scalars = queue.state()
    other = KeyQueue(4, 1)
    other.load(tensors, scalars)
    assert torch.equal(other.negatives(), queue.negatives()) and other.pointer == queue.pointer


def test_momentum_update():
    query = torch.nn.Linear(2, 2)
    key = make_key_encoder(query)
    assert not any(p.requires_grad for p in key.parameters())
    with torch.no_grad():
        query.weight.add_(1.0)
    before = key.weight.clone()
    momentum_update(key, query, 0.9)
    assert torch.allclose(key.weight, 0.9 * before + 0.1 * query.weight)
    momentum_update(key, query, 0.0)
    assert torch.equal(key.weight, query.weight)


# --- crops and augmentations (properties) ---------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 600), lo=st.floats(0.01, 1.0), span=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_crop_span_inside_and_within_ratios(length, lo, span, seed):
    hi = lo + (1.0 - lo) * span
    start, end = crop_span(length, np.random.default_rng(seed), lo, hi)
    size = end - start
    assert 0 <= start < end <= length
    assert max(1, math.floor(lo * length)) <= size <= max(1, math.ceil(hi * length))


@settings(max_examples=100, deadline=None)
@given(chunk=st.lists(st.integers(10, 99), min_size=2, max_size=300), seed=st.integers(0, 2**32 - 1),
       delete=st.floats(0.0, 0.9))
def test_crops_come_from_the_chunk(chunk, seed, delete):
    """Without replacement or masking, each view is a subsequence of one contiguous span of the chunk."""
    space = TokenSpace(vocab_size=100, special_ids=frozenset({0, 1, 2, 3}), mask_id=3)
    for view in crop_pair(chunk, np.random.default_rng(seed), space, ratio_min=0.1, ratio_max=0.5, delete=delete):
        assert 1 <= len(view) <= max(1, math.ceil(0.5 * len(chunk)))
        assert _is_subsequence_of_a_span(view, chunk, max(1, math.ceil(0.5 * len(chunk))))


def _is_subsequence_of_a_span(view: list[int], chunk: list[int], width: int) -> bool:
    for start in range(len(chunk)):
        it = iter(chunk[start : start + width])
        if all(token in it for token in view):
            return True
    return False


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.integers(4, 99), min_size=1, max_size=200), seed=st.integers(0, 2**32 - 1), p=st.floats(0.0, 0.99))
def test_augmentations(ids, seed, p):
    rng = np.random.default_rng(seed)
    space = TokenSpace(vocab_size=100, special_ids=frozenset({0, 1, 2, 3}), mask_id=3)
    kept = delete_tokens(ids, rng, p)
    assert 1 <= len(kept) <= len(ids)
    replaced = replace_tokens(ids, rng, p, space)
    assert len(replaced) == len(ids) and not set(replaced) & {0, 1, 2}
    masked = mask_tokens(ids, rng, p, space)
    assert all(m == t or m == 3 for m, t in zip(masked, ids))
    assert augment(ids, rng, space) == list(ids)  # all probabilities 0: unchanged


def test_mask_without_mask_token_is_an_error():
    with pytest.raises(ValueError):
        mask_tokens([5, 6], np.random.default_rng(0), 0.5, TokenSpace(vocab_size=10))


def test_split_chunks():
    assert split_chunks(list(range(10)), 4, min_tokens=3) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # tail of 2 dropped
    assert split_chunks(list(range(10)), 4, min_tokens=2) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert split_chunks([7], 4) == []  # one token cannot make two different crops
    assert split_chunks([7, 8], 4) == [[7, 8]]


def test_epoch_order_is_a_permutation_per_epoch():
    order = EpochOrder(5, seed=3)
    first, second = [order(p) for p in range(5)], [order(p) for p in range(5, 10)]
    assert sorted(first) == sorted(second) == list(range(5)) and first != second
    assert [EpochOrder(5, seed=3)(p) for p in range(7, 10)] == second[2:]  # random access: resumable


# --- batching -------------------------------------------------------------------------------------------
def test_collate_matches_the_tokenizer(tiny_tokenizer):
    """Training inputs are built exactly as sentence-transformers builds them at inference."""
    from training.data import tokenize_texts
    from training.scratch import train_tokenizer

    texts = ["dense retrieval of passages", "a query"]
    for tokenizer in (tiny_tokenizer, train_tokenizer(texts * 5, 80, max_tokens=16)):
        special = SpecialTokens.of(tokenizer)
        batch = collate(tokenize_texts(tokenizer, texts), special, max_tokens=16)
        reference = tokenizer(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
        assert torch.equal(batch["input_ids"], reference["input_ids"])
        assert torch.equal(batch["attention_mask"], reference["attention_mask"])
    assert special.prefix == (tokenizer.cls_token_id,) and special.suffix == (tokenizer.sep_token_id,)
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, special.pad_id
    batch = collate([[10, 11, 12, 13, 14], [20]], special, max_tokens=5)
    assert batch["input_ids"].tolist() == [[cls, 10, 11, 12, sep], [cls, 20, sep, pad, pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]


# --- checkpoint parts and schedule ----------------------------------------------------------------------
def test_optimizer_state_round_trip_through_flat_tensors():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    tensors, meta = flatten_optimizer(optimizer.state_dict())
    import json

    meta = json.loads(json.dumps(meta))  # what is on disk is JSON
    restored = torch.optim.AdamW(model.parameters(), lr=1e-3)
    restored.load_state_dict(unflatten_optimizer(tensors, meta))
    a, b = optimizer.state_dict(), restored.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for index, entry in a["state"].items():
        for name, value in entry.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][index][name]))


def test_rng_round_trip():
    import json
    import random

    tensors, meta = capture_rng()
    meta = json.loads(json.dumps(meta))
    expected = (random.random(), np.random.random(), torch.rand(1).item())
    restore_rng(tensors, meta)
    assert (random.random(), np.random.random(), torch.rand(1).item()) == expected


def test_warmup_linear():
    factors = [warmup_linear(s, warmup=2, total=6) for s in range(6)]
    assert factors == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert warmup_linear(0, warmup=0, total=4) == 1.0


def test_listwise_distillation_is_zero_when_student_agrees_and_pulls_towards_the_teacher():
    from training.losses import listwise_distillation

    teacher = torch.tensor([[1.0, 0.6, 0.2], [0.9, 0.95, 0.1]])  # (n, c) fused scores
    agreeing = teacher * (0.05 / 0.1)  # student / 0.05 == teacher / 0.1
    assert listwise_distillation(agreeing, teacher, temperature=0.05, teacher_temperature=0.1).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros(2, 3, requires_grad=True)
    loss = listwise_distillation(student, teacher, temperature=0.05, teacher_temperature=0.1)
    p_t = torch.softmax(teacher / 0.1, 1)
    expected = (p_t * (p_t.log() - math.log(1 / 3))).sum(1).mean()  # KL(p_t || uniform)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    # descending the gradient raises the student's score where the teacher puts more mass than uniform
    assert torch.equal(torch.sign(-student.grad), torch.sign(p_t - 1 / 3))
    with pytest.raises(ValueError, match="must be the same"):
        listwise_distillation(torch.zeros(2, 3), torch.zeros(2, 4))


def test_pair_data_keeps_teacher_scores_aligned_with_sampled_negatives(tiny_tokenizer):
    from training.data import Pair, PairData

    negatives = tuple(" ".join(["retrieval"] * (i + 1)) for i in range(6))  # distinct token sequences
    pair = Pair("query text", "positive text", negatives, teacher_scores=(1.0, *(0.9 - 0.1 * i for i in range(6))))
    data = PairData([pair], tiny_tokenizer, per_query=3, max_tokens=64, seed=0)
    ids = {tuple(tiny_tokenizer(n, add_special_tokens=False)["input_ids"]): 0.9 - 0.1 * i for i, n in enumerate(negatives)}
    for position in range(5):
        example = data.examples(position, 1)[0]
        assert example.teacher[0] == 1.0 and len(example.teacher) == 4
        assert list(example.teacher[1:]) == [pytest.approx(ids[tuple(n)]) for n in example.negatives]
    assert PairData([Pair("q", "p", negatives)], tiny_tokenizer, per_query=2, max_tokens=16, seed=0).examples(0, 1)[0].teacher is None


def test_pair_data_tokenizes_each_document_once_and_gives_the_same_ids(tiny_tokenizer):
    from training.data import Pair, PairData, tokenize_texts

    negatives = tuple(f"negative document number {i} about retrieval" for i in range(5))
    pairs = [Pair(f"query {i}", f"positive document {i % 2}", negatives) for i in range(4)]
    calls: list[int] = []

    class Counting:  # the tiny tokenizer, counting how many texts it is asked to tokenize
        def __call__(self, texts, **options):
            calls.append(len(texts))
            return tiny_tokenizer(texts, **options)

    data = PairData(pairs, Counting(), per_query=2, max_tokens=8, seed=0)
    data.DOCUMENT_CACHE_SIZE = 100
    first = data.examples(0, 4)
    again = data.examples(0, 4)
    fresh = PairData(pairs, tiny_tokenizer, per_query=2, max_tokens=8, seed=0).examples(0, 4)
    assert [(e.key, e.negatives) for e in first] == [(e.key, e.negatives) for e in again] == [(e.key, e.negatives) for e in fresh]
    assert first[0].key == tokenize_texts(tiny_tokenizer, ["positive document 0"], max_length=8)[0]
    document_texts = sum(calls) - 2 * 4  # minus the queries of the two calls
    assert document_texts <= 2 + len(negatives)  # each distinct document tokenized once
    data.DOCUMENT_CACHE_SIZE = 3  # a memo too small for one batch starts over, and stays correct
    assert [(e.key, e.negatives) for e in data.examples(0, 4)] == [(e.key, e.negatives) for e in fresh]


def test_untitled_negatives_follow_the_mined_order_and_refuse_a_mismatch():
    from indexing.errors import RetrieverError
    from training.data import Pair
    from training.pairs import untitled_negatives

    pair = Pair("a title", "its body", ("Title B. body b", "Title C. body c"), teacher_scores=(1.0, 0.5, 0.4))
    mined = [{"query": "a title", "negative_ids": ["b", "c"]}]
    out = untitled_negatives([pair], mined, {"b": "body b", "c": "body c"})
    assert out[0].negatives == ("body b", "body c") and out[0].teacher_scores == (1.0, 0.5, 0.4)
    with pytest.raises(RetrieverError, match="mined ids"):
        untitled_negatives([pair], [{"query": "a title", "negative_ids": ["b"]}], {"b": "body b"})


def test_untitled_negatives_keep_each_pairs_own_pool_when_query_texts_repeat():
    from training.data import Pair
    from training.pairs import untitled_negatives

    first = Pair("same text", "body a", ("B. body b",), teacher_scores=(1.0, 0.5))
    second = Pair("same text", "body b", ("A. body a", "C. body c"), teacher_scores=(1.0, 0.6, 0.2))
    mined = [{"query": "same text", "negative_ids": ["b"]}, {"query": "same text", "negative_ids": ["a", "c"]}]
    out = untitled_negatives([first, second], mined, {"a": "body a", "b": "body b", "c": "body c"})
    assert [p.negatives for p in out] == [("body b",), ("body a", "body c")]
