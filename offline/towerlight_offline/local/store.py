"""A local artifact store when none is configured: ``TOWERLIGHT_STORE`` when given, else a directory.

``towerlight serve``, ``train`` and ``models`` all fall back to the same directory,
``platformdirs.user_data_dir("towerlight")/store``, so a model trained on a workstation without any
configuration is the one the local API serves (as ``ensure_database_url`` does for Postgres).

Example::

    >>> ensure_store_uri()
    'file:///root/.local/share/towerlight/store'
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from towerlight.config import get_settings


def default_store_dir() -> Path:
    """``<user data dir>/towerlight/store``, where the local store lives when nothing else is configured."""
    return Path(platformdirs.user_data_dir("towerlight")) / "store"


def ensure_store_uri() -> str:
    """``TOWERLIGHT_STORE`` if set; otherwise create the local directory store, export its URI and return it."""
    uri = os.environ.get("TOWERLIGHT_STORE")
    if uri:
        return uri
    directory = default_store_dir()
    directory.mkdir(parents=True, exist_ok=True)
    uri = directory.as_uri()
    os.environ["TOWERLIGHT_STORE"] = uri
    get_settings.cache_clear()  # settings are read once per process; this one just changed
    return uri
