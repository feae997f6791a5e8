-- A/B experiments between model versions, the recommendation log and the feedback on
-- it, and the accounts' minimum scores (the same tables as SQLite's schema 5).
CREATE TABLE experiments (
    experiment_id text PRIMARY KEY,
    control_version integer NOT NULL,
    treatment_version integer NOT NULL,
    treatment_share double precision NOT NULL,
    unit text NOT NULL,  -- 'account' or 'key'
    state text NOT NULL,  -- 'waiting', 'running', 'stopped'
    created_at text NOT NULL,  -- ISO 8601 UTC, as the store's records carry it
    started_at text,
    stopped_at text,
    winner text,
    activated boolean NOT NULL DEFAULT false
);

CREATE TABLE recommendation_log (
    request_id text PRIMARY KEY,
    account_id text NOT NULL,
    model_version integer NOT NULL,
    article_ids text NOT NULL,  -- JSON array, ranked
    scores text NOT NULL,  -- JSON array, in the same order
    at text NOT NULL,
    experiment_id text,
    arm text,
    query_text text  -- only when the service logs ticket texts
);

CREATE INDEX recommendation_log_by_experiment ON recommendation_log (experiment_id);
CREATE INDEX recommendation_log_by_account ON recommendation_log (account_id, at);
CREATE INDEX recommendation_log_by_time ON recommendation_log (at);

CREATE TABLE feedback (
    request_id text NOT NULL REFERENCES recommendation_log (request_id) ON DELETE CASCADE,
    article_id text NOT NULL,  -- '' for an event about the request as a whole
    event text NOT NULL,
    at text NOT NULL,
    PRIMARY KEY (request_id, article_id, event)
);

CREATE TABLE account_settings (
    account_id text PRIMARY KEY,
    min_score double precision
);
