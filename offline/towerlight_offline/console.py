"""The one place the CLI writes to the terminal: messages, tables, errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def say(message: str = "") -> None:
    print(message, flush=True)


def heading(message: str) -> None:
    say(f"\n== {message}")


def error(message: str, details: Any = None) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    if details is not None:
        print(json.dumps(details, indent=2, default=str), file=sys.stderr, flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table (readable in a terminal and pasteable into reports)."""

    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join(lines)


def print_json(data: Any) -> None:
    say(json.dumps(data, indent=2, default=str))
