"""``--base scratch``: a WordPiece tokenizer trained on the corpus and a randomly initialized BERT.

(In transformers 5, ``BertTokenizerFast(vocab_file=...)`` silently ignores the file; we build the tokenizer
with ``tokenizers`` and wrap it in ``PreTrainedTokenizerFast(tokenizer_object=...)``.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from training.config import ScratchConfig

log = logging.getLogger(__name__)

MAX_POSITIONS = 512


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, max_tokens: int):
    """A lower-casing BERT-style WordPiece tokenizer whose template is ``[CLS] text [SEP]``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    from retriever.encoders.wordpiece import SPECIAL_TOKENS, as_bert_tokenizer

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS)))
    return as_bert_tokenizer(tok, max_tokens=max_tokens)


def build_scratch_model(texts: Iterable[str], size: ScratchConfig, folder: Path, *, max_tokens: int, seed: int,
                        train=train_tokenizer) -> Path:
    """Train the tokenizer (``train(texts, vocab_size, max_tokens=...)``, the text tokenizer by default), initialize
    a BERT of ``size`` (seeded), and save both as a Hugging Face folder."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = train(texts, size.vocab_size, max_tokens=max_tokens)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        intermediate_size=4 * size.hidden,
        max_position_embeddings=max(MAX_POSITIONS, max_tokens),
        pad_token_id=tokenizer.pad_token_id,
    )
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    model = BertModel(config, add_pooling_layer=False)
    torch.set_rng_state(generator_state)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    log.info("scratch model: %d layers, %d hidden, %d heads, vocabulary %d", size.layers, size.hidden, size.heads, len(tokenizer))
    return folder
