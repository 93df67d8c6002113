"""Wrapping a ``tokenizers`` WordPiece tokenizer as a BERT-style transformers tokenizer.

(In transformers 5, ``BertTokenizerFast(vocab_file=...)`` silently ignores the file; tokenizers are built with
``tokenizers`` and wrapped in ``PreTrainedTokenizerFast(tokenizer_object=...)``.) Shared by ``--base scratch``
(training/scratch.py) and the URL tokenizer (retriever/encoders/url/tokens.py).
"""

from __future__ import annotations

from typing import Any

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def as_bert_tokenizer(tok: Any, *, max_tokens: int):
    """``tok`` (a trained ``tokenizers.Tokenizer`` holding :data:`SPECIAL_TOKENS`) with the template
    ``[CLS] x [SEP]`` (pairs ``[CLS] a [SEP] b [SEP]``), as a ``PreTrainedTokenizerFast``."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=max_tokens,
    )
