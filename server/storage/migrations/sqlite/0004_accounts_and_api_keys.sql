-- Accounts exist once created, with optional quotas (NULL: the server's defaults), and
-- their API keys, kept as SHA-256 digests of the key, never the key (schema 4).
CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY,
    max_articles INTEGER,
    max_article_bytes INTEGER,
    created_at TEXT NOT NULL
);

CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    key_sha256 TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

CREATE INDEX api_keys_by_account ON api_keys (account_id);

-- Every account that has articles already exists.
INSERT INTO accounts (account_id, created_at)
SELECT DISTINCT account_id, strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') FROM articles;
