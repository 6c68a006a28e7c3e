"""The simulator's report: ``simulation.md`` (tables and the done-when figures), ``simulation.json`` (every
figure) and ``simulation.png`` (cumulative reward, cumulative regret, the bandit's share on its best arm).

Example::

    >>> write_report(result, Path("simulation"), command="towerlight simulate --rounds 20000")
    (PosixPath('simulation/simulation.md'), PosixPath('simulation/simulation.json'), PosixPath(...png))
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from towerlight_offline.console import table
from towerlight_offline.simulate.run import FIXED_STRATEGIES
from towerlight_offline.simulate.simulation import SimulationResult
from towerlight_offline.simulate.summary import SHARE_TARGET, PolicySummary


def done_when(result: SimulationResult) -> list[tuple[str, bool | None, str]]:
    """The issue's done-when figures: (claim, met (None: not measured in this run), the figure)."""
    lines: list[tuple[str, bool | None, str]] = []
    for s in result.summaries:
        if s.bandit is None:
            best = s.fixed_reward[s.best_fixed]
            gain = s.expected_reward / best - 1 if best else 0.0
            figure = (
                f"{s.expected_reward:.1f} expected ({s.realized_reward:.1f} realized) vs {s.best_fixed} {best:.1f} "
                f"on the same requests ({gain:+.1%})"
            )
            lines.append((f"{s.policy}: cumulative reward beats the best fixed strategy's", s.beats_best_fixed, figure))
            continue
        b = s.bandit
        after = f"{b.share_after:.1%}" if b.share_after is not None else "n/a"
        figure = (
            f"a {b.window}-request window first reached {SHARE_TARGET:.0%} at round {b.rounds_to_target or 'never'}; "
            f"after it {after} of warm requests went to {b.best} (by quarter: "
            + ", ".join(f"{q:.0%}" for q in b.share_by_quarter)
            + ")"
        )
        met = b.share_after is not None and b.share_after >= SHARE_TARGET
        lines.append(
            (f"{s.policy}: >= {SHARE_TARGET:.0%} of warm traffic on the best arm after a stated round", met, figure)
        )
        covered = sum(o.covers for o in s.ope)
        lines.append((
            f"{s.policy}: OPE intervals (95%) cover the true values",
            covered == len(s.ope) if s.ope else None,
            f"{covered} of {len(s.ope)} intervals cover the truth",
        ))  # fmt: skip
    return lines


