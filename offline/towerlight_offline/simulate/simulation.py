"""``towerlight simulate`` end to end: world, local stack, trained model, one run per policy, summaries.

Example::

    >>> result = run_simulation(SimulationConfig(rounds=2000), [THOMPSON], WorldConfig(), ModelConfig())
    >>> [(s.policy, round(s.expected_reward, 1), s.best_fixed) for s in result.summaries]
    [('thompson', 412.3, 'two_tower')]
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from towerlight_offline.bench import local_stack
from towerlight_offline.bench.report import load_average
from towerlight_offline.simulate.run import Policy, PolicyTrace, Say, SimulationConfig, run_policy, simulated_users
from towerlight_offline.simulate.stack import ModelConfig, history_rows, policy_environment, publish_model
from towerlight_offline.simulate.summary import PolicySummary, summarize
from towerlight_offline.simulate.world import SimulatedWorld, WorldConfig

logger = logging.getLogger(__name__)

BUCKET = "towerlight-sim"
THOMPSON = Policy(
    "thompson",
    {"TOWERLIGHT_BANDIT_STRATEGIES": "two_tower,content,popularity"},
    "auto: Thompson sampling over two_tower, content, popularity per segment (5% uniform exploration)",
)
VW = Policy(
    "vw",
    {
        "TOWERLIGHT_EXPLORATION_EPSILON": "0.1",
        # learned at every drain: a decision's clicks are drained with it, and a model version is read
        # within a second (live defaults: decisions wait 600 s, one pass a minute, models re-read every 60 s)
        "TOWERLIGHT_EXPLORATION_WINDOW_SECONDS": "0",
        "TOWERLIGHT_EXPLORATION_LEARN_SECONDS": "0",
        "MODEL_REFRESH_SECONDS": "1",
    },
    "auto: the best available strategy, its first slot chosen by Vowpal Wabbit (cb_explore_adf, epsilon 0.1) "
    "among the top 10, learned by ingest from every drained batch",
)
BUILT_IN_POLICIES = {policy.name: policy for policy in (THOMPSON, VW)}


@dataclass
class SimulationResult:
    """Everything a report needs: the configuration, each policy's trace and summary, the machine."""

    config: SimulationConfig
    world: WorldConfig
    model: ModelConfig
    model_version: str
    traces: list[PolicyTrace]
    summaries: list[PolicySummary]
    seconds: dict[str, float] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "world": asdict(self.world),
            "model": asdict(self.model) | {"version": self.model_version},
            "policies": [s.to_json() for s in self.summaries],
            "seconds": self.seconds,
            "machine": self.machine,
        }


def run_simulation(
    config: SimulationConfig,
    policies: Sequence[Policy],
    world_config: WorldConfig,
    model: ModelConfig,
    say: Say = logger.info,
) -> SimulationResult:
    """Train once, then run each of ``policies`` for ``config.rounds`` rounds in a fresh schema and queue."""
    if not policies:
        raise ValueError("no policy to simulate")
    machine = {"python": platform.python_version(), "load_average_before": load_average()}
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    world = SimulatedWorld.generate(world_config)
    users = simulated_users(world, config)
    history = history_rows(world, users, config.history)
    seen: dict[str, set[str]] = {}
    for row in history:
        seen.setdefault(row.user_id, set()).add(row.item_id)
    say(
        f"world: {world.dataset.summary()}; {len(users)} simulated users "
        f"({sum(u in seen for u in users)} with history); {len(history):,} past events in Postgres"
    )
    traces, summaries = [], []
    with local_stack(s3_bucket=BUCKET) as stack:
        assert stack.store_uri is not None
        version = publish_model(world, stack.store_uri, model, say)
        seconds["train"] = time.perf_counter() - started
        say(f"model {version} trained and published in {seconds['train']:.0f} s")
        for policy in policies:
            say(f"policy {policy.name}: {config.rounds:,} rounds ({policy.description or dict(policy.env)})")
            with policy_environment(stack, history, policy.env) as functions:
                trace = run_policy(world, functions, policy, users, seen, config, say)
            traces.append(trace)
            summaries.append(summarize(trace, policy, config.seed))
            seconds[policy.name] = trace.seconds
    seconds["total"] = time.perf_counter() - started
    machine["load_average_after"] = load_average()
    return SimulationResult(config, world_config, model, version, traces, summaries, seconds, machine)
