"""The convolutional-encoder Transformer: size counted by hand, pads that never reach a real token,
BN statistics over real tokens only, the Transformer's input and decoding API, the configs, and
smoke runs through the command line."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import (
    REPO,
    TOKEN_EOS,
    TOKEN_PAD,
    TOKEN_VOCAB,
    assert_cached_decoding_matches,
    compose_config,
    make_fairseq_layout,
    token_batch,
)
from normlab.cli import group_options
from normlab.config import validate_config
from normlab.errors import UserError
from normlab.eval.beam_search import beam_search
from normlab.models import build_model, count_parameters
from normlab.models.transformer import InputEmbedding, make_positions
from normlab.norms import norm_factory
from normlab.norms.layernorm import SequenceLayerNorm
from normlab.norms.masked_batchnorm import MaskedBatchNorm
from normlab.probe.store import read_probe

PAD, EOS, VOCAB = TOKEN_PAD, TOKEN_EOS, TOKEN_VOCAB
batch = token_batch
SMALL = {"d_model": 16, "ffn_dim": 24, "heads": 2, "encoder_layers": 3, "decoder_layers": 2}
NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0}
SRC_LENS, TGT_LENS = [6, 3, 5], [4, 5, 2]


def build(norm: str = "bn", name: str = "conv_transformer", **options):
    torch.manual_seed(0)
    cfg = {"name": name, **SMALL, **options}
    return build_model(cfg, norm_factory({"name": norm}, "sequence"), vocab_size=VOCAB, pad_idx=PAD)


def test_shapes_and_the_parameter_count_counted_by_hand():
    model = build("bn", decoder_norm=None)
    src, prev = batch(SRC_LENS, 7, 0), batch(TGT_LENS, 6, 1)
    assert model(src, prev).shape == (3, 6, VOCAB)
    d, f, k = 16, 24, 3
    conv = k * d * 2 * d + 2 * d + 2 * d  # GLU convolution weights and bias, the norm's γ and β
    attention = 4 * (d * d + d)
    decoder_layer = 2 * attention + (d * f + f + f * d + d) + 3 * 2 * d
    expected = VOCAB * d + 3 * conv + 2 * d + 2 * decoder_layer + 2 * d
    assert count_parameters(model) == expected


def test_the_cpu_model_has_as_many_encoder_weights_as_transformer_cpu():
    def encoder_params(name):
        cfg = compose_config([f"model={name}"]).model
        model = build_model(
            cfg, norm_factory({"name": "ln"}, "sequence"), vocab_size=VOCAB, pad_idx=PAD
        )
        return sum(p.numel() for n, p in model.named_parameters() if n.startswith("encoder"))

    conv, attention = encoder_params("conv_transformer_cpu"), encoder_params("transformer_cpu")
    assert abs(conv - attention) / attention < 0.01, (conv, attention)


def test_norm_placement_bn_in_the_encoder_ln_in_the_decoder():
    found = {n: type(m) for n, m in build("bn").named_modules() if n.endswith("_norm")}
    enc = [n for n in found if n.startswith("encoder")]
    assert enc == [f"encoder_layers.{i}.conv_norm" for i in range(3)] + ["encoder_final_norm"]
    assert {found[n] for n in enc} == {MaskedBatchNorm}
    assert {t for n, t in found.items() if n.startswith("decoder")} == {SequenceLayerNorm}
    first = next(n for n, m in build("bn").named_modules() if isinstance(m, MaskedBatchNorm))
    assert first == "encoder_layers.0.conv_norm"  # what the probe calls the first BN


def _junk_at_pads(model):
    """Put large random values at the pad positions of every encoder layer's input."""

    def hook(module, args):
        x, pad_mask = args
        junk = 50 * torch.randn_like(x)
        return torch.where(pad_mask.unsqueeze(-1), junk, x), pad_mask

    return [layer.register_forward_pre_hook(hook) for layer in model.encoder_layers]


