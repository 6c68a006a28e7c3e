"""The strategy bandit: additive per-(segment, strategy) counters in Postgres and Thompson sampling over them."""
