"""Checkpoint averaging on hand-built state dicts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from normlab.errors import UserError
from normlab.eval.checkpoint_average import average_checkpoints


def save(path: Path, state: dict[str, torch.Tensor], **extra) -> Path:
    torch.save({"model": state, "optimizer": {"step": 3}, **extra}, path)
    return path


def state(scale: float, batches: int) -> dict[str, torch.Tensor]:
    return {
        "layer.weight": torch.full((2, 3), scale),
        "layer.bias": torch.tensor([scale, -scale]),
        "bn.running_var": torch.tensor([1.0, 2.0]) * scale,
        "bn.num_batches_tracked": torch.tensor(batches),
        "half": torch.full((2,), scale, dtype=torch.float16),
    }


def test_floats_are_averaged_and_counters_come_from_the_last(tmp_path):
    paths = [
        save(tmp_path / f"epoch{i}.pt", state(s, 10 * i)) for i, s in enumerate([1.0, 2.0, 6.0])
    ]
    avg = average_checkpoints(paths)
    assert list(avg) == list(state(0, 0))  # same keys, same order
    torch.testing.assert_close(avg["layer.weight"], torch.full((2, 3), 3.0))
    torch.testing.assert_close(avg["layer.bias"], torch.tensor([3.0, -3.0]))
    torch.testing.assert_close(avg["bn.running_var"], torch.tensor([3.0, 6.0]))
    assert (
        avg["bn.num_batches_tracked"].item() == 20
        and avg["bn.num_batches_tracked"].dtype == torch.long
    )
    assert avg["half"].dtype == torch.float16
    torch.testing.assert_close(avg["half"], torch.full((2,), 3.0, dtype=torch.float16))


def test_one_checkpoint_averages_to_itself(tmp_path):
    original = state(1.7, 5)
    avg = average_checkpoints([save(tmp_path / "a.pt", original)])
    for key, value in original.items():
        assert torch.equal(avg[key], value)


def test_the_average_loads_into_the_model(tmp_path):
    models = [torch.nn.Linear(3, 2) for _ in range(2)]
    paths = [save(tmp_path / f"{i}.pt", m.state_dict()) for i, m in enumerate(models)]
    target = torch.nn.Linear(3, 2)
    target.load_state_dict(average_checkpoints(paths))
    torch.testing.assert_close(target.weight, (models[0].weight + models[1].weight) / 2)


def test_bad_inputs_are_one_sentence(tmp_path):
    a = save(tmp_path / "a.pt", state(1.0, 1))
    with pytest.raises(UserError, match="no checkpoints"):
        average_checkpoints([])
    with pytest.raises(UserError, match="does not exist"):
        average_checkpoints([a, tmp_path / "missing.pt"])
    other = state(1.0, 1) | {"extra.weight": torch.zeros(1)}
    with pytest.raises(UserError, match="different weights .* 'extra.weight'"):
        average_checkpoints([a, save(tmp_path / "b.pt", other)])
    wide = state(1.0, 1) | {"layer.weight": torch.zeros(2, 4)}
    with pytest.raises(UserError, match="'layer.weight' has shape \\(2, 4\\)"):
        average_checkpoints([a, save(tmp_path / "c.pt", wide)])
    torch.save({"weights": {}}, tmp_path / "d.pt")
    with pytest.raises(UserError, match="no 'model' entry"):
        average_checkpoints([tmp_path / "d.pt"])
