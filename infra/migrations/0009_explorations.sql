-- Towerlight schema, version 9: item exploration's decisions (towerlight.exploration). Written by ingest
-- in the transaction that stores their impression; read by the learner, which turns each into one Vowpal
-- Wabbit example once its clicks had time to arrive, and by admin stats.

-- One row per recommendation whose explore slot was chosen by the contextual bandit.
CREATE TABLE explorations (
    recommendation_id  text PRIMARY KEY,         -- the impression's (impressions.recommendation_id)
    slot               integer NOT NULL CHECK (slot >= 1),  -- 1-based position of the chosen item
    item_id            text NOT NULL,            -- the chosen item: its attributed events are the reward
    chosen             integer NOT NULL CHECK (chosen >= 0),  -- its index in actions
    probability        double precision NOT NULL -- the PMF probability it was sampled with (propensity)
                       CHECK (probability > 0 AND probability <= 1),
    greedy             boolean NOT NULL,         -- the model's best action (exploited) or not (explored)
    shared             text NOT NULL,            -- VW features of the user (the shared line)
    actions            text[] NOT NULL,          -- VW features of each candidate, in ranked order
    model_version      text,                     -- the VW model that decided; NULL before the first one
    created_at         timestamptz NOT NULL,     -- when recommend decided
    received_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (chosen < cardinality(actions))
);

-- The learner walks decisions in (received_at, recommendation_id) order past its watermark.
CREATE INDEX explorations_received_idx ON explorations (received_at, recommendation_id);
-- Admin stats read windows of decisions.
CREATE INDEX explorations_created_idx ON explorations (created_at);
