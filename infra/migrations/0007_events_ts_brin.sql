-- Towerlight schema, version 7: the time index of events becomes a BRIN index.
-- Every event written pays for every index of events; the b-tree on ts was a large share of ingest's
-- server time (towerlight bench ingest). Events are appended roughly in time order, so a BRIN index
-- (one summary per 128 pages, a few pages in all) serves the same reads: the time windows of admin
-- stats and of retraining. autosummarize summarizes each page range once filled; ranges not yet
-- summarized are always read, so results stay exact.
DROP INDEX events_ts_idx;
CREATE INDEX events_ts_brin_idx ON events USING brin (ts) WITH (autosummarize = on);
