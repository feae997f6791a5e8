"""Tokenization off the event loop, with the tokenizer of the version being served.

Token ids only mean something to the model version whose tokenizer made them, so
a `VersionTokenizer` is built per version; long texts are truncated to the
version's max length, never rejected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor

from kbrec.repository import ModelVersion
from kbrec.tokenization import TextTokenizer
from server.inference.backends.base import BackendLoadError


def load_tokenizer(version: ModelVersion) -> TextTokenizer:
    data = version.read_tokenizer()
    return TextTokenizer(version.tokenizer_path, version.metadata.max_length, data)


class VersionTokenizer:
    def __init__(self, tokenizer: TextTokenizer, executor: Executor) -> None:
        self._tokenizer = tokenizer
        self._executor = executor

    @classmethod
    async def open(cls, version: ModelVersion, executor: Executor) -> VersionTokenizer:
        """Built from the bytes that matched the version's recorded sha256, as the model
        is: a tokenizer.json replaced after verification is refused, not loaded."""
        loop = asyncio.get_running_loop()
        try:
            tokenizer = await loop.run_in_executor(executor, load_tokenizer, version)
        except Exception as exc:  # RepositoryError, ValueError, the tokenizers library's own
            raise BackendLoadError(f"version {version.number} tokenizer: {exc}") from exc
        return cls(tokenizer, executor)

    @property
    def max_length(self) -> int:
        return self._tokenizer.max_length

    async def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """[CLS] … [SEP] ids per text, truncated to the version's max length."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._tokenizer.encode, list(texts))
