"""The cosine schedule with linear warmup, against its formula written out, through the optimizer."""

from __future__ import annotations

import math

import pytest
import torch

from normlab.errors import UserError
from normlab.train.optim import build_scheduler, check_optim_config, lr_factor

LR, INIT, MIN = 0.5, 0.05, 0.01
SCHEDULE = {"name": "cosine", "warmup_steps": 4, "warmup_init_lr": INIT, "min_lr": MIN, "epochs": 3}
STEPS_PER_EPOCH = 6  # 18 steps: 4 of warmup, a cosine over the other 14, min_lr after them


def expected_lr(step: int) -> float:
    """lr(s) = INIT + (LR − INIT)·s/4 for s < 4, then MIN + (LR − MIN)·(1 + cos(π(s − 4)/14))/2."""
    if step < 4:
        return INIT + (LR - INIT) * step / 4
    t = min(step - 4, 14) / 14
    return MIN + (LR - MIN) * (1 + math.cos(math.pi * t)) / 2


def test_the_lr_each_update_uses_is_the_formula():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=LR)
    sched = build_scheduler(SCHEDULE, opt, STEPS_PER_EPOCH)
    seen = []
    for _ in range(22):  # past the end: the lr stays at min_lr
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([expected_lr(s) for s in range(22)], rel=1e-12, abs=1e-15)
    assert seen[0] == pytest.approx(INIT) and seen[4] == pytest.approx(LR)
    assert seen[11] == pytest.approx((LR + MIN) / 2)  # halfway through the cosine
    assert seen[18:] == pytest.approx([MIN] * 4)


def test_without_warmup_it_starts_at_the_lr_and_fractional_epochs_count_steps():
    factor = lr_factor({"name": "cosine", "epochs": 2.5}, steps_per_epoch=4, base_lr=LR)
    assert factor(0) == 1.0
    assert factor(5) == pytest.approx(0.5)  # 10 steps in all
    assert factor(10) == pytest.approx(0.0, abs=1e-15) and factor(30) == pytest.approx(0.0)


def test_cosine_settings_are_checked_in_one_sentence():
    base = {"name": "adamw", "lr": 1e-3}
    check_optim_config({**base, "schedule": SCHEDULE})
    with pytest.raises(UserError, match=r"optim.schedule.epochs is not set; .*epochs=\$\{trainer"):
        check_optim_config({**base, "schedule": {"name": "cosine"}})
    with pytest.raises(UserError, match="optim.schedule.min_lr=-0.1 is out of range"):
        check_optim_config({**base, "schedule": {**SCHEDULE, "min_lr": -0.1}})
    with pytest.raises(UserError, match="optim.schedule.epochs=0 is out of range"):
        check_optim_config({**base, "schedule": {**SCHEDULE, "epochs": 0}})
