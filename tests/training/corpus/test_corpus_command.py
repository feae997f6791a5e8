"""`kbrec corpus` end to end, with stand-ins for apt-get and dpkg-deb on PATH."""

import json
import stat
from pathlib import Path

import pytest

from cli import main as cli
from kbrec.records import Article, Query, read_articles, read_queries, write_jsonl

FAKE_APT_GET = """#!/bin/sh
# Stands in for `apt-get download PACKAGE`; FAKE_APT_MODE picks the outcome.
echo "W: Download is performed unsandboxed as root as file '$2' couldn't be accessed" >&2
case "$FAKE_APT_MODE" in
  missing) echo "E: Unable to locate package $2" >&2; exit 100 ;;
  broken) echo "E: Failed to fetch http://deb.example/$2.deb  404  Not Found" >&2; exit 100 ;;
esac
echo "deb" > "$2_1.0_all.deb"
"""

FAKE_DPKG_DEB = """#!/bin/sh
# Stands in for `dpkg-deb -x DEB DIR`: unpacks the prepared tree.
mkdir -p "$3" && cp -R "$FAKE_HELP_TREE/." "$3"
"""


@pytest.fixture(autouse=True)
def only_corpus_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other commands are not this test's business (and may need heavy dependencies).
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("corpus",))


@pytest.fixture
def fake_tools(tmp_path: Path, unpacked_package: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, script in (("apt-get", FAKE_APT_GET), ("dpkg-deb", FAKE_DPKG_DEB)):
        tool = bin_dir / name
        tool.write_text(script, encoding="utf-8")
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_HELP_TREE", str(unpacked_package))
    monkeypatch.delenv("FAKE_APT_MODE", raising=False)
    return bin_dir


def test_fetch_writes_articles_queries_and_a_summary(
    fake_tools: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "corpus"

    assert cli.main(["corpus", "fetch", "--out", str(out)]) == 0

    articles = read_articles(out / "articles.jsonl")
    queries = read_queries(out / "queries.jsonl")
    assert {(a.account_id, a.article_id) for a in articles} == {
        ("calc", "guide-cellstyles"),
        ("shared", "01-00000100"),
        ("writer", "guide-finding"),
    }
    assert len(queries) == 4
    summary = capsys.readouterr().out
    assert "3 articles in 3 accounts" in summary
    assert "calc 1, shared 1, writer 1" in summary
    assert "4 queries from 7 index entries" in summary


def test_fetch_keeps_accounts_imported_from_elsewhere(fake_tools: Path, tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    write_jsonl(
        out / "articles.jsonl", [Article("acme", "1", "T", "B"), Article("calc", "x", "T", "B")]
    )
    write_jsonl(out / "queries.jsonl", [Query("acme", "reset", "1", "train")])

    assert cli.main(["corpus", "fetch", "--out", str(out)]) == 0

    accounts = [a.account_id for a in read_articles(out / "articles.jsonl")]
    assert accounts.count("acme") == 1
    assert ("calc", "x") not in {
        (a.account_id, a.article_id) for a in read_articles(out / "articles.jsonl")
    }
    assert Query("acme", "reset", "1", "train") in read_queries(out / "queries.jsonl")


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (
            "missing",
            "no package libreoffice-help-xx-yy: 'xx-yy' is not a LibreOffice help language",
        ),
        ("broken", "apt-get download libreoffice-help-xx-yy failed: E: Failed to fetch"),
    ],
)
def test_fetch_download_failures(
    fake_tools: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    mode: str,
    message: str,
) -> None:
    monkeypatch.setenv("FAKE_APT_MODE", mode)

    assert cli.main(["corpus", "fetch", "--lang", "xx-yy", "--out", str(tmp_path / "c")]) == 2

    error = capsys.readouterr().err
    assert message in error
    assert "unsandboxed" not in error
    assert not (tmp_path / "c").exists()


def test_fetch_without_apt_get(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    assert cli.main(["corpus", "fetch", "--out", str(tmp_path / "c")]) == 2

    assert "apt-get not found on PATH" in capsys.readouterr().err


def _export(tmp_path: Path, payload: object) -> Path:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def test_import_zendesk_replaces_only_that_account(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "corpus"
    write_jsonl(
        out / "articles.jsonl",
        [Article("writer", "a", "Writer", "w"), Article("acme", "old", "Old", "o")],
    )
    export = _export(tmp_path, {"articles": [{"id": 7, "title": "New", "body": "<p>n</p>"}]})

    assert (
        cli.main(["corpus", "import-zendesk", str(export), "--account", "acme", "--out", str(out)])
        == 0
    )

    assert read_articles(out / "articles.jsonl") == [
        Article("writer", "a", "Writer", "w"),
        Article("acme", "7", "New", "n"),
    ]
    assert (
        "imported 1 articles for account acme (replacing 1); 2 articles" in capsys.readouterr().out
    )


def test_import_zendesk_into_a_new_directory(tmp_path: Path) -> None:
    export = _export(tmp_path, {"articles": [{"id": 7, "title": "New", "body": "n"}]})
    out = tmp_path / "new"

    assert (
        cli.main(["corpus", "import-zendesk", str(export), "--account", "acme", "--out", str(out)])
        == 0
    )

    assert [a.article_id for a in read_articles(out / "articles.jsonl")] == ["7"]


@pytest.mark.parametrize(
    ("content", "account", "message"),
    [
        ("{oops", "acme", "is not a JSON file"),
        ('{"articles": [{"id": 1, "title": "T"}]}', "acme", "articles[0]: missing 'body'"),
        ('{"articles": []}', "bad id", "invalid account id"),
    ],
)
def test_import_zendesk_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, account: str, message: str
) -> None:
    export = tmp_path / "export.json"
    export.write_text(content, encoding="utf-8")

    assert (
        cli.main(
            ["corpus", "import-zendesk", str(export), "--account", account, "--out", str(tmp_path)]
        )
        == 2
    )

    error = capsys.readouterr().err
    assert error.startswith("kbrec corpus: error: ")
    assert message in error
    assert error.count("\n") == 1


def test_import_zendesk_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.json"

    assert cli.main(["corpus", "import-zendesk", str(missing), "--account", "acme"]) == 2

    assert "cannot read" in capsys.readouterr().err
