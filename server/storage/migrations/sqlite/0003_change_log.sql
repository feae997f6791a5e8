-- The change log other processes follow; every write appends to it in its own
-- transaction (schema 3). AUTOINCREMENT: a seq is never reused, even once pruned.
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    account_id TEXT,
    article_id TEXT,
    model_version INTEGER,
    at TEXT NOT NULL
);

-- From now on an article's revision is the seq of the change that wrote it. Start the
-- sequence above every revision already given out, so no new revision equals an old one.
INSERT INTO sqlite_sequence (name, seq) SELECT 'changes', coalesce(max(revision), 0) FROM articles;
