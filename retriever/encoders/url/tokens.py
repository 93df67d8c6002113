"""URL-aware pre-tokenization with offsets into the original string, and the URL WordPiece tokenizer.

A URL is cut into *pieces*: the scheme, userinfo, host labels (tagged subdomain / domain / suffix with
``tldextract``'s bundled Public Suffix List snapshot, never the network), the port, path segments, query keys
and values and the fragment. Inside each component, runs of letters/digits are one piece and every other
character (``/ . - ? = & : @ #`` ...) is a piece of its own, so the structure stays visible to the model.
Percent-escapes are decoded (``%C3%BC`` -> ``ü``, spanning all six characters; escapes of whitespace and
control characters and invalid UTF-8 are kept verbatim) and punycode host labels are decoded
(``xn--bcher-kva`` -> ``bücher``, every character spanning the whole label). Whitespace and control
characters are the only separators: every other character of the input is covered by a piece. Malformed
input never raises; it is split as well as it goes.

The tokenizer sees ``url_text(url)`` (the pieces joined by spaces); :func:`tokenize_url` maps its tokens back
to spans of the original URL. The scanning is hand-written: ``urllib.parse`` gives no offsets and raises on
some malformed URLs (``http://[::1``).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Part = Literal[
    "scheme", "userinfo", "subdomain", "domain", "suffix", "ip", "host", "port", "path", "query_key",
    "query_value", "fragment", "punct",
]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_OPAQUE_SCHEMES = frozenset({"mailto", "javascript", "data", "about", "tel", "sms", "file", "blob", "urn", "news"})
_AUTHORITY_END = "/?#\\"
_DOTS = ".\u3002\uff0e\uff61"  # IDNA treats the ideographic and fullwidth full stops as dots
_HEX = frozenset("0123456789abcdefABCDEF")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


@dataclass(frozen=True)
class UrlPiece:
    """One pre-token.

    Attributes:
        text: the decoded text (never empty, never whitespace).
        start, end: the span ``url[start:end]`` it comes from (end exclusive, ``start < end``).
        part: which URL component it belongs to (separators such as ``.`` and ``/`` are ``punct``).
        spans: per character of ``text``, its ``(start, end)`` span in the URL.
    """

    text: str
    start: int
    end: int
    part: Part
    spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class UrlToken:
    """A tokenizer token of a URL: its id, its string and the span ``url[start:end]`` it covers."""

    id: int
    token: str
    start: int
    end: int


def is_separator(char: str) -> bool:
    """Whitespace and control characters: the only characters no piece has to cover."""
    return char.isspace() or unicodedata.category(char) == "Cc"


# --- scanning ------------------------------------------------------------------------------------------
_Chars = list[tuple[str, int, int]]  # (decoded character, start, end) in the URL


def _decoded(url: str, start: int, end: int, *, decode: bool = True) -> _Chars:
    """Characters of ``url[start:end]`` with percent-escapes decoded as UTF-8 where they form valid text."""
    chars: _Chars = []
    i = start
    while i < end:
        if decode and _is_escape(url, i, end):
            j = i
            while _is_escape(url, j, end):
                j += 3
            chars.extend(_decode_escapes(url, i, j))
            i = j
        else:
            chars.append((url[i], i, i + 1))
            i += 1
    return chars


def _is_escape(url: str, i: int, end: int) -> bool:
    return i + 3 <= end and url[i] == "%" and url[i + 1] in _HEX and url[i + 2] in _HEX


def _decode_escapes(url: str, start: int, end: int) -> _Chars:
    """Decode the run of ``%XX`` escapes ``url[start:end]``; undecodable bytes stay as their three characters."""
    data = bytes.fromhex(url[start:end].replace("%", ""))
    chars: _Chars = []
    i = 0
    while i < len(data):
        char, width = None, 1
        for width in (1, 2, 3, 4):
            try:
                char = data[i : i + width].decode("utf-8")
                break
            except UnicodeDecodeError:
                char = None
        if char is None or len(char) != 1 or is_separator(char):
            at = start + 3 * i
            chars.extend((url[at + k], at + k, at + k + 1) for k in range(3))
            i += 1
        else:
            chars.append((char, start + 3 * i, start + 3 * (i + width)))
            i += width
    return chars


def _is_word(char: str) -> bool:
    return char.isalnum() or unicodedata.category(char).startswith("M")


def _pieces_of(chars: _Chars, part: Part) -> list[UrlPiece]:
    """Group characters: runs of letters/digits (with combining marks) are one piece; others one each."""
    pieces: list[UrlPiece] = []
    run: _Chars = []

    def flush() -> None:
        if run:
            pieces.append(_piece(run, part))
            run.clear()

    for item in chars:
        char = item[0]
        if is_separator(char):
            flush()
        elif _is_word(char):
            run.append(item)
        else:
            flush()
            pieces.append(_piece([item], "punct"))
    flush()
    return pieces


def _piece(chars: _Chars, part: Part) -> UrlPiece:
    text = "".join(c if unicodedata.category(c) != "Cs" else "\ufffd" for c, _, _ in chars)
    return UrlPiece(text, chars[0][1], chars[-1][2], part, tuple((s, e) for _, s, e in chars))


@functools.lru_cache(maxsize=1)
def _extractor():
    import tldextract

    # The bundled Public Suffix List snapshot only: no fetching, no cache directory.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def _host_parts(labels: Sequence[str]) -> list[Part]:
    """subdomain / domain / suffix of each label (``ip`` for an IPv4 address)."""
    host = ".".join(labels)
    if _IPV4.match(host):
        return ["ip"] * len(labels)
    try:
        result = _extractor()(host.lower())
    except Exception:  # noqa: BLE001 - tldextract must never make a URL fail; the labels stay "host"
        return ["host"] * len(labels)
    n_suffix = len(result.suffix.split(".")) if result.suffix else 0
    n_domain = 1 if result.domain else 0
    parts: list[Part] = []
    for index in range(len(labels)):
        from_end = len(labels) - index
        parts.append("suffix" if from_end <= n_suffix else "domain" if from_end <= n_suffix + n_domain else "subdomain")
    return parts


def _punycode(label: str) -> str | None:
    if not label.lower().startswith("xn--") or not label.isascii():
        return None
    try:
        decoded = label[4:].encode("ascii").decode("punycode")
    except (UnicodeError, ValueError):
        return None
    return decoded if decoded and not any(is_separator(c) for c in decoded) else None


def _host_pieces(url: str, start: int, end: int) -> list[UrlPiece]:
    if start < end and url[start] == "[":  # IPv6 literal
        return _pieces_of(_decoded(url, start, end, decode=False), "ip")
    chars = _decoded(url, start, end)
    labels: list[_Chars] = [[]]
    dots: list[tuple[str, int, int]] = []
    for item in chars:
        if item[0] in _DOTS:
            labels.append([])
            dots.append(item)
        else:
            labels[-1].append(item)
    expanded: list[_Chars] = []
    for label in labels:
        text = "".join(c for c, _, _ in label)
        decoded = _punycode(text)
        expanded.append([(c, label[0][1], label[-1][2]) for c in decoded] if decoded else label)
    names = ["".join(c for c, _, _ in label) for label in expanded]
    parts = _host_parts(names) if any(names) else ["host"] * len(names)
    pieces: list[UrlPiece] = []
    for index, label in enumerate(expanded):
        if index:
            pieces.append(_piece([dots[index - 1]], "punct"))
        pieces.extend(_pieces_of(label, parts[index]))
    return pieces


def _authority_pieces(url: str, start: int, end: int) -> list[UrlPiece]:
    at = url.rfind("@", start, end)
    pieces: list[UrlPiece] = []
    host_start = start
    if at >= 0:
        pieces += _pieces_of(_decoded(url, start, at), "userinfo")
        pieces.append(_piece([("@", at, at + 1)], "punct"))
        host_start = at + 1
    host_end = end
    if host_start < end and url[host_start] == "[":
        close = url.find("]", host_start, end)
        host_end = close + 1 if close >= 0 else end
    else:
        colon = url.rfind(":", host_start, end)
        if colon >= 0:
            host_end = colon
    pieces += _host_pieces(url, host_start, host_end)
    if host_end < end:
        pieces += _pieces_of(_decoded(url, host_end, end), "port")
    return pieces


def _query_pieces(url: str, start: int, end: int) -> list[UrlPiece]:
    pieces: list[UrlPiece] = []
    part: Part = "query_key"
    i = start  # structure is found on raw characters, so decoded "%26"/"%3D" stay data
    while i < end:
        j = i
        while j < end and url[j] not in "&;=":
            j += 1
        pieces += _pieces_of(_decoded(url, i, j), part)
        if j < end:
            pieces.append(_piece([(url[j], j, j + 1)], "punct"))
            part = "query_value" if url[j] == "=" else "query_key"
        i = j + 1
    return pieces


def url_pieces(url: str) -> list[UrlPiece]:
    """Split ``url`` into pieces (see the module docstring). Never raises; ``""`` gives ``[]``."""
    pieces: list[UrlPiece] = []
    n = len(url)
    i = 0
    while i < n and is_separator(url[i]):
        i += 1
    authority = True
    match = _SCHEME.match(url, i)
    if match:
        scheme_end = match.end() - 1
        has_slashes = url.startswith("//", match.end()) or url.startswith("\\\\", match.end())
        if has_slashes or url[i:scheme_end].lower() in _OPAQUE_SCHEMES:
            pieces += _pieces_of(_decoded(url, i, scheme_end, decode=False), "scheme")
            pieces.append(_piece([(":", scheme_end, scheme_end + 1)], "punct"))
            i = match.end()
            authority = has_slashes
            if has_slashes:
                pieces += [_piece([(url[k], k, k + 1)], "punct") for k in (i, i + 1)]
                i += 2
    elif url.startswith(("//", "\\\\"), i):
        pieces += [_piece([(url[k], k, k + 1)], "punct") for k in (i, i + 1)]
        i += 2
    elif i < n and url[i] in _AUTHORITY_END:
        authority = False
    if authority:
        end = i
        while end < n and url[end] not in _AUTHORITY_END:
            end += 1
        pieces += _authority_pieces(url, i, end)
        i = end
    query = url.find("?", i)
    fragment = url.find("#", i)
    path_end = min(x for x in (query, fragment, n) if x >= 0)
    pieces += _pieces_of(_decoded(url, i, path_end), "path")
    if path_end < n and url[path_end] == "?":
        query_end = fragment if fragment > path_end else n
        pieces.append(_piece([("?", path_end, path_end + 1)], "punct"))
        pieces += _query_pieces(url, path_end + 1, query_end)
        path_end = query_end
    if path_end < n:
        pieces.append(_piece([("#", path_end, path_end + 1)], "punct"))
        pieces += _pieces_of(_decoded(url, path_end + 1, n), "fragment")
    return pieces


def url_text(url: str) -> str:
    """What the tokenizer and the model see: the pieces' texts joined by single spaces."""
    return " ".join(piece.text for piece in url_pieces(url))


