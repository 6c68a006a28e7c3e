-- Towerlight schema, version 5: impressions (what recommend showed, and with which probability) and the
-- strategy bandit's additive counters. Written only by towerlight.impressions (ingest), which updates
-- bandit_arms with `n = n + delta` for rows it newly inserted, so replays and parallel consumers never
-- count an impression or a reward twice.

-- One row per recommendation response. item_ids[p] is the item shown at position p (1-based).
-- reward is the best reward (event_types.py) of the events attributed to it so far: an event carrying
-- this recommendation_id for one of item_ids; an event may arrive before or after its impression.
CREATE TABLE impressions (
    recommendation_id  text PRIMARY KEY,
    user_id            text NOT NULL,
    segment            text NOT NULL,            -- the bandit's context (e.g. cold / warm user)
    strategy           text NOT NULL,            -- the arm played
    variant            text,                     -- experiment variant, if the user was in one
    model_version      text NOT NULL,
    item_ids           text[] NOT NULL,
    propensity         double precision NOT NULL -- probability that `strategy` was chosen (1 when pinned)
                       CHECK (propensity > 0 AND propensity <= 1),
    item_propensities  double precision[],       -- per position, when an item-level explorer chose them
    reward             double precision NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL,
    received_at        timestamptz NOT NULL DEFAULT now()
);

-- Off-policy evaluation and admin stats read windows of impressions.
CREATE INDEX impressions_created_idx ON impressions (created_at);

-- Events that arrived before their impression are looked up when it arrives. Partial: events without
-- a recommendation_id (most of them) cost the write path nothing here.
CREATE INDEX events_recommendation_idx ON events (recommendation_id) WHERE recommendation_id IS NOT NULL;

-- The strategy bandit's state: Beta posteriors are Beta(1 + reward_sum, 1 + impressions - reward_sum).
CREATE TABLE bandit_arms (
    segment      text NOT NULL,
    strategy     text NOT NULL,
    impressions  bigint NOT NULL DEFAULT 0 CHECK (impressions >= 0),
    successes    bigint NOT NULL DEFAULT 0 CHECK (successes >= 0),      -- impressions with reward > 0
    reward_sum   double precision NOT NULL DEFAULT 0 CHECK (reward_sum >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (segment, strategy)
);
