"""The url objective's parts: MLM masking and labels, the trainer's auxiliary loss and adversarial pass, the
kNN vote, and the URL readers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from indexing.errors import CorpusError
from indexing.url_readers import read_urls
from retriever.encoders.url.classify import vote_weights, weighted_vote
from training.crops import TokenSpace
from training.data import SpecialTokens, collate, collate_labels
from training.mlm import IGNORE, mlm_mask

URLS = [
    "https://www.paypal.com/signin?country=us", "http://paypal.com.verify-account.xyz/login.php",
    "https://thenextweb.com/apps/2015/01/01/article/", "http://secure.000webhostapp.com/wp/update/",
    "https://twitter.com/someone/status/12345", "http://192.168.0.1/admin/", "https://www.bbc.co.uk/news/world-123",
    "http://login-microsoft.online-verify.top/office365/", "https://github.com/org/repo/issues/7",
    "http://apple.id-locked.info/unlock?session=abc", "https://docs.python.org/3/library/urllib.html",
    "http://bankofamerica.secure-update.ru/login", "https://en.wikipedia.org/wiki/Phishing",
]


# --- masking ------------------------------------------------------------------------------------------------
def test_mlm_mask_chooses_only_real_tokens_and_keeps_targets():
    space = TokenSpace(vocab_size=100, special_ids=frozenset({0, 1, 2, 3, 4}), mask_id=4)
    ids = list(range(10, 60))
    inputs, labels = mlm_mask(ids, np.random.default_rng(0), space, 0.3)
    chosen = [i for i, label in enumerate(labels) if label != IGNORE]
    assert 5 <= len(chosen) <= 30
    assert all(labels[i] == ids[i] for i in chosen)
    assert all(inputs[i] == ids[i] for i in range(len(ids)) if i not in chosen)  # unchosen tokens untouched
    assert sum(inputs[i] == 4 for i in chosen) >= len(chosen) // 2  # mostly [MASK]
    # specials are never chosen; a short input still gets one target
    inputs, labels = mlm_mask([2, 50, 3], np.random.default_rng(1), space, 0.01)
    assert labels == [IGNORE, 50, IGNORE]
    assert mlm_mask([], np.random.default_rng(0), space, 0.5) == ([], [])


def test_collate_labels_align_with_collate():
    special = SpecialTokens(prefix=(2,), suffix=(3,), pad_id=0)
    sequences = [[10, 11, 12, 13, 14], [20]]
    labels = [[IGNORE, 11, IGNORE, 13, 14], [20]]
    batch = collate(sequences, special, max_tokens=5)
    out = collate_labels(labels, special, 5, batch["input_ids"].shape[1])
    assert batch["input_ids"].tolist() == [[2, 10, 11, 12, 3], [2, 20, 3, 0, 0]]
    assert out.tolist() == [[IGNORE, IGNORE, 11, IGNORE, IGNORE], [IGNORE, 20, IGNORE, IGNORE, IGNORE]]


# --- the vote ------------------------------------------------------------------------------------------------
def test_weighted_vote_by_inverse_distance():
    scores = np.array([0.9, 0.8, 0.8])  # distances 0.1, 0.2, 0.2 -> weights 10, 5, 5
    assert np.allclose(vote_weights(scores, "ip"), [10, 5, 5], rtol=1e-4)
    label, confidence, votes = weighted_vote(["a", "b", "b"], scores, "ip")
    assert label == "b" and votes["a"] == pytest.approx(10, rel=1e-4) and votes["b"] == pytest.approx(10, rel=1e-4)
    assert weighted_vote(["a", "b"], np.array([0.5, 0.5]), "ip")[:2] == ("a", 0.5)  # an exact tie: the nearest wins
    label, confidence, votes = weighted_vote(["a", "b", "b", "b"], np.array([0.9, 0.8, 0.8, 0.8]), "ip")
    assert label == "b" and confidence == pytest.approx(15 / 25, rel=1e-4)
    assert weighted_vote(["x", None], np.array([-4.0, -1.0]), "l2")[0] == "x"  # l2 scores are -distance
    assert weighted_vote([None, None], np.array([0.5, 0.4]), "ip") == (None, 0.0, {})


def test_uniform_vote_and_a_threshold_on_the_positive_label():
    scores = np.array([0.95, 0.5, 0.5, 0.5])
    labels = ["bad", "ok", "ok", "ok"]
    assert weighted_vote(labels, scores, "ip")[0] == "bad"  # the near duplicate outweighs three far neighbours
    label, share, votes = weighted_vote(labels, scores, "ip", weights="uniform")
    assert (label, share, votes) == ("ok", 0.75, {"bad": 1.0, "ok": 3.0})
    assert weighted_vote(labels, scores, "ip", weights="uniform", positive="bad", threshold=0.25)[:2] == ("bad", 0.25)
    assert weighted_vote(labels, scores, "ip", weights="uniform", positive="bad", threshold=0.3)[:2] == ("ok", 0.75)
    distance = weighted_vote(labels, scores, "ip", positive="bad", threshold=0.95)  # share 20/(20+6) < 0.95
    assert distance[0] == "ok" and distance[1] == pytest.approx(6 / 26, rel=1e-4)
    assert weighted_vote(["bad", None], scores[:2], "ip", positive="bad", threshold=0.99)[0] == "bad"  # nobody else voted


# --- readers ---------------------------------------------------------------------------------------------------
def test_read_urls_plain_tsv_jsonl(tmp_path):
    plain = tmp_path / "urls.txt"
    plain.write_text("http://a.com/x\n\n  http://b.org  \n", encoding="utf-8")
    docs = list(read_urls([plain]))
    assert [(d.id, d.text, d.metadata) for d in docs] == [("urls.txt:1", "http://a.com/x", {}), ("urls.txt:3", "http://b.org", {})]
    table = tmp_path / "urls.tsv"
    table.write_text("url\tlabel\nhttp://a.com\tbenign\nhttp://b.xyz/login\tphishing\n", encoding="utf-8")
    assert [(d.id, d.metadata) for d in read_urls(table)] == [("urls.tsv:2", {"label": "benign"}), ("urls.tsv:3", {"label": "phishing"})]
    lines = tmp_path / "urls.jsonl"
    lines.write_text(json.dumps({"id": 7, "url": "http://c.net", "label": "benign"}) + "\n", encoding="utf-8")
    assert [(d.id, d.text, d.metadata) for d in read_urls(lines)] == [("7", "http://c.net", {"label": "benign"})]


def test_read_urls_errors_name_file_line_field(tmp_path):
    table = tmp_path / "bad.tsv"
    table.write_text("link\tlabel\nhttp://a.com\tbenign\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.tsv:1: the header row has no 'url' column"):
        list(read_urls(table))
    lines = tmp_path / "bad.jsonl"
    lines.write_text('{"url": "http://a"}\n{"link": "http://b"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: field 'url': missing"):
        list(read_urls(lines))
    with pytest.raises(CorpusError, match="no such file"):
        read_urls([tmp_path / "missing.txt"])


# --- the trainer's extensions ------------------------------------------------------------------------------------
def _train(tmp_path, name, tiny_model, tiny_tokenizer, *, weight: float | None, adversarial: float = 0.0, steps: int = 3,
           mask: float = 0.3):
    """Three steps of the url objective on the tiny model (dropout off, no clipping).

    Returns the trained state dict, the auxiliary module, the initial state dict and the loss of every forward pass.
    """
    from training.config import MlmConfig, TrainConfig
    from training.data import token_space
    from training.export import BaseModel, load_encoder_for_training
    from training.mlm import MaskedLanguageModelling
    from training.trainer import Trainer
    from training.url_data import UrlData, tokenize_urls

    config = TrainConfig(objective="url", data=("-",), base=str(tiny_model), steps=steps, batch_size=4, lr=1e-3, warmup=0,
                         max_tokens=32, max_grad_norm=0.0, adversarial=adversarial,
                         mlm=MlmConfig(mask, weight) if weight is not None else None).validate()
    encoder = load_encoder_for_training(str(tiny_model), max_tokens=32)
    for module in encoder.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    initial = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    data = UrlData(tokenize_urls(URLS, tiny_tokenizer, max_length=30), token_space(encoder.tokenizer), mask=mask, seed=0)
    auxiliary = None
    if weight is not None:
        transformer = encoder[0].auto_model
        torch.manual_seed(1)
        auxiliary = MaskedLanguageModelling(transformer.get_input_embeddings(), transformer.config.hidden_size, weight=weight)
    trainer = Trainer(config, data, encoder, BaseModel("tiny", str(tiny_model), preset="url"), tmp_path / name,
                      device="cpu", precision="fp32", auxiliary=auxiliary)
    losses: list[float] = []
    forward = trainer._forward_loss

    def recording(*args, **kwargs):
        loss, positives = forward(*args, **kwargs)
        losses.append(loss.item())
        return loss, positives

    trainer._forward_loss = recording
    trainer.run()
    state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    return state, auxiliary, initial, losses


def _max_difference(a, b) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _mean_difference(a, b) -> float:
    return float(sum((a[k] - b[k]).abs().sum() for k in a) / sum(a[k].numel() for k in a))


def test_auxiliary_loss_with_zero_weight_changes_nothing(tmp_path, tiny_model, tiny_tokenizer):
    plain, _, _, _ = _train(tmp_path, "plain", tiny_model, tiny_tokenizer, weight=None)
    zero, _, _, _ = _train(tmp_path, "zero", tiny_model, tiny_tokenizer, weight=0.0)
    # same masked queries without an auxiliary module: weight 0 must give the same encoder
    assert _max_difference(plain, zero) < 1e-6
    mlm, head, _, _ = _train(tmp_path, "mlm", tiny_model, tiny_tokenizer, weight=1.0)
    assert _max_difference(plain, mlm) > 1e-4  # the MLM gradient reaches the encoder
    assert float(head.bias.detach().abs().max()) > 0  # and the head itself is trained
    card = json.loads((tmp_path / "mlm" / "retriever.json").read_text())
    assert card["preset"] == "url"
    assert "auxiliary.safetensors" in {p.name for p in (tmp_path / "mlm" / "checkpoints").rglob("*.safetensors")}


def test_adversarial_pass(tmp_path, tiny_model, tiny_tokenizer):
    """FGM: the perturbed pass follows the clean one and raises the loss (small epsilon, linear regime); with
    epsilon -> 0 it only doubles the gradient, to which Adam is nearly invariant (no clipping, no dropout)."""
    plain, _, initial, plain_losses = _train(tmp_path, "plain", tiny_model, tiny_tokenizer, weight=None, mask=0.0)
    assert len(plain_losses) == 3
    moved = _mean_difference(plain, initial)
    vanishing, _, _, losses = _train(tmp_path, "eps", tiny_model, tiny_tokenizer, weight=None, adversarial=1e-7, mask=0.0)
    assert len(losses) == 6 and losses[0::2] == pytest.approx(plain_losses, rel=1e-4)
    assert _mean_difference(plain, vanishing) < 0.05 * moved
    adversarial, _, _, losses = _train(tmp_path, "adv", tiny_model, tiny_tokenizer, weight=None, adversarial=0.02, mask=0.0)
    assert losses[1] > losses[0]  # the perturbation goes up the loss
    assert _mean_difference(plain, adversarial) > 5 * _mean_difference(plain, vanishing)


# --- supervised contrastive (labelled URLs) ----------------------------------------------------------------
def test_supervised_info_nce_reduces_to_info_nce_and_counts_every_positive():
    from training.losses import info_nce, supervised_info_nce

    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    k = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    extra = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    distinct = torch.arange(6)
    for negatives in (None, extra):
        assert torch.allclose(supervised_info_nce(q, k, distinct, temperature=0.1, extra_negatives=negatives),
                              info_nce(q, k, temperature=0.1, extra_negatives=negatives), atol=1e-6)
    groups = torch.tensor([0, 1, 0, 1, 1, 2])
    log_probs = torch.log_softmax(q @ k.T / 0.1, dim=1)
    expected = torch.stack([-log_probs[i, groups == groups[i]].mean() for i in range(6)]).mean()
    assert torch.allclose(supervised_info_nce(q, k, groups, temperature=0.1), expected, atol=1e-6)
    with pytest.raises(ValueError):
        supervised_info_nce(q, k, groups[:5])


def test_labelled_urls_keep_their_classes(tiny_tokenizer):
    from indexing.documents import Document
    from training.url_data import UrlData, tokenize_labeled_urls, url_classes

    docs = [Document(f"u{i}", "", url, {"label": "phishing" if "login" in url else "benign"}) for i, url in enumerate(URLS)]
    pairs, names = url_classes(docs, "label")
    assert names == ["benign", "phishing"] and [g for _, g in pairs] == [int("login" in u) for u in URLS]
    store, groups = tokenize_labeled_urls([("", 1)] + pairs, tiny_tokenizer, max_length=30)  # no tokens: left out
    assert len(store) == len(groups) == len(URLS) and groups.tolist() == [g for _, g in pairs]
    space = TokenSpace(vocab_size=tiny_tokenizer.vocab_size, special_ids=frozenset(tiny_tokenizer.all_special_ids),
                       mask_id=tiny_tokenizer.mask_token_id)
    data = UrlData(store, space, mask=0.0, seed=0, groups=groups)
    examples = data.examples(0, len(URLS))
    assert sorted((e.key, e.group) for e in examples) == sorted((list(store[i]), int(groups[i])) for i in range(len(URLS)))
    with pytest.raises(Exception, match="two classes"):
        url_classes(docs[:1], "label")


def test_url_benchmark_describes_a_continued_model_stage_by_stage(tmp_path):
    """A model trained with --base OTHER_URL_MODEL is reported as two stages, the first one first."""
    from benchmarks.url import TRAIN_TIME_FILE, _stage_line, training_stages

    first, second = tmp_path / "first", tmp_path / "second"
    for folder, base, steps in ((first, "scratch", 600), (second, str(first), 1200)):
        folder.mkdir()
        (folder / "train_config.json").write_text(json.dumps({
            "base": base, "steps": steps, "batch_size": 64, "lr": 5e-4, "max_tokens": 48, "mlm": None,
            "label_field": "label", "scratch": {"layers": 4, "hidden": 128, "vocab_size": 8192} if base == "scratch" else None}))
    (first / TRAIN_TIME_FILE).write_text(json.dumps({"wall_seconds": 600.0, "cpu_seconds": 1200.0, "threads": 2}))

    stages = training_stages(second)
    assert [s["train_config"]["steps"] for s in stages] == [600, 1200]
    assert "from scratch: 4 layers" in _stage_line(stages[0], True) and "10.0 min wall" in _stage_line(stages[0], True)
    assert "continued from" in _stage_line(stages[1], False) and "time not measured" in _stage_line(stages[1], False)
