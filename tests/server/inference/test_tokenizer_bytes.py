"""The version's tokenizer is built from the bytes that matched its recorded sha256: a
tokenizer.json replaced after verification is refused, never used to tokenize."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from serving_helpers import publish_bag_of_words_version

from kbrec.repository import TOKENIZER_FILE
from server.inference.backends.base import BackendLoadError
from server.inference.tokenizing import VersionTokenizer
from server.versions.verification import scan_repository


def test_the_verified_tokenizer_loads_and_a_replaced_one_is_refused(tmp_path: Path) -> None:
    publish_bag_of_words_version(tmp_path)
    version = scan_repository(tmp_path).statuses[0].version
    assert version is not None

    async def test() -> None:
        with ThreadPoolExecutor(1) as executor:
            tokenizer = await VersionTokenizer.open(version, executor)
            (ids,) = await tokenizer.encode(["printer"])
            assert ids[0] == 2 and ids[-1] == 3 and len(ids) == 3  # [CLS] printer [SEP]
            # Another vocabulary under the same name, after the version was verified.
            path = version.path / TOKENIZER_FILE
            data = json.loads(path.read_text(encoding="utf-8"))
            data["model"]["vocab"] = {word: i for i, word in enumerate(data["model"]["vocab"])}
            path.write_text(json.dumps(data), encoding="utf-8")
            with pytest.raises(BackendLoadError, match="sha256"):
                await VersionTokenizer.open(version, executor)

    asyncio.run(test())
