-- Towerlight schema, version 2: one row per retraining run, keyed by the caller's execution id.
-- EventBridge Scheduler passes <aws.scheduler.execution-id> (the same on its own retries) and
-- POST /admin/retrain a job id; the retrain function claims the row before training and fills it in
-- after, so a repeated request returns the recorded result instead of training again
-- (towerlight.admin.runs).
CREATE TABLE retrain_runs (
    execution_id text PRIMARY KEY,
    trigger      text NOT NULL,            -- schedule | admin | manual
    status       text NOT NULL
                 CHECK (status IN ('queued', 'running', 'succeeded', 'skipped', 'failed')),
    version      text,                     -- the model version published, if any
    promoted     boolean,                  -- whether the quality gate let it replace CURRENT
    attempts     integer NOT NULL DEFAULT 0,
    requested_at timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    detail       jsonb NOT NULL DEFAULT '{}'  -- window, outcome, gate, metrics, timings or the error
);

-- "The latest runs" for operators.
CREATE INDEX retrain_runs_requested_idx ON retrain_runs (requested_at DESC);
