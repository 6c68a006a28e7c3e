"""Export the trained towers to ONNX and prove that onnxruntime computes what torch computes.

Both files take dynamic batch and dynamic sequence lengths (history ``L``, content ``T``) and use the input
and output names of ``towerlight.artifacts``. The item id table, most of each file (N x D), is stored as
float16 and widened to float32 after the lookup: ``train_two_tower`` rounds the table to float16 values,
so the files compute what the trained (and evaluated) towers compute, at half the size. After writing
them, ``check_parity`` runs torch and onnxruntime (one intra-op thread, as in Lambda) on real and edge-case
inputs and raises ``ParityError`` if any output differs by more than ``1e-4``.

Example::

    >>> paths = export_towers(trained, Path("build/model"))  # doctest: +SKIP
    >>> sorted(paths)  # doctest: +SKIP
    ['item_tower.onnx', 'user_tower.onnx']
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from towerlight.artifacts import ITEM_TOWER, ITEM_TOWER_INPUTS, TOWER_OUTPUT, USER_TOWER, USER_TOWER_INPUTS
from towerlight.errors import ArtifactError
from towerlight.features import ItemRecord
from towerlight.model.sessions import onnx_session
from towerlight_offline.model.train import TrainedTwoTower

logger = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-4


class ParityError(ArtifactError):
    """An exported tower does not compute what the torch tower computes."""

    code = "onnx_parity_error"


def _export_module(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    # The TorchScript exporter: the dynamo one needs onnxscript, which the offline extra does not install.
    # Its deprecation notice says nothing actionable for users of the pinned torch, so keep it off the console.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=list(input_names),
            output_names=[TOWER_OUTPUT],
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


class Float16Lookup(torch.nn.Module):
    """An embedding lookup in a float16 copy of a table, widened to float32: exports as Gather + Cast."""

    def __init__(self, table: torch.nn.Embedding) -> None:
        super().__init__()
        weight = table.weight.detach()
        if not torch.equal(weight, weight.half().float()):
            raise ValueError("the id table holds values float16 cannot represent: round it first (round_to_float16)")
        self.register_buffer("weight", weight.half())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(ids, self.weight).float()


@contextmanager
def _float16_id_table(trained: TrainedTwoTower) -> Iterator[None]:
    """Both towers look items up in one float16 copy of their shared id table while the block runs."""
    towers = (trained.user_tower, trained.item_tower)
    table = trained.item_tower.id_embedding
    lookup = Float16Lookup(table)
    for tower in towers:
        tower.id_embedding = lookup
    try:
        yield
    finally:
        for tower in towers:
            tower.id_embedding = table


def export_towers(trained: TrainedTwoTower, out_dir: Path, *, check: bool = True) -> dict[str, Path]:
    """Write ``user_tower.onnx`` and ``item_tower.onnx`` into ``out_dir`` and check their parity with torch.

    Returns ``{artifact file name: path}``. Raises ``ParityError`` if an exported tower disagrees with torch.

    Example::

        >>> export_towers(trained, Path("/tmp/model"))[USER_TOWER]  # doctest: +SKIP
        PosixPath('/tmp/model/user_tower.onnx')
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {USER_TOWER: out_dir / USER_TOWER, ITEM_TOWER: out_dir / ITEM_TOWER}
    features = max(len(trained.spec.user_fields), 1)
    with torch.no_grad(), _float16_id_table(trained):
        _export_module(
            trained.user_tower.eval(),
            (torch.tensor([[1, 2, 0], [0, 0, 0]]), torch.ones((2, features), dtype=torch.long)),
            paths[USER_TOWER],
            USER_TOWER_INPUTS,
            {
                USER_TOWER_INPUTS[0]: {0: "batch", 1: "history_length"},
                USER_TOWER_INPUTS[1]: {0: "batch", 1: "user_fields"},
                TOWER_OUTPUT: {0: "batch"},
            },
        )
        _export_module(
            trained.item_tower.eval(),
            (torch.tensor([1, 2]), torch.tensor([[1, 2, 0], [0, 0, 0]])),
            paths[ITEM_TOWER],
            ITEM_TOWER_INPUTS,
            {
                ITEM_TOWER_INPUTS[0]: {0: "batch"},
                ITEM_TOWER_INPUTS[1]: {0: "batch", 1: "content_length"},
                TOWER_OUTPUT: {0: "batch"},
            },
        )
    logger.info("exported towers to %s", out_dir)
    if check:
        diffs = check_parity(trained, paths)
        logger.info("ONNX parity: max abs diff user %.2e, item %.2e", diffs[USER_TOWER], diffs[ITEM_TOWER])
    return paths


