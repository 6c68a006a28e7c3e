"""``towerlight evaluate``'s segments and report files, on a hand-made table."""

from __future__ import annotations

from pathlib import Path

from towerlight_offline.evaluate import EvaluationSet
from towerlight_offline.evaluation_report import Report, Segment, cold_start_users, user_segments, write_report


def _evaluation(n: int) -> EvaluationSet:
    return EvaluationSet([f"u{i}" for i in range(n)], [frozenset({"x"})] * n, catalogue_size=50)


def test_segments_split_users_by_their_training_events() -> None:
    # GIVEN 10 users with 1..10 training events
    counts = {f"u{i}": i + 1 for i in range(10)}
    # WHEN segmented with light < 5 events and the heaviest 20%
    segments = {s.name: s.users.user_ids for s in user_segments(_evaluation(10), counts, 5, 0.2)}
    # THEN light users have 1-4 events and heavy users are the top two
    assert segments["all"] == [f"u{i}" for i in range(10)]
    assert segments["light"] == ["u0", "u1", "u2", "u3"]
    assert segments["heavy"] == ["u8", "u9"]


def test_the_report_has_a_table_and_plot_per_non_empty_segment(tmp_path: Path) -> None:
    # GIVEN a table for two models where the light segment is empty
    k_values = (1, 10)
    row = {"recall@1": 0.1, "recall@10": 0.3, "ndcg@1": 0.2, "ndcg@10": 0.25, "coverage@1": 0.01, "coverage@10": 0.1}
    segments = user_segments(_evaluation(4), {f"u{i}": 20 for i in range(4)}, 5, 0.5)
    segments.append(Segment("cold_start", "first 1-4 events", _evaluation(2)))
    rows = {name: {"two_tower": row, "als": {**row, "ndcg@10": 0.2}} for name in ("all", "heavy", "cold_start")}
    report = Report("toy", k_values, segments, rows, ["served model: two_tower"])
    # WHEN it is written
    paths = write_report(report, tmp_path / "out")
    # THEN report.md names every model and segment, and each non-empty segment has a PNG plot
    assert sorted(p.name for p in paths) == ["all.png", "cold_start.png", "heavy.png", "report.md"]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| two_tower | 0.2000 | 0.2500 |" in text and "| als | 0.2000 | 0.2000 |" in text
    assert "No evaluated user falls in this segment." in text
    assert "## cold_start: first 1-4 events (2 users)" in text
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths if p.suffix == ".png")


def test_cold_start_users_are_a_seeded_share_each_keeping_one_to_four_events() -> None:
    # GIVEN 200 evaluated users
    evaluation = _evaluation(200)
    # WHEN a fifth of them is drawn for the cold-start simulation with light users under 5 events
    chosen = cold_start_users(evaluation, 0.2, 5, seed=7)
    # THEN 40 distinct evaluated users each keep 1 to 4 events, every count is used, and the draw repeats
    assert len(chosen) == 40 and set(chosen) <= set(evaluation.user_ids)
    assert set(chosen.values()) == {1, 2, 3, 4}
    assert cold_start_users(evaluation, 0.2, 5, seed=7) == chosen != cold_start_users(evaluation, 0.2, 5, seed=8)
    assert cold_start_users(evaluation, 0.0, 5, seed=7) == {}
