"""URL pre-tokenization (parts, percent-decoding, IDN, ports, malformed input) and tokenizer offsets."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retriever.encoders.url.tokens import is_separator, tokenize_url, train_url_tokenizer, url_pieces, url_text

TRAINING_URLS = [
    "https://www.paypal.com/signin?country=us&locale=en_US",
    "http://paypal.com.account-verify.example.co.uk:8080/login.php?user=bob%40mail.com#step2",
    "https://xn--bcher-kva.de/katalog/b%C3%BCcher/index.html",
    "http://192.168.0.1/admin/config.cgi",
    "https://thenextweb.com/apps/2015/01/01/some-long-article-title/",
    "http://secure-login.000webhostapp.com/wp-content/plugins/update/",
]


@pytest.fixture(scope="module")
def url_tokenizer():
    return train_url_tokenizer(TRAINING_URLS * 3, 300, max_tokens=64)


def parts(url: str) -> list[tuple[str, str]]:
    return [(p.text, p.part) for p in url_pieces(url) if p.part != "punct"]


def test_host_parts_from_the_public_suffix_list():
    assert parts("https://login.paypal.com.evil.co.uk/x") == [
        ("https", "scheme"), ("login", "subdomain"), ("paypal", "subdomain"), ("com", "subdomain"),
        ("evil", "domain"), ("co", "suffix"), ("uk", "suffix"), ("x", "path"),
    ]
    assert parts("http://10.0.0.1/") == [("http", "scheme"), ("10", "ip"), ("0", "ip"), ("0", "ip"), ("1", "ip")]


def test_structure_is_kept_as_punctuation_pieces():
    assert url_text("http://a.example.com/p/q.php?x=1&y=2#top") == "http : / / a . example . com / p / q . php ? x = 1 & y = 2 # top"
    assert parts("http://a.com/?user=bob&token")[-3:] == [("user", "query_key"), ("bob", "query_value"), ("token", "query_key")]
    assert parts("http://a.com/#frag")[-1] == ("frag", "fragment")


def test_ports_and_userinfo():
    assert parts("http://user:secret@example.com:8443/") == [
        ("http", "scheme"), ("user", "userinfo"), ("secret", "userinfo"), ("example", "domain"), ("com", "suffix"),
        ("8443", "port"),
    ]
    assert parts("http://[2001:db8::1]:8080/a")[-2:] == [("8080", "port"), ("a", "path")]


def test_percent_decoding_maps_each_character_to_its_escapes():
    url = "http://a.com/b%C3%BCcher/%2Fetc%20x/%ZZ/%e2%82"
    pieces = url_pieces(url)
    word = next(p for p in pieces if p.text == "bücher")
    assert (word.start, word.end) == (url.index("b%C3"), url.index("cher") + 4)
    assert word.spans[1] == (url.index("%C3"), url.index("%C3") + 6)  # ü spans both escapes
    slash = [p for p in pieces if p.text == "/" and url[p.start:p.end] == "%2F"]
    assert slash, "an escaped slash is decoded into a punctuation piece"
    text = url_text(url)
    assert "% 20x" in text  # an escaped space stays verbatim (decoding it would hide a character)
    assert "% ZZ" in text  # not an escape
    assert text.endswith("% e2 % 82")  # truncated UTF-8 stays as written


def test_idn_punycode_is_decoded_per_label():
    url = "https://xn--pypal-4ve.com/login"  # "pаypal" with a Cyrillic а
    pieces = url_pieces(url)
    label = next(p for p in pieces if p.part == "domain")
    assert label.text == "p\u0430ypal"
    assert (label.start, label.end) == (8, 8 + len("xn--pypal-4ve"))
    assert set(label.spans) == {(8, 8 + len("xn--pypal-4ve"))}
    assert parts("https://xn--bcher-kva.de/")[1:] == [("bücher", "domain"), ("de", "suffix")]
    assert parts("http://xn--zz.com/")[1] == ("xn", "domain")  # invalid punycode stays as written


@pytest.mark.parametrize("url", [
    "", "   ", "http://", "http://[::1", "::::", "%%%", "%", "http://@/:", "//host/x", "/relative?q#f",
    "mailto:bob@example.org", "javascript:alert(1)", "http://exa mple.com/\t\n", "http://ex.com\\evil.com",
    "\x00\x01http://a.b", "http://\ud800.com/", "https://例え.テスト/パス?キー=値", "a" * 5000,
])
def test_malformed_urls_never_raise(url, url_tokenizer):
    pieces = url_pieces(url)
    for piece in pieces:
        assert piece.text and not any(c.isspace() for c in piece.text)
        assert 0 <= piece.start < piece.end <= len(url)
        assert len(piece.spans) == len(piece.text)
    tokens = tokenize_url(url, url_tokenizer)
    covered = {i for t in tokens for i in range(t.start, t.end)}
    assert all(i in covered for i, c in enumerate(url) if not is_separator(c))


def test_tokens_map_back_to_the_url(url_tokenizer):
    url = "https://www.PayPal.com/signin?locale=en_US"
    tokens = tokenize_url(url, url_tokenizer)
    assert url[tokens[0].start : tokens[0].end] == "https"
    assert any(url[t.start : t.end] == "PayPal" or url[t.start : t.end].startswith("Pay") for t in tokens)
    assert [t.start for t in tokens] == sorted(t.start for t in tokens)


# --- property: every token maps to a span of the URL, and the spans cover every non-separator character ----
_hex = st.sampled_from("0123456789abcdefABCDEF")
_escape = st.builds(lambda a, b: f"%{a}{b}", _hex, _hex)
_label = st.one_of(
    st.text(st.characters(min_codepoint=0x30, max_codepoint=0x7A), min_size=1, max_size=8),
    st.builds(lambda s: "xn--" + s, st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)),
    st.text(min_size=1, max_size=4),
)
_segment = st.lists(st.one_of(_escape, st.text(min_size=1, max_size=5), st.sampled_from("/?#&=;:@.-_~+%")), max_size=8).map("".join)
_url = st.builds(
    lambda scheme, labels, port, path: f"{scheme}{'.'.join(labels)}{port}{path}",
    st.sampled_from(["http://", "https://", "", "ftp://", "HTTP://", "//", "mailto:", "x:"]),
    st.lists(_label, min_size=1, max_size=5),
    st.one_of(st.just(""), st.integers(0, 99999).map(lambda p: f":{p}"), st.text(max_size=3).map(lambda t: ":" + t)),
    _segment,
)
_any = st.text(alphabet=st.characters(exclude_categories=()), max_size=60)  # surrogates and controls included


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(url=st.one_of(_url, _any))
def test_token_offsets_property(url, url_tokenizer):
    tokens = tokenize_url(url, url_tokenizer)
    for token in tokens:
        assert 0 <= token.start < token.end <= len(url), (url, token)
    covered = {i for t in tokens for i in range(t.start, t.end)}
    missing = [i for i, c in enumerate(url) if not is_separator(c) and i not in covered]
    assert not missing, (url, missing, tokens)