def _user_cases(trained: TrainedTwoTower, rng: np.random.Generator, n: int) -> list[dict[str, np.ndarray]]:
    """Batches of user tower inputs: real-looking random ones, and the edges serving will meet."""
    spec = trained.spec
    known = spec.item_ids.values
    fields = max(len(spec.user_fields), 1)
    max_len = spec.history_length
    lengths = rng.integers(0, max_len + 1, size=n)
    histories = [[known[j] for j in rng.integers(0, len(known), size=length)] for length in lengths]
    histories[: min(n, 6)] = [[], [known[0]], [known[-1]] * max_len, ["never-seen-item"], [], []][: min(n, 6)]
    histories = [h[:max_len] for h in histories]
    random_users = {
        "history": spec.user_inputs(histories, [None] * n)["history"],
        "user_features": rng.integers(0, spec.user_tokens.size, size=(n, fields)).astype(np.int64),
    }
    return [
        random_users,
        spec.user_inputs([[]], [None]),  # nothing known: the learned default
        spec.user_inputs([[known[0]]], [None]),  # batch of one, length one
        spec.user_inputs([["never-seen-item", "another-new-one"]], [{"unknown-field": 1}]),
        spec.user_inputs([list(known[:max_len])] * 3, [None] * 3),  # full length
    ]


def _item_cases(trained: TrainedTwoTower, rng: np.random.Generator, n: int) -> list[dict[str, np.ndarray]]:
    spec = trained.spec
    records = trained.item_records
    sample = [records[i] for i in rng.choice(len(records), size=min(n, len(records)), replace=False)]
    novel = [
        ItemRecord("brand-new-item", "An Unseen Title", ["never-seen-category"], {}),
        ItemRecord("no-content", None, [], {}),
    ]
    if records:
        first = records[0]
        novel.append(ItemRecord("new-like-first", first.title, list(first.categories), dict(first.attributes)))
    cases = []
    for batch in (sample, novel, sample[:1]):
        if batch:
            item, content = spec.encode_items(batch)
            cases.append({ITEM_TOWER_INPUTS[0]: item, ITEM_TOWER_INPUTS[1]: content})
    return cases


def check_parity(
    trained: TrainedTwoTower,
    paths: dict[str, Path],
    *,
    n_cases: int = 256,
    tolerance: float = PARITY_TOLERANCE,
    seed: int = 0,
) -> dict[str, float]:
    """Max abs difference between torch and onnxruntime outputs per tower; ``ParityError`` above ``tolerance``.

    Example::

        >>> check_parity(trained, export_towers(trained, out, check=False))  # doctest: +SKIP
        {'user_tower.onnx': 2.9e-07, 'item_tower.onnx': 1.8e-07}
    """
    rng = np.random.default_rng(seed)
    towers = {
        USER_TOWER: (trained.user_tower, USER_TOWER_INPUTS, _user_cases(trained, rng, n_cases)),
        ITEM_TOWER: (trained.item_tower, ITEM_TOWER_INPUTS, _item_cases(trained, rng, n_cases)),
    }
    diffs: dict[str, float] = {}
    for name, (module, input_names, cases) in towers.items():
        session = onnx_session(paths[name])
        got_inputs = [i.name for i in session.get_inputs()]
        got_outputs = [o.name for o in session.get_outputs()]
        if got_inputs != list(input_names) or got_outputs != [TOWER_OUTPUT]:
            raise ParityError(
                f"{name} has inputs {got_inputs} and outputs {got_outputs}",
                {"expected_inputs": list(input_names), "expected_outputs": [TOWER_OUTPUT]},
            )
        worst = 0.0
        for case in cases:
            with torch.no_grad():
                expected = module.eval()(*(torch.from_numpy(case[i]) for i in input_names)).numpy()
            (actual,) = session.run([TOWER_OUTPUT], {i: case[i] for i in input_names})
            if actual.shape != expected.shape or not np.all(np.isfinite(actual)):
                raise ParityError(f"{name} returned shape {actual.shape} or non-finite values", {"tower": name})
            worst = max(worst, float(np.max(np.abs(actual - expected), initial=0.0)))
        diffs[name] = worst
        if worst > tolerance:
            raise ParityError(
                f"{name}: onnxruntime and torch differ by {worst:.3g} (> {tolerance:g})",
                {"tower": name, "max_abs_diff": worst, "tolerance": tolerance},
            )
    return diffs
