-- A/B experiments between model versions, the recommendation log and the feedback on
-- it, and the accounts' minimum scores (schema 5).
CREATE TABLE experiments (
    experiment_id TEXT PRIMARY KEY,
    control_version INTEGER NOT NULL,
    treatment_version INTEGER NOT NULL,
    treatment_share REAL NOT NULL,
    unit TEXT NOT NULL,  -- 'account' or 'key'
    state TEXT NOT NULL,  -- 'waiting', 'running', 'stopped'
    created_at TEXT NOT NULL,
    started_at TEXT,
    stopped_at TEXT,
    winner TEXT,
    activated INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE recommendation_log (
    request_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    model_version INTEGER NOT NULL,
    article_ids TEXT NOT NULL,  -- JSON array, ranked
    scores TEXT NOT NULL,  -- JSON array, in the same order
    at TEXT NOT NULL,
    experiment_id TEXT,
    arm TEXT,
    query_text TEXT  -- only when the service logs ticket texts
);

CREATE INDEX recommendation_log_by_experiment ON recommendation_log (experiment_id);
CREATE INDEX recommendation_log_by_account ON recommendation_log (account_id, at);
CREATE INDEX recommendation_log_by_time ON recommendation_log (at);

CREATE TABLE feedback (
    request_id TEXT NOT NULL REFERENCES recommendation_log (request_id) ON DELETE CASCADE,
    article_id TEXT NOT NULL,  -- '' for an event about the request as a whole
    event TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (request_id, article_id, event)
);

CREATE TABLE account_settings (
    account_id TEXT PRIMARY KEY,
    min_score REAL
);
