-- Towerlight schema: promoted items (towerlight.db.promotions, `towerlight promotions`).
-- A promotion pins an item at a position of every page, or boosts it up the page; serving reads the
-- live ones (within their window) every 30 s, and caps how many appear on one page.
-- They live here, beside items.active, because operators change them at any time and for a time
-- window, without publishing a model version (versions are immutable).
CREATE TABLE promotions (
    item_id    text PRIMARY KEY,
    mode       text NOT NULL CHECK (mode IN ('pin', 'boost')),
    position   integer CHECK (position >= 1),            -- pin: 1-based place on the page
    boost      double precision CHECK (boost > 0 AND boost <= 1),  -- boost: share of the candidate list to climb
    starts_at  timestamptz,                               -- NULL: already live
    ends_at    timestamptz,                               -- NULL: until removed
    note       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((mode = 'pin') = (position IS NOT NULL)),
    CHECK ((mode = 'boost') = (boost IS NOT NULL)),
    CHECK (ends_at IS NULL OR starts_at IS NULL OR ends_at > starts_at)
);
