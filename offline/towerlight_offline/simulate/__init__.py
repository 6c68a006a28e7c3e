"""``towerlight simulate``: the real recommend, track and ingest handlers against users whose true
preferences are known, so every policy's reward, regret and off-policy estimate can be checked exactly.

- ``world``: the synthetic catalogue and users, and the true click model (with a hidden item quality);
- ``stack``: the model trained by the real pipeline, published to moto's S3; the handlers on a fresh
  Postgres schema and SQS queue per policy;
- ``run``: the rounds of one policy through the handlers;
- ``summary``: reward, regret, the bandit's share on its best arm, Postgres accounting, OPE vs truth;
- ``report``: the PNG, markdown and JSON of a run.

Example::

    >>> result = run_simulation(SimulationConfig(rounds=2000), [THOMPSON], WorldConfig(), ModelConfig())
    >>> write_report(result, Path("simulation"))
    (PosixPath('simulation/simulation.md'), PosixPath('simulation/simulation.json'), PosixPath(...png))
"""
