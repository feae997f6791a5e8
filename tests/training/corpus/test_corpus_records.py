import json
from collections import Counter
from pathlib import Path

import pytest

from kbrec.records import (
    Article,
    Query,
    assign_split,
    is_valid_id,
    read_articles,
    read_queries,
    write_jsonl,
)


def test_articles_round_trip(tmp_path: Path) -> None:
    articles = [
        Article("writer", "guide-finding", "Finding", "Body\ntext ✓", "en-US"),
        Article("acme", "360001", "Reset", "", None),
    ]
    path = tmp_path / "out" / "articles.jsonl"

    assert write_jsonl(path, articles) == 2
    assert read_articles(path) == articles
    assert "✓" in path.read_text(encoding="utf-8")


def test_queries_round_trip(tmp_path: Path) -> None:
    queries = [Query("calc", "cell styles, applying", "guide-cellstyles", "test")]
    path = tmp_path / "queries.jsonl"

    write_jsonl(path, queries)

    assert read_queries(path) == queries


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "articles.jsonl"
    write_jsonl(path, [Article("a", "1", "Old", "old")])

    write_jsonl(path, [Article("a", "2", "New", "new")])

    assert [a.article_id for a in read_articles(path)] == ["2"]
    assert [p.name for p in tmp_path.iterdir()] == ["articles.jsonl"]


def test_written_files_are_readable_by_others_unless_the_old_file_was_not(tmp_path: Path) -> None:
    new, private = tmp_path / "new.jsonl", tmp_path / "private.jsonl"
    private.write_text("", encoding="utf-8")
    private.chmod(0o600)

    write_jsonl(new, [])
    write_jsonl(private, [])

    assert (new.stat().st_mode & 0o777, private.stat().st_mode & 0o777) == (0o644, 0o600)


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "articles.jsonl"
    write_jsonl(path, [Article("a", "1", "Old", "old")])

    def records():
        yield Article("a", "2", "New", "new")
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError):
        write_jsonl(path, records())

    assert [a.article_id for a in read_articles(path)] == ["1"]
    assert [p.name for p in tmp_path.iterdir()] == ["articles.jsonl"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not JSON|Expecting"),
        ('["a"]', "expected a Article object"),
        ('{"account_id": "a", "article_id": "1", "title": "t"}', "expected a Article object"),
        ('{"account_id": "a", "article_id": "1", "title": 3, "body": ""}', "of strings"),
        (
            '{"account_id": "a b", "article_id": "1", "title": "t", "body": ""}',
            "invalid account id",
        ),
    ],
)
def test_read_names_the_bad_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "articles.jsonl"
    good = json.dumps({"account_id": "a", "article_id": "1", "title": "t", "body": "b"})
    path.write_text(f"{good}\n\n{line}\n", encoding="utf-8")

    with pytest.raises(ValueError, match=rf"articles.jsonl:3: .*({message})"):
        read_articles(path)


@pytest.mark.parametrize("value", ["guide-finding", "01-06100000", "360001234", "a.b_c-D"])
def test_valid_ids(value: str) -> None:
    assert is_valid_id(value)


@pytest.mark.parametrize("value", ["", ".", "..", "a/b", "a b", "é", "a?b", "x" * 129, 12, None])
def test_invalid_ids(value: object) -> None:
    assert not is_valid_id(value)


def test_records_reject_invalid_ids_and_splits() -> None:
    with pytest.raises(ValueError, match="invalid article id"):
        Article("writer", "guide/finding", "T", "B")
    with pytest.raises(ValueError, match="invalid account id"):
        Query("../x", "text", "a", "train")
    with pytest.raises(ValueError, match="invalid split"):
        Query("writer", "text", "a", "dev")


def test_assign_split_is_stable_and_roughly_80_10_10() -> None:
    # Golden values: a salted or changed hash would move queries between splits.
    assert [assign_split(k) for k in ("page styles", "zooming", "f")] == [
        "train",
        "test",
        "validation",
    ]
    counts = Counter(assign_split(f"query {i}") for i in range(10_000))

    assert 7_700 < counts["train"] < 8_300
    assert 850 < counts["validation"] < 1_150
    assert 850 < counts["test"] < 1_150
