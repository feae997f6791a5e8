-- Articles and their vectors per model version (schema 1).
CREATE TABLE articles (
    account_id TEXT NOT NULL,
    article_id TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    locale TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (account_id, article_id)
);

CREATE TABLE embeddings (
    account_id TEXT NOT NULL,
    article_id TEXT NOT NULL,
    model_version INTEGER NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,  -- little-endian float32 [dim]
    PRIMARY KEY (account_id, article_id, model_version),
    FOREIGN KEY (account_id, article_id) REFERENCES articles (account_id, article_id)
        ON DELETE CASCADE
);

CREATE INDEX embeddings_by_version ON embeddings (model_version);
