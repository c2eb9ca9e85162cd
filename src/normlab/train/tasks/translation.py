"""Translation (Transformer on IWSLT14 de-en): label-smoothed cross-entropy on token-budget batches,
validation loss per epoch, and at the end checkpoint averaging, beam search and BLEU on the test set.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from normlab.bpe_text import remove_bpe
from normlab.data import load_dataset
from normlab.data.sharding import check_shardable, shard
from normlab.data.token_batches import collate_pairs, epoch_batches
from normlab.eval.beam_search import beam_search
from normlab.eval.bleu import detokenized_bleu, tokenized_bleu
from normlab.eval.checkpoint_average import average_checkpoints
from normlab.io_utils import atomic_write_text
from normlab.models import build_model
from normlab.train import distributed
from normlab.train.checkpoint import load_checkpoint
from normlab.train.losses import label_smoothed_nll
from normlab.train.tasks import TASKS, scale_metrics


@TASKS.register("translation")
class TranslationTask:
    unit = "tok"
    eval_keys = ("valid_loss", "valid_nll", "valid_ppl")

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.cfg = cfg.translation
        self.seed = int(cfg.seed)
        self.device = device
        data = load_dataset(cfg.data)
        self.data = data
        self.data_source, self.data_detail = data.source, data.detail
        d = data.dictionary
        self.pad, self.eos = d.pad(), d.eos()
        model = build_model(cfg.model, cfg.norm, vocab_size=len(d), pad_idx=self.pad)
        self.model = model.to(device)
        self.train_keys = ("nll", *scale_metrics(self.model))
        # Plain lists of ids: Arrow row access per batch would cost more than the model on CPU.
        self.train_pairs = (list(data.train["src"]), list(data.train["tgt"]))
        self.valid_pairs = (list(data.valid["src"]), list(data.valid["tgt"]))
        self.test_pairs = (list(data.test["src"]), list(data.test["tgt"]))
        self.lengths = tuple(np.array([len(s) for s in side]) for side in self.train_pairs)
        batches = self._batches(0)  # every epoch packs the same sorted lengths: same sizes
        self._steps = len(batches)
        self.rank, self.world = distributed.launched_rank(), distributed.launched_world_size()
        check_shardable(
            (len(b) for b in batches), self.world, "sentence pairs", "raise translation.max_tokens"
        )

    # ------------------------------------------------------------------ training
    def _batches(self, epoch: int) -> list[np.ndarray]:
        return epoch_batches(*self.lengths, int(self.cfg.max_tokens), self.seed, epoch)

    def steps_per_epoch(self) -> int:
        return self._steps

    def _collate(self, pairs, idx) -> dict[str, Any]:
        batch = collate_pairs(
            [pairs[0][i] for i in idx], [pairs[1][i] for i in idx], self.pad, self.eos
        )
        return {
            k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()
        }

    def train_batches(self, epoch: int, start_batch: int) -> Iterator[Any]:
        for idx in self._batches(epoch)[start_batch:]:
            yield self._collate(self.train_pairs, shard(idx, self.rank, self.world))

    def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch["src_tokens"], batch["prev_output_tokens"])
        return label_smoothed_nll(
            logits, batch["target"], float(self.cfg.label_smoothing), self.pad
        )

    def train_loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float], int]:
        loss, nll = self._loss(batch)
        n = batch["ntokens"]
        # fairseq normalizes the summed loss by the number of target tokens of the batch
        return loss / n, {"nll": nll.detach() / n, **scale_metrics(self.model)}, n

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        loss_sum = nll_sum = 0.0
        ntok = 0
        lengths = tuple(np.array([len(s) for s in side]) for side in self.valid_pairs)
        for idx in epoch_batches(*lengths, int(self.cfg.max_tokens), 0, 0, shuffle=False):
            batch = self._collate(self.valid_pairs, idx)
            loss, nll = self._loss(batch)
            loss_sum, nll_sum, ntok = (
                loss_sum + loss.item(),
                nll_sum + nll.item(),
                ntok + batch["ntokens"],
            )
        self.model.train(was_training)
        nll = nll_sum / max(ntok, 1)
        return {
            "valid_loss": loss_sum / max(ntok, 1),
            "valid_nll": nll,
            "valid_ppl": math.exp(min(nll, 50)),
        }

    def finalize(self, run_dir: Path, epoch_checkpoints: list[Path]) -> dict[str, Any]:
        """Average the last epoch checkpoints, translate the test set with beam search, score BLEU."""
        n_avg = self._load_average(epoch_checkpoints)
        scores, lines = self._test_bleu()
        atomic_write_text(run_dir / "generate-test.txt", "\n".join(lines) + "\n")
        return {
            **scores,
            "averaged_checkpoints": max(n_avg, 1),
            "test_sentences": len(self.test_pairs[0]),
            "beam": int(self.cfg.beam),
        }

    def _load_average(self, epoch_checkpoints: list[Path]) -> int:
        """Load the average of the last `average_last` epoch checkpoints (when there are 2 or more:
        else the weights stay as they are); returns how many were averaged."""
        n_avg = min(int(self.cfg.average_last), len(epoch_checkpoints))
        if n_avg > 1:
            self.model.load_state_dict(average_checkpoints(epoch_checkpoints[-n_avg:]))
        return n_avg

    def load_final_weights(self, run_dir: Path) -> str:
        """Load the weights `finalize` tested (for a later evaluation); returns which they are."""
        ckpt_dir = Path(run_dir) / "checkpoints"
        epochs = sorted(ckpt_dir.glob("epoch*.pt"))  # as checkpoint.epoch_checkpoints()
        n_avg = self._load_average(epochs)
        if n_avg > 1:
            return f"average of {', '.join(p.name for p in epochs[-n_avg:])}"
        # finalize tested the weights at the end of training, which the loop saved in last.pt
        self.model.load_state_dict(load_checkpoint(ckpt_dir / "last.pt")["model"])
        return "last.pt"

    def evaluate_final(self, batch_statistics: bool = False) -> dict[str, Any]:
        """Valid loss and test BLEU of the model as it is now, writing no file. Its batches are
        length-sorted token budgets, as training's are, whether or not BN uses their statistics
        (`batch_statistics` changes nothing here)."""
        return {**self.evaluate(), **self._test_bleu()[0]}

    def _test_bleu(self) -> tuple[dict[str, Any], list[str]]:
        """Beam search over the test set: BLEU both ways, and the fairseq-generate lines."""
        d = self.data.dictionary
        src, tgt = self.test_pairs
        hyps: dict[int, list[int]] = {}
        for idx in epoch_batches(
            np.array([len(s) for s in src]),
            np.array([len(s) for s in src]),
            int(self.cfg.beam_max_tokens),
            0,
            0,
            shuffle=False,
        ):
            tokens = self._collate(self.test_pairs, idx)["src_tokens"]
            out = beam_search(
                self.model,
                tokens,
                eos=self.eos,
                pad=self.pad,
                beam=int(self.cfg.beam),
                lenpen=float(self.cfg.lenpen),
                max_len_a=float(self.cfg.max_len_a),
                max_len_b=int(self.cfg.max_len_b),
            )
            for i, h in zip(idx, out, strict=True):
                hyps[int(i)] = h.tokens
        hyp_text = [d.string(hyps[i], bpe_symbol=None) for i in range(len(src))]
        # References from the ids, as fairseq-generate scores them, with <unk> escaped so that an
        # unknown reference word never matches (fairseq's escape_unk).
        unk = d[d.unk()]
        ref_text = [
            " ".join(f"<{w}>" if w == unk else w for w in d.string(t, bpe_symbol=None).split())
            for t in tgt
        ]
        src_text = [d.string(s, bpe_symbol=None) for s in src]
        paper = tokenized_bleu(hyp_text, ref_text)
        sacre = detokenized_bleu(hyp_text, ref_text, lang=self.data.tgt_lang)
        lines = []  # fairseq-generate's layout, BPE removed
        for i in range(len(src)):
            for tag, text in (("S", src_text[i]), ("T", ref_text[i]), ("H", hyp_text[i])):
                lines.append(f"{tag}-{i}\t{remove_bpe(text)}")
        scores = {
            "bleu": round(paper.score, 2),
            "bleu_kind": "tokenized lowercased BPE-removed (fairseq-generate, the paper's)",
            "sacrebleu": round(sacre.score, 2),
            "sacrebleu_signature": sacre.signature,
        }
        return scores, lines
