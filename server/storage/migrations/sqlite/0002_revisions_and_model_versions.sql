-- Article revisions (a stale background vector is refused) and the model versions'
-- roles, persisted so a restart resumes them (schema 2).
ALTER TABLE articles ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;

-- IF NOT EXISTS: some schema 1 files were written without the index.
CREATE INDEX IF NOT EXISTS embeddings_by_version ON embeddings (model_version);

CREATE TABLE model_versions (
    version INTEGER PRIMARY KEY,
    role TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    error TEXT,
    updated_at TEXT NOT NULL
);
