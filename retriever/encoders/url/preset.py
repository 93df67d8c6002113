"""The ``url`` preset: URL lists, URL-aware pieces before encoding, a model trained with ``retriever train url``."""

from retriever.encoders.preset import Preset


def url_pieces(url: str) -> str:
    """``url-pieces-v1``: see :func:`retriever.encoders.url.tokens.url_text` (tldextract loads on first use)."""
    from retriever.encoders.url.tokens import url_text

    return url_text(url)


PRESET = Preset("url", None, "URLs (a model from `retriever train url`; URL-aware pre-tokenization)",
                preprocessor="url-pieces-v1", preprocess=url_pieces, documents="urls")
