"""The ASCII fast path gives the tokenizers library's ids, and steps aside when it can't."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from kbrec.ascii_wordpiece import AsciiWordPiece
from kbrec.tokenization import TextTokenizer
from loadtest.tickets import HAND_WRITTEN

MAX_LENGTH = 24  # short, so that truncation is exercised often


@pytest.fixture(scope="module")
def tokenizer_json(tiny_export_dir: Path) -> str:
    # The pretrained MiniLM tokenizer every kbrec model uses.
    return (tiny_export_dir / "tokenizer.json").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def library(tokenizer_json: str) -> Tokenizer:
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_LENGTH)
    return tokenizer


@pytest.fixture(scope="module")
def fast(library: Tokenizer, tokenizer_json: str) -> AsciiWordPiece:
    found = AsciiWordPiece.for_tokenizer(library, tokenizer_json)
    assert found is not None
    return found


def library_ids(library: Tokenizer, text: str) -> list[int]:
    return library.encode(text).ids


ASCII_TEXTS = (
    "",
    "   ",
    "How do I add page numbers?",
    "VLOOKUP returns #N/A even though the value is there",
    "e-mail: it's   a\tsnake_case\nword,and(CamelCase)!!",
    "x" * 150 + " pages",  # longer than WordPiece's 100 characters: [UNK]
    "unbelievably antidisestablishmentarianism " * 8,  # truncated
    "tabs\tand\r\nnewlines~`^{|}[\\]",
)


@pytest.mark.parametrize("text", ASCII_TEXTS)
def test_plain_ascii_gets_the_librarys_ids(
    fast: AsciiWordPiece, library: Tokenizer, text: str
) -> None:
    assert fast.encode(text, MAX_LENGTH) == library_ids(library, text)


def test_every_ticket_of_the_benchmarks_gets_the_librarys_ids(
    fast: AsciiWordPiece, library: Tokenizer
) -> None:
    texts = [text for _, text in HAND_WRITTEN]
    assert all(text.isascii() for text in texts)
    for text in texts:
        assert fast.encode(text, MAX_LENGTH) == library_ids(library, text)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
def test_any_ascii_text_gets_the_librarys_ids_or_goes_to_the_library(
    fast: AsciiWordPiece, library: Tokenizer, text: str
) -> None:
    # Control characters (which BERT's clean_text drops) go to the library.
    found = fast.encode(text, MAX_LENGTH)
    assert found is None or found == library_ids(library, text)


@pytest.mark.parametrize(
    "text",
    [
        "café au lait",  # accents: the normalizer strips them
        "数据透视表",  # Chinese characters: split one by one
        "non\u00a0breaking",  # Unicode whitespace
        "bell\x07",  # a control character, removed by clean_text
        "what does [MASK] mean",  # an added token, matched before normalizing
    ],
)
def test_other_text_goes_to_the_library(fast: AsciiWordPiece, text: str) -> None:
    assert fast.encode(text, MAX_LENGTH) is None


def test_text_tokenizer_mixes_both_paths_in_order(
    tiny_export_dir: Path, library: Tokenizer
) -> None:
    tokenizer = TextTokenizer(tiny_export_dir / "tokenizer.json", MAX_LENGTH)
    texts = ["café au lait", "How do I add page numbers?", "[MASK] it", "plain again"]
    assert tokenizer.encode(texts) == [library_ids(library, text) for text in texts]


def test_a_tokenizer_that_is_not_berts_has_no_fast_path(tokenizer_json: str) -> None:
    spec = json.loads(tokenizer_json)
    variants = {
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
            "special_tokens": {},
        },
    }
    for key, replacement in variants.items():
        config = json.dumps({**spec, key: replacement})
        assert AsciiWordPiece.for_tokenizer(Tokenizer.from_str(config), config) is None, key


def test_a_tokenizer_that_keeps_case_keeps_it_on_the_fast_path(tokenizer_json: str) -> None:
    spec = json.loads(tokenizer_json)
    config = json.dumps({**spec, "normalizer": {**spec["normalizer"], "lowercase": False}})
    library = Tokenizer.from_str(config)
    library.no_padding()
    fast = AsciiWordPiece.for_tokenizer(library, config)
    assert fast is not None
    text = "Page Numbers in Writer"
    assert fast.encode(text, 128) == library.encode(text).ids != fast.encode(text.lower(), 128)
