"""The content artifact: TF-IDF built offline (towerlight_offline.content), read and scored at serving
(towerlight.model.content). Toy catalogues whose terms and similarities can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from towerlight.errors import ArtifactError
from towerlight.features import ItemRecord
from towerlight.model.content import ContentIndex
from towerlight_offline.content import content_arrays, item_terms

RECORDS = [
    ItemRecord("toy", "Toy Story", ["Animation", "Comedy"], {"year": 1995}),
    ItemRecord("toy2", "Toy Story 2", ["Animation", "Comedy"], {"year": 1999}),
    ItemRecord("heat", "Heat", ["Action", "Crime"], {"year": 1995}),
    ItemRecord("ronin", "Ronin", ["Action", "Crime"], {"year": 1998}),
    ItemRecord("lone", "Unique Title", [], {}),
]


def index() -> ContentIndex:
    arrays = content_arrays(RECORDS)
    return ContentIndex.from_arrays(arrays, arrays["item_ids"], "v1")


def dense(content: ContentIndex) -> np.ndarray:
    matrix = np.zeros((content.size, len(content.terms)), dtype=np.float32)
    for row in range(content.size):
        start, end = content.indptr[row], content.indptr[row + 1]
        matrix[row, content.indices[start:end]] = content.values[start:end]
    return matrix


def test_item_terms_cover_title_words_categories_and_bucketed_attributes() -> None:
    # GIVEN an item with a stopword and a number in its title, and numeric and text attributes
    record = ItemRecord("1", "The Lion King 2", ["Animation"], {"year": 1994, "price": 12.99, "lang": "EN"})
    # WHEN its terms are listed
    terms = list(item_terms(record))
    # THEN words (no stopword, no number), categories and attributes (years to decades) are all there
    assert terms == ["title:lion", "title:king", "category:animation", "lang=en", "price=12.9", "year=1990"]


def test_terms_shared_by_fewer_than_two_items_are_dropped_and_rows_are_unit_length() -> None:
    # GIVEN / WHEN the toy catalogue is vectorised
    arrays = content_arrays(RECORDS)
    # THEN only terms that can relate two items are kept
    assert arrays["terms"].tolist() == [
        "category:action",
        "category:animation",
        "category:comedy",
        "category:crime",
        "title:story",
        "title:toy",
        "year=1990",
    ]
    # AND every row with a term is unit length; the item with no shared term has an empty row
    norms = np.linalg.norm(dense(index()), axis=1)
    assert norms[:4] == pytest.approx([1, 1, 1, 1]) and norms[4] == 0
    assert arrays["indptr"][-2] == arrays["indptr"][-1]


def test_profile_scores_match_the_dense_computation() -> None:
    # GIVEN the index and a user who saw "toy" (newest) then "heat"
    content = index()
    matrix = dense(content)
    profile = content.profile(np.array([0, 2]))
    # THEN the profile is the recency-weighted sum of their rows, normalised
    expected = matrix[0] + 0.9 * matrix[2]
    assert profile == pytest.approx(expected / np.linalg.norm(expected), abs=1e-6)
    # AND scoring by postings equals the dense product, over the rows sharing a term
    rows, scores = content.score_all(profile)
    assert rows.tolist() == [0, 1, 2, 3]
    assert scores == pytest.approx((matrix @ profile)[:4], abs=1e-6)
    assert content.scores(profile, np.array([3, 4, 1])) == pytest.approx((matrix @ profile)[[3, 4, 1]], abs=1e-6)
    # AND "toy2" is closer to the user than "ronin"; its strongest term is the decade (in both recent
    # items), then four equal ones (same idf, only in "toy"), of which the first in term order
    assert scores[1] > scores[3]
    assert content.top_terms(profile, 1, n=2) == ["year=1990", "category:animation"]


def test_similarity_is_the_cosine_between_rows_and_an_empty_history_has_no_profile() -> None:
    content = index()
    matrix = dense(content)
    # WHEN two small sets of rows are compared THEN it is the dense cosine matrix
    assert content.similarity(np.array([0, 2]), np.array([1, 3, 4])) == pytest.approx(
        matrix[[0, 2]] @ matrix[[1, 3, 4]].T, abs=1e-6
    )
    # AND an item without terms gives no profile
    assert content.profile(np.array([4])) is None
    assert content.profile(np.array([], dtype=np.int64)) is None


def test_a_content_file_for_another_catalogue_is_refused() -> None:
    arrays = content_arrays(RECORDS)
    with pytest.raises(ArtifactError, match="list different items"):
        ContentIndex.from_arrays(arrays, np.array(["toy", "toy2", "heat", "ronin", "other"]), "v1")
    broken = {**arrays, "indices": arrays["indices"] + 100}
    with pytest.raises(ArtifactError, match="out of range"):
        ContentIndex.from_arrays(broken, arrays["item_ids"], "v1")
