"""MovieLens-100K loading from both source formats, the cache, and (integration) the real download."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from towerlight.errors import ValidationError
from towerlight_offline.data import movielens
from towerlight_offline.data.dataset import INTERACTION_COLUMNS, ITEM_COLUMNS, USER_COLUMNS
from towerlight_offline.data.movielens import (
    fetch_movielens_100k,
    load_movielens,
    load_movielens_dataset,
)

# The same four ratings, three movies and three users in both formats.
ATOMIC = {
    "ml-100k.inter": (
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t1\t5\t874965758\n"
        "10\t2\t3\t876893171\n"
        "2\t3\t4\t878542960\n"
        "1\t3\t1\t875071561\n"
    ),
    "ml-100k.item": (
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
        "2\tMisérables, Les (1995)\tV\tDrama Musical\n"
        "3\tunkonwn\tunkonwn\tunknown\n"
    ),
    "ml-100k.user": (
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t24\tM\ttechnician\t85711\n"
        "2\t53\tF\tother\t94043\n"
        "10\t53\tM\tlawyer\tT8H1N\n"
    ),
}


def _flags(*genres: str) -> str:
    return "|".join("1" if g in genres else "0" for g in movielens.GROUPLENS_GENRES)


TOY_STORY_GENRES = _flags("Animation", "Children's", "Comedy")
GROUPLENS = {
    "u.data": "1\t1\t5\t874965758\n10\t2\t3\t876893171\n2\t3\t4\t878542960\n1\t3\t1\t875071561\n",
    "u.item": (
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{TOY_STORY_GENRES}\n"
        f"2|Misérables, Les (1995)|01-Jan-1995||http://y|{_flags('Drama', 'Musical')}\n"
        f"3|unknown||||{_flags('unknown')}\n"
    ),
    "u.user": "1|24|M|technician|85711\n2|53|F|other|94043\n10|53|M|lawyer|T8H1N\n",
}


def write_atomic(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in ATOMIC.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def write_grouplens(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in GROUPLENS.items():
        (directory / name).write_text(text, encoding="latin-1")
    return directory


def test_recbole_atomic_files_load(tmp_path: Path) -> None:
    # GIVEN the three atomic files of the recbole wheel
    directory = write_atomic(tmp_path / "atomic")
    # WHEN loading them
    dataset = load_movielens(directory)
    # THEN the frames follow the Dataset contract
    assert tuple(dataset.interactions.columns) == INTERACTION_COLUMNS
    assert tuple(dataset.items.columns) == ITEM_COLUMNS
    assert tuple(dataset.users.columns) == USER_COLUMNS
    assert dataset.interactions.values.tolist() == [
        ["1", "1", 874965758, "rating", 5.0],
        ["10", "2", 876893171, "rating", 3.0],
        ["2", "3", 878542960, "rating", 4.0],
        ["1", "3", 875071561, "rating", 1.0],
    ]
    assert dataset.interactions["timestamp"].dtype == "int64"
    # AND titles lose their year, which becomes an attribute; the genre "unknown" is dropped
    assert dataset.items.values.tolist() == [
        ["1", "Toy Story", ["Animation", "Children's", "Comedy"], {"year": 1995}, True],
        ["2", "Misérables, Les", ["Drama", "Musical"], {"year": 1995}, True],
        ["3", "unkonwn", [], {}, True],
    ]
    assert dataset.users.values.tolist()[2] == [
        "10",
        {"age": 53, "gender": "M", "occupation": "lawyer", "zip_code": "T8H1N"},
    ]


def test_grouplens_folder_gives_the_same_dataset(tmp_path: Path) -> None:
    # GIVEN the same data as GroupLens files (latin-1, genre flags), in an ml-100k/ subfolder
    write_grouplens(tmp_path / "download" / "ml-100k")
    atomic = load_movielens(write_atomic(tmp_path / "atomic"))
    # WHEN loading the parent folder
    grouplens = load_movielens(tmp_path / "download")
    # THEN it equals the atomic-file dataset except for the unknown movie's title
    assert grouplens.interactions.equals(atomic.interactions)
    assert grouplens.users.equals(atomic.users)
    assert grouplens.items["title"].tolist() == ["Toy Story", "Misérables, Les", "unknown"]
    assert grouplens.items.drop(columns="title").equals(atomic.items.drop(columns="title"))


def test_a_folder_without_movielens_files_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no MovieLens-100K files"):
        load_movielens(tmp_path)


def test_max_users_keeps_the_first_users_by_numeric_id(tmp_path: Path) -> None:
    # GIVEN users 1, 2 and 10
    directory = write_atomic(tmp_path / "atomic")
    # WHEN keeping two users
    dataset = load_movielens_dataset(directory, max_users=2)
    # THEN they are 1 and 2 (not "1" and "10"), with their events, and the whole catalogue
    assert sorted(dataset.users["user_id"]) == ["1", "2"]
    assert sorted(dataset.interactions["user_id"]) == ["1", "1", "2"]
    assert len(dataset.items) == 3


def fake_wheel(directory: Path) -> Path:
    wheel = directory / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("recbole/__init__.py", "")
        for name, text in ATOMIC.items():
            archive.writestr(f"recbole/dataset_example/ml-100k/{name}", text)
    return wheel


def test_fetch_extracts_the_wheel_writes_csvs_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN pip "downloading" a wheel that holds the atomic files
    downloads: list[Path] = []

    def download(directory: Path) -> Path:
        downloads.append(directory)
        return fake_wheel(directory)

    monkeypatch.setattr(movielens, "_download_wheel", download)
    cache = tmp_path / "cache"
    # WHEN fetching twice
    first = fetch_movielens_100k(cache)
    second = fetch_movielens_100k(cache)
    # THEN the wheel was downloaded once, only the three files were kept, and the CSVs were written
    assert first == second == cache
    assert len(downloads) == 1
    assert sorted(p.name for p in cache.iterdir()) == sorted([*ATOMIC, *movielens.CSV_FILES])
    assert (cache / "interactions.csv").read_text().splitlines()[:2] == [
        "user_id,item_id,timestamp,event_type,value",
        "1,1,874965758,rating,5.0",
    ]
    assert (cache / "items.csv").read_text().splitlines()[1:] == [
        "1,Toy Story,Animation|Children's|Comedy,1995",
        '2,"Misérables, Les",Drama|Musical,1995',
        "3,unkonwn,,",
    ]
    # AND the CSVs load (through the importer's parser) into the same dataset
    from_csv = load_movielens_dataset(_only_csvs(cache, tmp_path / "csv"))
    from_atomic = load_movielens(cache)
    assert from_csv.interactions.equals(from_atomic.interactions)
    assert from_csv.items.equals(from_atomic.items)
    assert from_csv.users.equals(from_atomic.users)


def _only_csvs(cache: Path, target: Path) -> Path:
    target.mkdir()
    for name in movielens.CSV_FILES:
        (target / name).write_bytes((cache / name).read_bytes())
    return target


def test_default_cache_dir_follows_towerlight_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWERLIGHT_DATA_DIR", str(tmp_path))
    assert movielens.default_cache_dir() == tmp_path / "movielens-100k"


@pytest.mark.integration
def test_real_fetch_has_the_known_sizes(tmp_path: Path) -> None:
    # GIVEN an empty cache
    # WHEN fetching MovieLens-100K from PyPI (recbole's wheel) and loading it
    dataset = load_movielens_dataset(fetch_movielens_100k(tmp_path / "ml"))
    # THEN it has the published sizes
    assert len(dataset.interactions) == 100_000
    assert dataset.interactions["user_id"].nunique() == 943
    assert len(dataset.users) == 943
    assert len(dataset.items) == 1_682
    assert set(dataset.interactions["value"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert dataset.items.set_index("item_id").loc["1", "title"] == "Toy Story"