def _char_spans(pieces: Sequence[UrlPiece]) -> list[tuple[int, int] | None]:
    """Per character of ``url_text``: its span in the URL (None for the joining spaces)."""
    spans: list[tuple[int, int] | None] = []
    for index, piece in enumerate(pieces):
        if index:
            spans.append(None)
        spans.extend(piece.spans)
    return spans


# --- the tokenizer ---------------------------------------------------------------------------------------
def train_url_tokenizer(urls: Iterable[str], vocab_size: int, *, max_tokens: int):
    """A WordPiece tokenizer trained on ``url_text`` of ``urls`` (NFKC + lower-case, template ``[CLS] x [SEP]``).

    Its own pre-tokenizer splits on whitespace and punctuation, so text given to it without
    :func:`url_text` (plain sentence-transformers use) is still split sensibly.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    from retriever.encoders.wordpiece import SPECIAL_TOKENS, as_bert_tokenizer

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), limit_alphabet=2000)
    tok.train_from_iterator((url_text(u) for u in urls), trainer)
    return as_bert_tokenizer(tok, max_tokens=max_tokens)


def tokenize_url(url: str, tokenizer: Any) -> list[UrlToken]:
    """Tokens of ``url`` (no special tokens), each with the span of the original URL it covers.

    ``tokenizer`` is a Hugging Face fast tokenizer (offsets needed), normally one from :func:`train_url_tokenizer`.
    A token inside a decoded escape or punycode label covers the whole escape/label.
    """
    pieces = url_pieces(url)
    text = " ".join(p.text for p in pieces)
    spans = _char_spans(pieces)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    out: list[UrlToken] = []
    for token_id, token, (start, end) in zip(encoded["input_ids"], tokens, encoded["offset_mapping"]):
        covered = [s for s in spans[start:end] if s is not None]
        if not covered:
            continue
        out.append(UrlToken(int(token_id), token, min(s for s, _ in covered), max(e for _, e in covered)))
    return out
