"""The Transformer: shapes, where each norm goes, padding and causality, pre/post-norm, size."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from helpers import (
    REPO,
    TOKEN_EOS,
    TOKEN_PAD,
    TOKEN_VOCAB,
    assert_cached_decoding_matches,
    compose_config,
    token_batch,
)
from normlab.errors import UserError
from normlab.models import build_model, count_parameters
from normlab.models.transformer import SUBLAYERS
from normlab.norms import NORMS, norm_factory
from normlab.norms.identity import NoNorm
from normlab.norms.layernorm import SequenceLayerNorm
from normlab.norms.masked_batchnorm import MaskedBatchNorm

PAD, EOS, VOCAB = TOKEN_PAD, TOKEN_EOS, TOKEN_VOCAB
batch = token_batch
SMALL = {"d_model": 16, "ffn_dim": 24, "heads": 2, "encoder_layers": 2, "decoder_layers": 2}
NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0}


def model_config(name: str) -> dict:
    cfg = OmegaConf.load(REPO / "configs" / "model" / f"{name}.yaml")
    return OmegaConf.to_container(cfg)


def build(norm: str = "ln", vocab: int = VOCAB, **options):
    torch.manual_seed(0)
    cfg = {"name": "transformer", **SMALL, **options}
    return build_model(cfg, norm_factory({"name": norm}, "sequence"), vocab_size=vocab, pad_idx=PAD)


SRC_LENS, TGT_LENS = [6, 3, 5], [4, 5, 2]


def norms_at(model) -> dict[str, type]:
    return {name: type(m) for name, m in model.named_modules() if name.endswith("_norm")}


# The module paths each of the 7 positions owns, in a 2+2-layer model.
POSITION_PATHS = {
    "encoder_self_attn": ["encoder_layers.0.self_attn_norm", "encoder_layers.1.self_attn_norm"],
    "encoder_ffn": ["encoder_layers.0.ffn_norm", "encoder_layers.1.ffn_norm"],
    "encoder_final": ["encoder_final_norm"],
    "decoder_self_attn": ["decoder_layers.0.self_attn_norm", "decoder_layers.1.self_attn_norm"],
    "decoder_cross_attn": ["decoder_layers.0.cross_attn_norm", "decoder_layers.1.cross_attn_norm"],
    "decoder_ffn": ["decoder_layers.0.ffn_norm", "decoder_layers.1.ffn_norm"],
    "decoder_final": ["decoder_final_norm"],
}


def test_shapes():
    model = build()
    src, prev = batch(SRC_LENS, 7, 0), batch(TGT_LENS, 6, 1)
    assert model(src, prev).shape == (3, 6, VOCAB)
    enc = model.encode(src)
    assert enc.states.shape == (3, 7, 16) and torch.equal(enc.pad_mask, src.eq(PAD))
    assert model.decode_step(prev[:, :1], enc, model.new_cache()).shape == (3, VOCAB)


class Marker(SequenceLayerNorm):
    """A norm only this test builds, to see where a position's factory was used."""


@pytest.mark.parametrize("position", SUBLAYERS)
def test_each_position_can_be_set_on_its_own(position, monkeypatch):
    monkeypatch.setitem(NORMS._entries, "marker", lambda num_features, layout: Marker(num_features))
    model = build("none", decoder_norm=None, sublayer_norms={position: {"name": "marker"}})
    found = norms_at(model)
    assert sorted(found) == sorted(p for paths in POSITION_PATHS.values() for p in paths)
    assert {p for p, cls in found.items() if cls is Marker} == set(POSITION_PATHS[position])
    assert {cls for p, cls in found.items() if p not in POSITION_PATHS[position]} == {NoNorm}
    assert torch.isfinite(model(batch(SRC_LENS, 7, 0), batch(TGT_LENS, 6, 1))).all()


def test_bn_goes_in_the_encoder_and_ln_in_the_decoder_unless_decoder_norm_is_null():
    def kinds(model):
        found = norms_at(model)
        enc = {cls for p, cls in found.items() if p.startswith("encoder")}
        dec = {cls for p, cls in found.items() if p.startswith("decoder")}
        return enc, dec

    assert kinds(build("bn")) == ({MaskedBatchNorm}, {SequenceLayerNorm})
    assert kinds(build("bn", decoder_norm=None)) == ({MaskedBatchNorm}, {MaskedBatchNorm})
    overridden = build("bn", sublayer_norms={"decoder_ffn": {"name": "bn"}})
    assert norms_at(overridden)["decoder_layers.1.ffn_norm"] is MaskedBatchNorm
    assert norms_at(overridden)["decoder_layers.1.cross_attn_norm"] is SequenceLayerNorm


def test_unknown_position_is_one_sentence():
    with pytest.raises(
        UserError, match="no position 'encoder_attn'; positions are encoder_self_attn"
    ):
        build(sublayer_norms={"encoder_attn": {"name": "ln"}})


