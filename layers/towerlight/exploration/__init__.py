"""Item exploration: a Vowpal Wabbit contextual bandit (``cb_explore_adf``) that picks one slot's item.

- ``features``: the VW text examples (user context, one line per candidate action);
- ``explorer``: recommend's decision: the slot's item sampled from VW's PMF, the page rearranged;
- ``model``: the versioned VW model in the artifact store and recommend's short cache of it;
- ``learning``: ingest's side: exploration records in Postgres, learned once each into a new version.
"""
