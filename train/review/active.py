"""One active-learning round: which CTs get their masks drawn next.

``disagreement`` takes the k CTs with the largest audit score (where the model and the report disagree most, ties
by ct_id); ``random`` takes k at random (seeded), the control that says whether the ranking helps. CTs that already
have masks are never chosen again.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

STRATEGIES = ("disagreement", "random")


def choose(rows: Sequence[Mapping], k: int, strategy: str, *, seed: int = 0,
           exclude: Iterable[str] = ()) -> list[dict]:
    """The k CTs to annotate, in order.

    Args:
        rows: audit rows with ``ct_id`` and ``score`` (and optionally ``reasons``).
        k: how many (fewer when fewer are left).
        strategy: ``disagreement`` or ``random``.
        seed: seed of ``random``.
        exclude: ct_ids that already have masks.

    Returns:
        ``{"rank", "ct_id", "score", "reasons"}`` per chosen CT, rank 1 first.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: expected one of {STRATEGIES}")
    done = set(exclude)
    left = sorted((r for r in rows if r["ct_id"] not in done), key=lambda r: r["ct_id"])
    if strategy == "disagreement":
        picked = sorted(left, key=lambda r: (-float(r["score"]), r["ct_id"]))[:k]
    else:
        order = np.random.default_rng(seed).permutation(len(left))[:k]
        picked = [left[i] for i in order]
    return [{"rank": i + 1, "ct_id": r["ct_id"], "score": float(r["score"]), "reasons": list(r.get("reasons") or [])}
            for i, r in enumerate(picked)]


def write_selection(chosen: Sequence[Mapping], path: Path) -> Path:
    """The chosen CTs as CSV (rank, ct_id, score, reasons joined by ``; ``), through a temporary file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rank", "ct_id", "score", "reasons"])
        for c in chosen:
            writer.writerow([c["rank"], c["ct_id"], f"{c['score']:.4f}", "; ".join(c["reasons"])])
    os.replace(tmp, path)
    return path