@pytest.mark.parametrize("norm", ["ln", "bn"])
def test_more_padding_changes_no_logit_at_a_real_position(norm):
    model = build(norm, decoder_norm=None, **NO_DROPOUT)
    src, prev = batch(SRC_LENS, 6, 0), batch(TGT_LENS, 5, 1)
    src_long, prev_long = batch(SRC_LENS, 11, 0), batch(TGT_LENS, 9, 1)
    real = prev.ne(PAD)

    def same_real_logits():
        short, long = model(src, prev), model(src_long, prev_long)[:, :5]
        torch.testing.assert_close(short[real], long[real], rtol=0, atol=1e-5)

    same_real_logits()  # training mode, BN on batch statistics: pads stay out of them
    model.eval()
    same_real_logits()  # eval mode: BN on the running statistics the two calls built alike
    # Positions count real tokens only, so a left-padded source means the same as a right-padded one.
    left = model(batch(SRC_LENS, 8, 0, left=True), prev)
    torch.testing.assert_close(left[real], model(src, prev)[real], rtol=0, atol=1e-5)


def test_future_target_tokens_do_not_change_earlier_logits():
    model = build().eval()
    src, prev = batch([5, 5], 5, 0), batch([6, 6], 6, 1)
    changed = prev.clone()
    changed[:, 3:] = torch.randint(4, VOCAB, (2, 3))
    a, b = model(src, prev), model(src, changed)
    torch.testing.assert_close(a[:, :3], b[:, :3], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_cached_decoding_equals_recomputing_the_prefix():
    assert_cached_decoding_matches(build("bn", decoder_norm=None).eval(), SRC_LENS)


@pytest.mark.parametrize("normalize_before", [True, False])
def test_pre_and_post_norm_train(normalize_before):
    model = build("bn", normalize_before=normalize_before)
    assert (model.encoder_final_norm is None) is not normalize_before
    logits = model(batch(SRC_LENS, 6, 0), batch(TGT_LENS, 5, 1, left=True))  # left pads: no NaN
    logits.logsumexp(-1).mean().backward()
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def expected_parameters(vocab: int, d: int, ffn: int, enc: int, dec: int, pre: bool = True) -> int:
    """fairseq's transformer counted by hand: one shared embedding (no output bias, sinusoidal
    positions have no weights); attention = 4 d×d projections with bias; FFN d→ffn→d with bias;
    a norm has 2·d weights (LN or BN affine)."""
    attention = 4 * (d * d + d)
    ffn_params = d * ffn + ffn + ffn * d + d
    norm = 2 * d
    encoder_layer = attention + ffn_params + 2 * norm
    decoder_layer = 2 * attention + ffn_params + 3 * norm
    finals = 2 * norm if pre else 0
    return vocab * d + enc * encoder_layer + dec * decoder_layer + finals


def test_parameter_count_by_arithmetic():
    small = build()
    assert count_parameters(small) == expected_parameters(VOCAB, 16, 24, 2, 2)
    post = build(normalize_before=False)
    assert count_parameters(post) == expected_parameters(VOCAB, 16, 24, 2, 2, pre=False)
    # The paper's model with fairseq's 8,848-token IWSLT14 vocabulary.
    cfg = model_config("transformer_iwslt_de_en")
    paper = build_model(cfg, norm_factory({"name": "ln"}, "sequence"), vocab_size=8848, pad_idx=PAD)
    assert count_parameters(paper) == expected_parameters(8848, 512, 1024, 6, 6) == 36_075_520


@pytest.mark.parametrize("name", ["transformer_smoke", "transformer_cpu"])
def test_the_yaml_configs_build_through_the_task_interface(name):
    overrides = ["experiment=iwslt14_transformer", "scale=paper", f"model={name}"]
    cfg = compose_config(overrides).model  # as Hydra hands it over (over transformer_iwslt_de_en)
    cfg.sublayer_norms.encoder_final = {"name": "none"}
    norm = compose_config([*overrides, "norm=bn"]).norm
    model = build_model(cfg, norm, vocab_size=VOCAB, pad_idx=PAD)  # the model resolves every norm
    assert model.cfg.d_model == cfg.d_model
    assert isinstance(model.encoder_layers[0].self_attn_norm, MaskedBatchNorm)
    assert isinstance(model.encoder_final_norm, NoNorm)
    assert isinstance(model.decoder_layers[0].self_attn_norm, SequenceLayerNorm)


def test_bad_shapes_are_one_sentence():
    with pytest.raises(UserError, match="d_model=10 is not divisible by model.heads=4"):
        build(d_model=10, heads=4)
    model = build(max_positions=4)
    with pytest.raises(UserError, match="5 tokens per sentence exceeds model.max_positions=4"):
        model(batch([5], 5, 0), batch([3], 3, 1))
