"""MovieLens-100K: fetched from the ``recbole==1.2.1`` wheel on PyPI, or read from GroupLens' ``ml-100k``.

``fetch_movielens_100k`` downloads the wheel with pip (no dependencies), keeps only the three atomic
files of ``recbole/dataset_example/ml-100k/`` and writes normalized CSVs beside them, ready for
``towerlight import``: ``interactions.csv`` (user_id,item_id,timestamp,event_type,value),
``items.csv`` (item_id,title,categories,year) and ``users.csv`` (user_id,age,gender,occupation,zip_code).

Titles lose their trailing ``(1995)`` (the year is an attribute) and the genre ``unknown`` is dropped,
so both source formats give the same dataset.

Example::

    >>> dataset = load_movielens_dataset(max_users=100)
    >>> dataset.summary()
    'movielens-100k: 10,555 interactions, 100 users, 1,682 items'
"""

from __future__ import annotations

import csv
import logging
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from towerlight.errors import TowerlightError, ValidationError
from towerlight_offline.data.dataset import INTERACTION_COLUMNS, Dataset
from towerlight_offline.data.sources import dataset_from_files, items_frame, users_frame

logger = logging.getLogger(__name__)

DATASET_NAME = "movielens-100k"
RECBOLE_REQUIREMENT = "recbole==1.2.1"
_WHEEL_DIR = "recbole/dataset_example/ml-100k/"
ATOMIC_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
CSV_FILES = ("interactions.csv", "items.csv", "users.csv")
GROUPLENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_TITLE_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


def default_cache_dir() -> Path:
    """``$TOWERLIGHT_DATA_DIR/movielens-100k``, else ``<user cache dir>/towerlight/movielens-100k``.

    Example::

        >>> default_cache_dir().name
        'movielens-100k'
    """
    root = os.environ.get("TOWERLIGHT_DATA_DIR")
    if root:
        return Path(root).expanduser() / DATASET_NAME
    import platformdirs

    return Path(platformdirs.user_cache_dir("towerlight")) / DATASET_NAME


def fetch_movielens_100k(cache_dir: Path | None = None) -> Path:
    """Download MovieLens-100K once (``pip download recbole==1.2.1``) and return the cache directory.

    The directory then holds ``ml-100k.{inter,item,user}`` and the normalized CSVs. A complete cache
    is reused without touching the network.

    Example::

        >>> path = fetch_movielens_100k()
        >>> sorted(p.name for p in path.iterdir())[:3]
        ['interactions.csv', 'items.csv', 'ml-100k.inter']
    """
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if all((target / name).is_file() for name in (*ATOMIC_FILES, *CSV_FILES)):
        logger.info("MovieLens-100K already cached in %s", target)
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="towerlight-recbole-") as tmp:
        wheel = _download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            for name in ATOMIC_FILES:
                _write_atomically(target / name, archive.read(_WHEEL_DIR + name))
    write_normalized_csvs(load_movielens(target), target)
    logger.info("MovieLens-100K cached in %s", target)
    return target


def _download_wheel(directory: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        RECBOLE_REQUIREMENT, "-d", str(directory),
    ]  # fmt: skip
    logger.info("downloading %s with pip (about 2 MB)", RECBOLE_REQUIREMENT)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(directory.glob("recbole-*.whl"))
    if result.returncode != 0 or not wheels:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise TowerlightError(
            f"could not download {RECBOLE_REQUIREMENT} (MovieLens-100K) with pip; is PyPI reachable?",
            details={"command": " ".join(command), "pip": tail},
        )
    return wheels[0]


def _partial(path: Path) -> Path:
    """A temporary name beside ``path``, this process's own: two first runs at once (two ``evaluate``
    commands, say) each write their copy and rename it over the other's, where one shared name failed."""
    return path.with_name(f"{path.name}.{os.getpid()}.partial")


def _write_atomically(path: Path, data: bytes) -> None:
    partial = _partial(path)
    partial.write_bytes(data)
    partial.replace(path)


def write_normalized_csvs(dataset: Dataset, directory: Path) -> None:
    """Write ``interactions.csv``, ``items.csv`` and ``users.csv`` (the import format) for ``dataset``.

    Example::

        >>> write_normalized_csvs(load_movielens(Path("ml-100k")), Path("out"))
    """
    interactions = dataset.interactions.loc[:, list(INTERACTION_COLUMNS)]
    items = pd.DataFrame(
        {
            "item_id": dataset.items["item_id"],
            "title": dataset.items["title"],
            "categories": ["|".join(c) for c in dataset.items["categories"]],
            "year": pd.array([a.get("year") for a in dataset.items["attributes"]], dtype="Int64"),
        }
    )
    fields = ("age", "gender", "occupation", "zip_code")
    users = pd.DataFrame({"user_id": dataset.users["user_id"]})
    for name in fields:
        users[name] = [a.get(name) for a in dataset.users["attributes"]]
    for frame, name in ((interactions, "interactions.csv"), (items, "items.csv"), (users, "users.csv")):
        partial = _partial(directory / name)
        frame.to_csv(partial, index=False)
        partial.replace(directory / name)


def _title_and_year(title: str, year: str) -> tuple[str, int | None]:
    match = _TITLE_YEAR.search(title)
    clean = _TITLE_YEAR.sub("", title).strip()
    if re.fullmatch(r"\d{4}", year.strip()):
        return clean, int(year)
    return clean, int(match.group(1)) if match else None


