"""Operating Towerlight: model status, promote/rollback, retraining runs and statistics (the admin API).

- ``towerlight.admin.service``: model operations on the artifact store and retraining requests;
- ``towerlight.admin.runs``: the ``retrain_runs`` table (the retrain function's idempotency record);
- ``towerlight.admin.stats``: event volumes, click-through and popular items from Postgres.
"""