def write_report(result: SimulationResult, out: Path, command: str = "") -> tuple[Path, Path, Path]:
    """Write the markdown, JSON and PNG of ``result`` into ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    md, js, png = out / "simulation.md", out / "simulation.json", out / "simulation.png"
    _plot(result, png)
    data = result.to_json() | {
        "command": command,
        "done_when": [{"claim": c, "met": m, "figure": f} for c, m, f in done_when(result)],
    }
    js.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md.write_text(_markdown(result, command, png.name))
    return md, js, png


def _markdown(result: SimulationResult, command: str, figure: str) -> str:
    c, w = result.config, result.world
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Towerlight simulation",
        "",
        f"Generated {stamp}" + (f" by `{command}`" if command else "") + ".",
        "",
        f"- world: synthetic, {w.users:,} users ({w.cold_users} held out as never seen), {w.items:,} items, "
        f"{w.events:,} events, {w.categories} categories; click logit = {w.base} + {w.favourite}·favourite category "
        f"+ {w.popularity}·z(log popularity) + hidden quality ~ N(0, {w.quality}²); "
        f"position bias {'1/log2(rank+1)' if w.position_bias else 'none'}; "
        "reward = click weight when any item is clicked",
        f"- model {result.model_version}: the real pipeline, {result.model.epochs} epochs, dim {result.model.dim}, "
        f"ranker {'on' if result.model.ranker else 'off'}",
        f"- {c.rounds:,} rounds per policy, k = {c.k}, {c.warm_users} warm + {c.cold_users} cold users, "
        f"queue drained into ingest every {c.drain_every} rounds, {c.duplicate_rate:.0%} of track calls sent twice, "
        f"seed {c.seed}",
        "- seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items())
        + f"; load average before {result.machine.get('load_average_before')}, "
        f"after {result.machine.get('load_average_after')}",
        "",
        "## Done when",
        "",
        table(["claim", "met", "figure"], [[cl, _yes(m), f] for cl, m, f in done_when(result)]),
        "",
        "## Reward (expected, exact under the click model; regret against the best list of each request)",
        "",
        table(
            ["policy", "expected", "realized", "oracle", "regret", "best fixed on the same requests", "served",
             "rounds/s", "recommend p50 ms"],
            [[s.policy, f"{s.expected_reward:.1f}", f"{s.realized_reward:.1f}", f"{s.oracle_reward:.1f}",
              f"{s.regret:.1f}", f"{s.best_fixed} {s.fixed_reward[s.best_fixed]:.1f}",
              ", ".join(f"{k} {v:.0%}" for k, v in s.served.items()), f"{s.rounds_per_second:.1f}",
              f"{s.handler_p50_ms:.1f}"] for s in result.summaries],
        ),
        "",
        "Fixed strategies on each policy's requests (what the service shows when asked for that strategy, "
        "same user, same moment):",
        "",
        table(["requests of", *FIXED_STRATEGIES],
              [[s.policy, *(f"{s.fixed_reward[f]:.1f}" for f in FIXED_STRATEGIES)] for s in result.summaries]),
    ]  # fmt: skip
    for s in result.summaries:
        lines += _bandit_section(s)
    lines += ["", f"![cumulative reward and regret]({figure})", ""]
    return "\n".join(lines)


def _bandit_section(s: PolicySummary) -> list[str]:
    lines = ["", f"## {s.policy}: accounting (Postgres against the simulator)", ""]
    lines.append(
        table(
            ["identity", "simulator", "Postgres", "equal"],
            [[c.name, c.expected, c.stored, _yes(c.ok)] for c in s.checks],
        )
    )
    if s.item_decisions:
        lines += [
            "",
            f"Item exploration: {s.item_decisions} decisions stored, {s.item_decisions_explored} of them "
            f"not the model's best, {s.item_models_used} learned VW model versions used (before the first: "
            "epsilon-greedy around the ranking).",
        ]
    if s.bandit is not None:
        b = s.bandit
        lines += [
            "",
            f"## {s.policy}: the strategy bandit on warm requests",
            "",
            "True value per warm request of always serving each arm: "
            + ", ".join(f"{a} {v:.4f}" for a, v in b.true_values.items())
            + f". Best: {b.best}. {s.same_as_fixed} of {s.rounds} responses equal that strategy's own list.",
        ]
        if s.best_fixed not in b.arms:
            lines.append(
                f"The best fixed strategy over all requests, {s.best_fixed}, is not one of the bandit's arms "
                f"({', '.join(b.arms)}): the bandit cannot choose it."
            )
    if s.ope:
        lines += [
            "",
            f"## {s.policy}: off-policy estimates of always serving each arm (warm impressions) vs the truth",
            "",
            table(
                ["always", "true value", "estimator", "estimate", "95% low", "high", "effective n", "covers"],
                [
                    [o.strategy, o.truth, o.estimator, o.value, o.low, o.high, f"{o.effective_n:.0f}", _yes(o.covers)]
                    for o in s.ope
                ],
            ),
        ]
    return lines


def _yes(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: "n/a"}[met]


def _plot(result: SimulationResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bandits = [s for s in result.summaries if s.bandit is not None]
    figure, axes = plt.subplots(1, 3 if bandits else 2, figsize=(16 if bandits else 11, 4.6))
    reward_axis, regret_axis = axes[0], axes[1]
    reference = result.traces[0]
    rounds = np.arange(1, len(reference.value) + 1)
    for strategy in FIXED_STRATEGIES:
        values = reference.array(strategy)
        label = f"always {strategy}"
        reward_axis.plot(rounds, np.cumsum(values), linestyle="--", linewidth=1, label=label)
        regret = np.cumsum(reference.array("oracle") - values)
        regret_axis.plot(rounds, regret, linestyle="--", linewidth=1, label=label)
    for trace in result.traces:
        x = np.arange(1, len(trace.value) + 1)
        reward_axis.plot(x, np.cumsum(trace.array("value")), linewidth=2, label=trace.policy)
        regret_axis.plot(x, np.cumsum(trace.array("oracle") - trace.array("value")), linewidth=2, label=trace.policy)
    reward_axis.plot(rounds, np.cumsum(reference.array("oracle")), color="black", linestyle=":", label="oracle")
    reward_axis.set_title(f"cumulative expected reward (fixed: on {reference.policy}'s requests)", fontsize=9)
    regret_axis.set_title("cumulative regret against the best list per request", fontsize=9)
    for axis in (reward_axis, regret_axis):
        axis.set_xlabel("round")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    if bandits:
        share_axis = axes[2]
        for s in bandits:
            assert s.bandit is not None
            x, y = zip(*s.bandit.share_curve, strict=True) if s.bandit.share_curve else ((), ())
            share_axis.plot(x, y, label=f"{s.policy}: share on {s.bandit.best} ({s.bandit.window}-request window)")
        share_axis.axhline(SHARE_TARGET, color="grey", linestyle="--", linewidth=1)
        share_axis.set_ylim(0, 1)
        share_axis.set_xlabel("round")
        share_axis.set_title("warm traffic on the bandit's best arm", fontsize=9)
        share_axis.grid(alpha=0.3)
        share_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
