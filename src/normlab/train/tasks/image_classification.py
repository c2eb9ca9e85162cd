"""Image classification (ResNet-20, ViT on CIFAR-10): cross-entropy on batched-augmented uint8 data.

The model builds its norms from `cfg.norm` for the layout they see (a ViT's see tokens, a ResNet's
feature maps). `classification.label_smoothing` (0 when absent) smooths the training loss as
PyTorch's `cross_entropy` does (ε spread over all classes, as timm's); the test loss stays the plain
cross-entropy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from normlab.data import load_dataset
from normlab.data.image_batches import ImageBatches
from normlab.errors import UserError
from normlab.eval.classification import evaluate_classifier
from normlab.models import build_model
from normlab.train import distributed
from normlab.train.checkpoint import load_checkpoint
from normlab.train.tasks import TASKS, scale_metrics


def _label_smoothing(cfg: DictConfig) -> float:
    """`classification.label_smoothing`, 0 when the experiment sets none."""
    value = OmegaConf.select(cfg, "classification.label_smoothing", default=0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise UserError(
            f"classification.label_smoothing={value!r} is not a number in [0, 1); "
            "give e.g. classification.label_smoothing=0.1"
        )
    return float(value)


@TASKS.register("image_classification")
class ImageClassificationTask:
    unit = "img"
    eval_keys = ("test_loss", "test_acc")

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.label_smoothing = _label_smoothing(cfg)  # before the data: a typo fails at once
        data = load_dataset(cfg.data)
        self.data_source, self.data_detail = data.source, data.detail
        channels_last = bool(cfg.trainer.channels_last)
        self.model = build_model(cfg.model, cfg.norm, num_classes=len(data.classes)).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_keys = ("acc", *scale_metrics(self.model))
        common = dict(mean=data.mean, std=data.std, device=device, channels_last=channels_last)
        self._data_options = common
        self.train_data = ImageBatches(
            data.train_x,
            data.train_y,
            batch_size=cfg.trainer.batch_size,
            seed=cfg.seed,
            # this rank's share of every batch; every rank evaluates the whole test set
            shard=(distributed.launched_rank(), distributed.launched_world_size()),
            **common,
        )
        self.test_data = ImageBatches(
            data.test_x,
            data.test_y,
            batch_size=cfg.trainer.eval_batch_size,
            seed=0,
            augment=False,
            **common,
        )

    def steps_per_epoch(self) -> int:
        return len(self.train_data)

    def train_batches(self, epoch: int, start_batch: int) -> Iterator[Any]:
        return self.train_data.epoch(epoch, start_batch)

    def train_loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float], int]:
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        acc = (logits.detach().argmax(1) == y).float().mean()
        return loss, {"acc": acc, **scale_metrics(self.model)}, len(y)

    def evaluate(self) -> dict[str, float]:
        metrics = evaluate_classifier(self.model, self.test_data.in_order())
        return {f"test_{k}": v for k, v in metrics.items()}

    def load_final_weights(self, run_dir: Path) -> str:
        """Load the weights the run was tested with (the end of training, saved in last.pt)."""
        ckpt = load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt")
        self.model.load_state_dict(ckpt["model"])
        return f"last.pt (step {ckpt['progress']['step']})"

    def evaluate_final(self, batch_statistics: bool = False) -> dict[str, float]:
        """The test metrics of the model as it is now (the run has no separate final test).

        `batch_statistics`: BN normalizes each evaluation batch by that batch's own statistics, so
        batches are drawn as training draws them: a fixed shuffled order, the training batch size,
        no augmentation. The stored order would hand BN batches of a single class (an image folder
        is sorted by class), which measures the batch's composition, not BN's statistics."""
        if not batch_statistics:
            return self.evaluate()
        shuffled = ImageBatches(
            self.test_data.images,
            self.test_data.labels,
            batch_size=self.train_data.batch_size,
            seed=0,
            augment=False,
            **self._data_options,
        )
        metrics = evaluate_classifier(self.model, shuffled.epoch(0))
        return {f"test_{k}": v for k, v in metrics.items()}
