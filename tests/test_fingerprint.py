"""Identity by content: the shipped transcoder fits the shipped model however it is loaded
(its folder's name is only a note); a model with one perturbed weight, even under the right
name, is refused naming the matrix; `allow_mismatch` goes on with a warning; a transcoder
without a fingerprint keeps the name check."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from conftest import clt_for, get_model

from tl_clt import ModelMismatchError, ReplacementModel, TLCLTWarning
from tl_clt.lens import load_model
from tl_clt.toy import load_clt, load_hf, model_dir


def test_the_shipped_transcoder_fits_the_shipped_model_loaded_from_its_folder():
    lens = load_model(model_dir())
    assert lens.name == "model"  # the folder's name, not the shipped model's
    with pytest.warns(TLCLTWarning, match="name: transcoder has 'tl-clt-toy'.*fingerprints agree"):
        ReplacementModel(lens, load_clt())


def test_a_model_with_one_perturbed_weight_is_refused_under_the_right_name(tmp_path):
    hf, tokenizer = load_hf()
    with torch.no_grad():
        hf.transformer.h[1].mlp.c_proj.weight[3, 5] += 0.5  # one weight of layer 1's W_out
    folder = tmp_path / "tl-clt-toy"
    hf.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    lens = load_model(folder)
    assert lens.name == "tl-clt-toy"
    clt = load_clt()
    with pytest.raises(ModelMismatchError, match=r"blocks\.1\.mlp\.W_out differs") as info:
        ReplacementModel(lens, clt)
    assert "W_in" not in str(info.value) and "allow_mismatch=True" in str(info.value)
    with pytest.warns(TLCLTWarning, match=r"W_out differs.*allow_mismatch"):
        ReplacementModel(lens, clt, allow_mismatch=True)


def test_another_vocabulary_is_named():
    lens = get_model("gpt2", n_layers=2)
    clt = clt_for(lens)
    ident = clt.cfg.model
    other = dataclasses.replace(ident, fingerprint={**ident.fingerprint, "vocab": "0" * 16})
    assert "the tokenizer's vocabulary differs" in other.mismatches(lens.identity())


def test_a_transcoder_without_a_fingerprint_is_checked_by_name_only():
    lens = get_model("gpt2", n_layers=2)
    clt = clt_for(lens)
    old = dataclasses.replace(clt.cfg.model, fingerprint=None)
    clt.cfg = clt.cfg.replace(model=old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ReplacementModel(lens, clt)  # same name: accepted, nothing to say
    clt.cfg = clt.cfg.replace(model=dataclasses.replace(old, name="another"))
    with pytest.raises(ModelMismatchError, match="no weight fingerprint: name check only"):
        ReplacementModel(lens, clt)
