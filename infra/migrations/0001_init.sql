-- Towerlight schema, version 1: interaction events, the item catalogue and user attributes.
-- Applied once, in a transaction, by `towerlight db migrate` (towerlight.db.migrate).

-- One row per interaction. event_id is the idempotency key: every writer inserts with
-- ON CONFLICT (event_id) DO NOTHING, so SQS redeliveries and repeated imports add nothing.
CREATE TABLE events (
    event_id          uuid PRIMARY KEY,
    user_id           text NOT NULL,
    item_id           text NOT NULL,
    event_type        text NOT NULL,
    value             double precision,
    ts                timestamptz NOT NULL,
    recommendation_id text,
    context           jsonb,
    received_at       timestamptz NOT NULL DEFAULT now()
);

-- "The last N events of a user", read on every recommendation (also serves the user's removed items).
CREATE INDEX events_user_ts_idx ON events (user_id, ts DESC);
-- Retraining windows (ts >= since AND ts < until).
CREATE INDEX events_ts_idx ON events (ts);

CREATE TABLE items (
    item_id    text PRIMARY KEY,
    title      text,
    categories text[] NOT NULL DEFAULT '{}',
    attributes jsonb NOT NULL DEFAULT '{}',
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Serving filters out the (few) inactive items of a (large) catalogue.
CREATE INDEX items_inactive_idx ON items (item_id) WHERE NOT active;

CREATE TABLE users (
    user_id    text PRIMARY KEY,
    attributes jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
