"""What ResNet-20 does with the norms that it cannot train at its recipe's lr (issue 12 item 2),
on the CIFAR-10 subset: norm=pn is refused in one sentence that says why (measurements in
src/normlab/models/resnet20.py); norm=none gets a note at start and trains at a smaller lr."""

from __future__ import annotations

import pytest

from helpers import run_cli_batch

SUBSET = ["scale=smoke", "data.source=imagefolder", "trainer.progress=false", "probe=none"]


@pytest.mark.slow
def test_resnet20_norms_on_the_cifar10_subset(shared_data, tmp_path):
    base = [*SUBSET, f"data.root={shared_data / 'cifar10-subset'}"]
    env = {"NORMLAB_RUNS": str(tmp_path / "runs"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    refused, default_lr, small_lr, pnv = run_cli_batch(
        [
            {"argv": [*base, "norm=pn"]},
            {"argv": [*base, "norm=none"]},
            {"argv": [*base, "norm=none", "optim.lr=0.02"]},
            {"argv": [*base, "norm=pnv"]},
        ],
        env,
    )
    assert refused["rc"] == 2 and refused["stderr"].count("\n") == 1, refused["stderr"]
    assert "norm=pn cannot train model=resnet20" in refused["stderr"]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("norm=pn"))
    note = "normlab: note: norm=none leaves ResNet-20 without normalization"
    assert default_lr["stderr"].count(note) == 1  # said once, at start
    for result in (small_lr, pnv):  # 16 steps at smoke scale, no NaN
        assert result["rc"] == 0, result["stderr"][-3000:]
        assert result["stdout"].strip().splitlines()[-1].startswith("complete: ")
        assert note not in result["stderr"]
