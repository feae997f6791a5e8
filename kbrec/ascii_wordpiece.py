"""A fast path for BERT's tokenizer on plain ASCII text, with the same ids.

The `tokenizers` library spends about 31 µs on a 17-word ticket, most of it keeping
the alignment of every character through normalization and pre-tokenization, which
nothing here reads (BENCHMARKS.md, "The front end, fourth pass"). For a BERT pipeline
(BertNormalizer, BertPreTokenizer, WordPiece, "[CLS] $A [SEP]") and text of printable
ASCII, tab, newline and carriage return, those steps reduce to exact string
operations: lowercasing (accents and Chinese characters do not occur; the control
characters that clean_text removes are excluded), splitting on whitespace, and each
ASCII punctuation character a word of its own. The word pieces still come from the
library's own WordPiece model, cached per word. About 4 µs per ticket.

Anything else falls back to the library (`encode` returns None): other characters, text
containing one of the tokenizer's added tokens (the library matches "[MASK]" in the raw
text before normalizing), or a tokenizer.json whose pipeline is not this one.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any, Final

from tokenizers import Tokenizer

PLAIN_ASCII: Final = re.compile(r"[\t\n\r\x20-\x7e]*")
_PUNCTUATION: Final = re.escape(string.punctuation)  # BERT's ASCII punctuation, exactly
WORDS: Final = re.compile(rf"[^\s{_PUNCTUATION}]+|[{_PUNCTUATION}]")
MAX_CACHED_WORDS: Final = 200_000  # beyond it, words are still tokenized, not kept


class AsciiWordPiece:
    def __init__(
        self, tokenizer: Tokenizer, lowercase: bool, cls_id: int, sep_id: int, added: list[str]
    ) -> None:
        self._model = tokenizer.model
        self._lowercase = lowercase
        self._cls = cls_id
        self._sep = sep_id
        # One search for all of them (the library matches added tokens in the raw text).
        self._added = re.compile("|".join(map(re.escape, added))) if added else None
        self._pieces: dict[str, list[int]] = {}

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer, config: str) -> AsciiWordPiece | None:
        """The fast path for `tokenizer` (built from `config`, its tokenizer.json), or
        None when its pipeline is not BERT's."""
        spec: dict[str, Any] = json.loads(config)
        normalizer = spec.get("normalizer") or {}
        bert_normalizer = normalizer.get("type") == "BertNormalizer" and normalizer.get(
            "clean_text", False
        )
        bert_words = (spec.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
        wordpiece = (spec.get("model") or {}).get("type") == "WordPiece"
        specials = _cls_and_sep(spec.get("post_processor") or {})
        if not (bert_normalizer and bert_words and wordpiece) or specials is None:
            return None
        added = [token["content"] for token in spec.get("added_tokens") or ()]
        return cls(tokenizer, bool(normalizer.get("lowercase")), *specials, added)

    def encode(self, text: str, max_length: int) -> list[int] | None:
        """[CLS] … [SEP] ids truncated to `max_length` as the library's LongestFirst
        truncation does, or None if the library must tokenize `text`."""
        if PLAIN_ASCII.fullmatch(text) is None:
            return None
        if self._added is not None and self._added.search(text) is not None:
            return None
        if self._lowercase:
            text = text.lower()
        ids = [self._cls]
        pieces = self._pieces
        for word in WORDS.findall(text):
            found = pieces.get(word)
            if found is None:
                found = [token.id for token in self._model.tokenize(word)]
                if len(pieces) < MAX_CACHED_WORDS:
                    pieces[word] = found
            ids += found
        del ids[max_length - 1 :]
        ids.append(self._sep)
        return ids


def _cls_and_sep(post_processor: dict[str, Any]) -> tuple[int, int] | None:
    """The ids around a single text if it becomes "[CLS] $A [SEP]" (TemplateProcessing or
    BertProcessing), else None."""
    kind = post_processor.get("type")
    if kind == "BertProcessing":
        (cls_name, cls_id), (sep_name, sep_id) = post_processor["cls"], post_processor["sep"]
        return (cls_id, sep_id) if (cls_name, sep_name) == ("[CLS]", "[SEP]") else None
    if kind != "TemplateProcessing":
        return None
    single = post_processor.get("single") or []
    shape = [next(iter(item)) for item in single]
    names = [item["SpecialToken"]["id"] for item in single if "SpecialToken" in item]
    if shape != ["SpecialToken", "Sequence", "SpecialToken"] or names != ["[CLS]", "[SEP]"]:
        return None
    ids = [post_processor["special_tokens"][name]["ids"] for name in names]
    if any(len(found) != 1 for found in ids):
        return None
    return ids[0][0], ids[1][0]
