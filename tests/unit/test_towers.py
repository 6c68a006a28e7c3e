"""Two-tower model: shapes and edge cases of the towers, and training on a toy dataset whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from towerlight_offline.data.dataset import Dataset
from towerlight_offline.model import TwoTowerParams, build_towers, fit_feature_spec, train_two_tower
from towerlight_offline.model.towers import l2_normalize

CLUSTERS = ("Action", "Drama")
TOY_PARAMS = TwoTowerParams(
    dim=16, hidden=32, epochs=10, batch_size=64, lr=0.01, temperature=0.1, id_dropout=0.2, num_threads=1
)


def toy_dataset(n_users: int = 40, items_per_cluster: int = 20, events_per_user: int = 10) -> Dataset:
    """Users of cluster c interact only with items of category c; one item per cluster is never interacted
    with (``new-<cluster>``), so its embedding can only come from its content."""
    rng = np.random.default_rng(0)
    items = [
        {
            "item_id": f"{c[0].lower()}{i}",
            "title": f"{c} story {i}",
            "categories": [c],
            "attributes": {},
            "active": True,
        }
        for c in CLUSTERS
        for i in range(items_per_cluster)
    ]
    items += [
        {"item_id": f"new-{c}", "title": f"{c} story", "categories": [c], "attributes": {}, "active": True}
        for c in CLUSTERS
    ]
    rows = []
    for u in range(n_users):
        prefix = CLUSTERS[u % 2][0].lower()
        for t, i in enumerate(rng.choice(items_per_cluster, size=events_per_user, replace=False)):
            rows.append((f"u{u}", f"{prefix}{i}", 1_000 * u + t, "click", np.nan))
    rows.append(("u0", "d0", 10**6, "impression", np.nan))  # not positive: must be ignored
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event_type", "value"])
    users = pd.DataFrame(
        {"user_id": [f"u{u}" for u in range(n_users)], "attributes": [{"age": 20 + u} for u in range(n_users)]}
    )
    return Dataset("toy", interactions, pd.DataFrame(items), users)


@pytest.fixture(scope="module")
def toy() -> Dataset:
    return toy_dataset()


@pytest.fixture(scope="module")
def trained(toy: Dataset):
    spec = fit_feature_spec(toy, history_length=8)
    return train_two_tower(toy.interactions, toy.items, toy.users, spec, TOY_PARAMS, progress=False)


def test_towers_output_unit_vectors_and_survive_empty_inputs() -> None:
    # GIVEN fresh towers
    torch.manual_seed(0)
    item_tower, user_tower = build_towers(50, 30, 10, dim=8, hidden=16)
    # WHEN a user has no history and no attributes, and an item has no content
    with torch.no_grad():
        empty_user = user_tower(torch.zeros((1, 1), dtype=torch.long), torch.zeros((1, 1), dtype=torch.long))
        bare_item = item_tower(torch.tensor([3]), torch.zeros((1, 1), dtype=torch.long))
        users = user_tower(torch.tensor([[1, 2, 3], [4, 0, 0]]), torch.tensor([[1, 0], [0, 0]]))
    # THEN every output is finite, of the right shape, and L2-normalised
    for out, rows in ((empty_user, 1), (bare_item, 1), (users, 2)):
        assert out.shape == (rows, 8)
        assert torch.isfinite(out).all()
        assert torch.allclose(out.norm(dim=1), torch.ones(rows), atol=1e-5)
    assert torch.equal(l2_normalize(torch.zeros(1, 4)), torch.zeros(1, 4))


def test_padding_does_not_change_a_user_vector() -> None:
    # GIVEN a user tower
    torch.manual_seed(0)
    _, user_tower = build_towers(50, 30, 10, dim=8, hidden=16)
    # WHEN the same history is given with and without trailing padding
    with torch.no_grad():
        short = user_tower(torch.tensor([[5, 6]]), torch.tensor([[2]]))
        padded = user_tower(torch.tensor([[5, 6, 0, 0, 0]]), torch.tensor([[2]]))
    # THEN the embeddings are the same
    assert torch.allclose(short, padded, atol=1e-6)


def test_training_learns_the_clusters(toy: Dataset, trained) -> None:
    # GIVEN a model trained on users who only click items of their own category
    items = trained.item_embeddings()
    row = {item_id: r for r, item_id in enumerate(trained.spec.item_ids.values)}
    clicks = toy.interactions[toy.interactions["event_type"] == "click"]
    clicked = clicks.groupby("user_id")["item_id"].apply(set)
    history = clicks.sort_values("timestamp", ascending=False).groupby("user_id")["item_id"].apply(list)
    aucs = []
    for u in range(40):
        user = f"u{u}"
        own, other = CLUSTERS[u % 2][0].lower(), CLUSTERS[1 - u % 2][0].lower()
        # WHEN the user's vector scores the items they have not clicked
        vector = trained.user_embeddings([history[user]], [{"age": 20 + u}])[0]
        held_out = items[[row[f"{own}{i}"] for i in range(20) if f"{own}{i}" not in clicked[user]]] @ vector
        foreign = items[[row[f"{other}{i}"] for i in range(20)]] @ vector
        aucs.append((held_out[:, None] > foreign[None, :]).mean())
    # THEN unclicked items of the user's own category outrank the items of the other category
    assert np.mean(aucs) > 0.98
    assert min(aucs) > 0.9


def test_unseen_item_lands_near_items_with_the_same_content(trained) -> None:
    # GIVEN items that never appear in any interaction
    items = trained.item_embeddings()
    ids = trained.spec.item_ids.values
    action = items[[i for i, v in enumerate(ids) if v.startswith("a")]]
    drama = items[[i for i, v in enumerate(ids) if v.startswith("d")]]
    # WHEN they are embedded from their content (category, title words)
    new_action, new_drama = items[ids.index("new-Action")], items[ids.index("new-Drama")]
    # THEN each is closer to the items of its own category than to the others
    assert (action @ new_action).mean() > (drama @ new_action).mean() + 0.2
    assert (drama @ new_drama).mean() > (action @ new_drama).mean() + 0.2


def test_user_without_history_gets_a_finite_vector(trained) -> None:
    # GIVEN a trained model
    # WHEN users have no history, with and without attributes (and unknown items only)
    vectors = trained.user_embeddings([[], [], ["not-an-item"]], [None, {"age": 30}, None])
    # THEN the vectors are finite unit vectors
    assert vectors.shape == (3, 16)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_training_is_deterministic_and_ignores_non_positive_events(toy: Dataset, trained) -> None:
    # GIVEN the same data, spec and seed
    spec = fit_feature_spec(toy, history_length=8)
    # WHEN training again, and once with another seed
    again = train_two_tower(toy.interactions, toy.items, toy.users, spec, TOY_PARAMS, progress=False)
    other = train_two_tower(
        toy.interactions,
        toy.items,
        toy.users,
        spec,
        TwoTowerParams(**{**TOY_PARAMS.to_json(), "seed": 1}),
        progress=False,
    )
    # THEN the same seed gives identical embeddings and another seed different ones
    np.testing.assert_array_equal(again.item_embeddings(), trained.item_embeddings())
    assert not np.array_equal(other.item_embeddings(), trained.item_embeddings())
    # AND the impression event was not a training example
    assert trained.train_examples == (toy.interactions["event_type"] == "click").sum()


def test_max_train_examples_keeps_the_most_recent(toy: Dataset) -> None:
    # GIVEN a cap on the number of training examples
    spec = fit_feature_spec(toy, history_length=8)
    params = TwoTowerParams(**{**TOY_PARAMS.to_json(), "epochs": 1, "max_train_examples": 50})
    # WHEN training
    trained = train_two_tower(toy.interactions, toy.items, toy.users, spec, params, progress=False)
    # THEN only that many examples were used, and the model still embeds every catalogue item
    assert trained.train_examples == 50
    assert trained.item_embeddings().shape == (len(toy.items), 16)


def test_training_without_positive_events_fails(toy: Dataset) -> None:
    # GIVEN only impressions
    spec = fit_feature_spec(toy)
    impressions = toy.interactions.assign(event_type="impression")
    # WHEN / THEN training refuses
    with pytest.raises(ValueError, match="no positive interactions"):
        train_two_tower(impressions, toy.items, toy.users, spec, TOY_PARAMS, progress=False)