@pytest.mark.parametrize("norm", ["bn", "ln", "pnv", "pn", "none"])
def test_pads_never_reach_a_real_token(norm):
    model = build(norm, decoder_norm=None, **NO_DROPOUT)
    src, prev = batch(SRC_LENS, 6, 0), batch(TGT_LENS, 5, 1)
    src_long, src_left = batch(SRC_LENS, 11, 0), batch(SRC_LENS, 9, 0, left=True)

    start = copy.deepcopy(model.state_dict())  # every call starts from the same running stats

    def states(tokens):
        model.load_state_dict(start)  # PN's training forward divides by the previous step's ψ
        out = model.encode(tokens)
        return out.states[out.pad_mask.logical_not()]  # the real tokens, row by row

    def check():
        ref = states(src)
        torch.testing.assert_close(states(src_long), ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(states(src_left), ref, rtol=0, atol=1e-5)
        handles = _junk_at_pads(model)
        try:
            torch.testing.assert_close(states(src_long), ref, rtol=0, atol=1e-5)
        finally:
            for h in handles:
                h.remove()
        model.load_state_dict(start)
        logits = model(src, prev)
        model.load_state_dict(start)
        torch.testing.assert_close(model(src_long, prev), logits, rtol=1e-5, atol=1e-5)

    assert src_long.eq(PAD).sum() > src.eq(PAD).sum() and src_left[:, 0].eq(PAD).all()
    check()  # training mode: batch statistics over the real tokens only
    model.eval()
    check()  # eval mode: the running statistics


def test_bn_statistics_count_real_tokens_only():
    model = build("bn").train()
    src = batch(SRC_LENS, 9, 0)
    seen = {}
    norm = model.encoder_layers[1].conv_norm
    norm.register_forward_hook(lambda m, args, out: seen.update(x=args[0].detach()))
    model.encode(src)
    real = src.ne(PAD)
    assert norm.last_count == int(real.sum()) == sum(SRC_LENS)
    tokens = seen["x"][real].double()  # (N, C): the real tokens, computed apart from the layer
    n = len(tokens)
    mean, var = tokens.mean(0), tokens.var(0, unbiased=True)
    m = norm.momentum  # from zero mean and unit variance, one update
    torch.testing.assert_close(norm.running_mean.double(), m * mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm.running_var.double(), (1 - m) + m * var, rtol=1e-5, atol=1e-6)
    assert n < seen["x"].shape[0] * seen["x"].shape[1]  # pads were there and left out


def test_first_norm_sees_what_the_transformers_first_norm_sees():
    conv = build("bn", **NO_DROPOUT).eval()
    attn = build("bn", name="transformer", **NO_DROPOUT).eval()
    assert type(conv.embed) is type(attn.embed) is InputEmbedding
    # the same initialization rule: N(0, 1/d) rows, the pad row zero
    for model in (conv, attn):
        w = model.embed.tokens.weight.detach()
        assert (w[PAD] == 0).all() and abs(w.std().item() * 16**0.5 - 1) < 0.15
    conv.embed.load_state_dict(attn.embed.state_dict())
    inputs = []
    for model, first in ((conv, conv.encoder_layers[0].conv_norm), (attn, None)):
        first = first or attn.encoder_layers[0].self_attn_norm
        h = first.register_forward_hook(lambda m, args, out: inputs.append(args[0].detach()))
        model.encode(batch(SRC_LENS, 7, 0))
        h.remove()
    torch.testing.assert_close(inputs[0], inputs[1], rtol=0, atol=0)
    src = batch(SRC_LENS, 7, 0)
    expected = attn.embed.tokens(src) * 4.0 + attn.embed.positions[make_positions(src, PAD)]
    torch.testing.assert_close(inputs[0], expected, rtol=1e-6, atol=1e-6)


def test_cached_decoding_and_beam_search_work_unchanged():
    model = build("bn", decoder_norm=None).eval()
    assert_cached_decoding_matches(model, SRC_LENS)
    src = batch(SRC_LENS, 6, 0)
    hyps = beam_search(model, src, eos=EOS, pad=PAD, beam=2, lenpen=1.0, max_len_a=0, max_len_b=8)
    assert len(hyps) == 3 and all(len(h.tokens) <= 9 for h in hyps)


def test_an_even_kernel_is_one_sentence():
    with pytest.raises(UserError, match="model.kernel_size=4 is not an odd positive width"):
        build(kernel_size=4)


def test_gn_has_no_token_version_and_says_so():
    with pytest.raises(UserError, match="norm 'gn' has no sequence version; pick another norm"):
        build("gn")


# -- configs and runs -------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_every_scale_and_norm_composes(scale):
    for norm in group_options("norm"):  # every norm in configs/norm/
        cfg = compose_config(["experiment=iwslt14_conv", f"scale={scale}", f"norm={norm}"])
        validate_config(cfg)
        assert cfg.model.name == "conv_transformer" and cfg.experiment_name == "iwslt14_conv"
        if norm == "bn":  # the official code's momentum at paper scale, as Transformer_BN's
            assert cfg.norm.momentum == (0.05 if scale == "paper" else 0.1)


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_same_sample_and_budget_as_the_transformer(scale):
    conv = compose_config(["experiment=iwslt14_conv", f"scale={scale}", "norm=bn"])
    attn = compose_config(["experiment=iwslt14_transformer", f"scale={scale}", "norm=bn"])
    for key in ("data", "trainer", "optim", "translation", "norm", "probe"):
        assert conv[key] == attn[key], key
    assert conv.model.d_model == attn.model.d_model
    assert conv.model.decoder_layers == attn.model.decoder_layers
    assert conv.model.ffn_dim == attn.model.ffn_dim and conv.model.heads == attn.model.heads


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_fairseq_layout(tmp_path_factory.mktemp("toy-de-en"), {"valid": 160, "test": 16})


def _sweep(corpus, runs, norms: str):
    cmd = [
        sys.executable, "-m", "normlab.train", "-m", "experiment=iwslt14_conv", "scale=smoke",
        f"data.prepared_dir={corpus}", "trainer.progress=false", f"norm={norms}",
    ]  # fmt: skip
    env = {**os.environ, "NORMLAB_RUNS": str(runs), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for norm in norms.split(","):
        summary = json.loads(
            (runs / "iwslt14_conv" / "smoke" / f"norm={norm}" / "summary.json").read_text()
        )
        assert summary["status"] == "complete" and summary["model"] == "conv_transformer", norm
        assert "bleu" in summary and summary["test_sentences"] == 12
    return runs / "iwslt14_conv" / "smoke"


def test_smoke_runs_bn_and_ln_from_the_command_line(corpus, tmp_path):
    sweep = _sweep(corpus, tmp_path, "bn,ln")
    table = read_probe(sweep / "norm=bn").to_pandas()
    bn = table[table["kind"] == "bn"]
    assert sorted(bn["layer"].unique()) == [
        "encoder_final_norm",
        "encoder_layers.0.conv_norm",
        "encoder_layers.1.conv_norm",
    ]
    first = bn.sort_values("layer_index").iloc[0]
    assert first["layer"] == "encoder_layers.0.conv_norm" and first["d"] == 32
    assert (table[table["kind"] == "ln"]["layer"].str.startswith("decoder")).all()
    metrics = (sweep / "norm=bn" / "metrics.csv").read_text().splitlines()[0]
    assert "embed_rms" in metrics.split(",")  # the Transformer's input-scale measure


@pytest.mark.slow
def test_smoke_runs_of_the_other_norms(corpus, tmp_path):
    _sweep(corpus, tmp_path, "pnv,pn,none")
