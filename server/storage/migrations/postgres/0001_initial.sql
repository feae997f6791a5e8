-- Articles, their vectors per model version, the model versions' roles and the change
-- log (the same tables as SQLite's schema 3).
CREATE TABLE articles (
    account_id text NOT NULL,
    article_id text NOT NULL,
    title text NOT NULL,
    body text NOT NULL,
    locale text,
    updated_at text NOT NULL,  -- ISO 8601 UTC, as the store's records carry it
    revision bigint NOT NULL,  -- the seq of the change that wrote this text
    PRIMARY KEY (account_id, article_id)
);

CREATE TABLE embeddings (
    account_id text NOT NULL,
    article_id text NOT NULL,
    model_version integer NOT NULL,
    dim integer NOT NULL,
    vector bytea NOT NULL,  -- little-endian float32 [dim]
    PRIMARY KEY (account_id, article_id, model_version),
    FOREIGN KEY (account_id, article_id) REFERENCES articles (account_id, article_id)
        ON DELETE CASCADE
);

CREATE INDEX embeddings_by_version ON embeddings (model_version);

CREATE TABLE model_versions (
    version integer PRIMARY KEY,
    role text NOT NULL,
    model_sha256 text NOT NULL,
    error text,
    updated_at text NOT NULL
);

-- Appended by every write transaction; appends are serialized (an advisory lock, see
-- postgres.py), so seqs commit in order. An identity never hands out a value twice.
CREATE TABLE changes (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    account_id text,
    article_id text,
    model_version integer,
    at text NOT NULL
);
