-- Accounts exist once created, with optional quotas (NULL: the server's defaults), and
-- their API keys, kept as SHA-256 digests of the key, never the key (the same tables
-- as SQLite's schema 4).
CREATE TABLE accounts (
    account_id text PRIMARY KEY,
    max_articles bigint,
    max_article_bytes bigint,
    created_at text NOT NULL  -- ISO 8601 UTC, as the store's records carry it
);

CREATE TABLE api_keys (
    key_id text PRIMARY KEY,
    account_id text NOT NULL REFERENCES accounts (account_id),
    key_sha256 text NOT NULL UNIQUE,
    label text NOT NULL DEFAULT '',
    created_at text NOT NULL,
    revoked_at text
);

CREATE INDEX api_keys_by_account ON api_keys (account_id);

-- Every account that has articles already exists.
INSERT INTO accounts (account_id, created_at)
SELECT DISTINCT account_id,
    to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"+00:00"')
FROM articles;