def _catalogue(
    item_ids: Sequence[str], titles: Sequence[str], years: Sequence[str], genres: Sequence[list[str]]
) -> pd.DataFrame:
    cleaned = [_title_and_year(t, y) for t, y in zip(titles, years, strict=True)]
    return items_frame(
        list(item_ids),
        [title for title, _ in cleaned],
        [[g for g in names if g != "unknown"] for names in genres],
        [{} if year is None else {"year": year} for _, year in cleaned],
    )


def _people(frame: pd.DataFrame) -> pd.DataFrame:
    attributes = [
        {"age": int(age), "gender": gender, "occupation": occupation, "zip_code": zip_code}
        for age, gender, occupation, zip_code in frame[["age", "gender", "occupation", "zip_code"]].itertuples(
            index=False
        )
    ]
    return users_frame(frame["user_id"].tolist(), attributes)


def _ratings(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": frame["user_id"].astype("str"),
            "item_id": frame["item_id"].astype("str"),
            "timestamp": frame["timestamp"].astype(float).astype("int64"),
            "event_type": pd.Series("rating", index=frame.index, dtype="str"),
            "value": frame["rating"].astype(float),
        }
    ).reset_index(drop=True)


def _read_atomic(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE, encoding="utf-8")
    frame.columns = [str(c).split(":", 1)[0] for c in frame.columns]  # "user_id:token" -> "user_id"
    return frame


def _load_recbole(directory: Path) -> Dataset:
    inter, item, user = (_read_atomic(directory / name) for name in ATOMIC_FILES)
    items = _catalogue(item["item_id"], item["movie_title"], item["release_year"], item["class"].str.split().tolist())
    return Dataset(DATASET_NAME, _ratings(inter), items, _people(user))


def _read_grouplens(path: Path, sep: str, names: Sequence[str]) -> pd.DataFrame:
    return pd.read_csv(
        path,
        sep=sep,
        header=None,
        names=list(names),
        dtype=str,
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
        encoding="latin-1",
    )


def _load_grouplens(directory: Path) -> Dataset:
    inter = _read_grouplens(directory / "u.data", "\t", ("user_id", "item_id", "rating", "timestamp"))
    flags = [f"g{i}" for i in range(len(GROUPLENS_GENRES))]
    item = _read_grouplens(directory / "u.item", "|", ("item_id", "title", "released", "video", "url", *flags))
    user = _read_grouplens(directory / "u.user", "|", ("user_id", "age", "gender", "occupation", "zip_code"))
    genres = [
        [name for name, flag in zip(GROUPLENS_GENRES, row, strict=True) if flag == "1"]
        for row in item[flags].itertuples(index=False)
    ]
    years = [released[-4:] for released in item["released"]]  # "01-Jan-1995"
    items = _catalogue(item["item_id"], item["title"], years, genres)
    return Dataset(DATASET_NAME, _ratings(inter), items, _people(user))


def load_movielens(path: Path | str) -> Dataset:
    """MovieLens-100K from a directory in any of the formats it comes in.

    Recognised, in this order: recbole atomic files (``ml-100k.inter``, ...), GroupLens' ``u.data``,
    ``u.item`` and ``u.user`` (also inside an ``ml-100k/`` subdirectory), or the normalized CSVs.

    Example::

        >>> load_movielens(Path("~/Downloads/ml-100k").expanduser()).summary()
        'movielens-100k: 100,000 interactions, 943 users, 1,682 items'
    """
    directory = Path(path).expanduser()
    if (directory / "ml-100k").is_dir() and not (directory / "u.data").is_file():
        nested = directory / "ml-100k"
        if (nested / "u.data").is_file() or (nested / ATOMIC_FILES[0]).is_file():
            directory = nested
    if all((directory / name).is_file() for name in ATOMIC_FILES):
        dataset = _load_recbole(directory)
    elif all((directory / name).is_file() for name in ("u.data", "u.item", "u.user")):
        dataset = _load_grouplens(directory)
    elif all((directory / name).is_file() for name in CSV_FILES):
        dataset = dataset_from_files(*(directory / name for name in CSV_FILES), name=DATASET_NAME)
    else:
        raise ValidationError(
            f"{directory} holds no MovieLens-100K files",
            details={"expected one of": [list(ATOMIC_FILES), ["u.data", "u.item", "u.user"], list(CSV_FILES)]},
        )
    logger.info("loaded %s", dataset.summary())
    return dataset


def _id_order(ids: pd.Series) -> list[Any]:
    unique = pd.unique(ids)
    if all(str(v).isdigit() for v in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def load_movielens_dataset(path_or_cache: Path | str | None = None, max_users: int | None = None) -> Dataset:
    """MovieLens-100K as a ``Dataset``, fetched into the cache first when no path is given.

    ``max_users`` keeps the first N users by id (numeric order) and their interactions, for small test
    slices; the item catalogue stays whole.

    Example::

        >>> load_movielens_dataset(max_users=50).users.shape
        (50, 2)
    """
    directory = Path(path_or_cache) if path_or_cache is not None else fetch_movielens_100k()
    dataset = load_movielens(directory)
    if max_users is None:
        return dataset
    keep = set(_id_order(dataset.users["user_id"])[: max(0, max_users)])
    interactions = dataset.interactions[dataset.interactions["user_id"].isin(keep)].reset_index(drop=True)
    users = dataset.users[dataset.users["user_id"].isin(keep)].reset_index(drop=True)
    return Dataset(dataset.name, interactions, dataset.items, users)
