"""The toy training script on a few steps: deterministic (same seed, same weights; another seed,
other weights), batches hold the configured family mix with `<bos>` first, and the saved
directory loads in plain transformers and as a TransformerLens model with the same logits."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from tl_clt.errors import InputError
from tl_clt.lens import from_hf
from tl_clt.tokenization import BOS, PAD, word_level_tokenizer
from tl_clt.toy.corpus import CorpusConfig, build_corpus
from tl_clt.toy.load import RECORD_FILE
from tl_clt.toy.train import (
    Batches,
    ToyTrainConfig,
    _parser,
    configs_from_args,
    lm_loss,
    main,
    save_model,
    train_model,
)

TINY = ToyTrainConfig(
    steps=3, batch_size=16, warmup=1, n_layers=1, d_model=32, n_heads=2, d_mlp=64, threads=1
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    corpus = build_corpus(CorpusConfig())
    tokenizer = word_level_tokenizer(corpus.vocabulary, tmp_path_factory.mktemp("tok"))
    return corpus, tokenizer


def test_batches_follow_the_mix_and_start_with_bos(setup):
    corpus, tokenizer = setup
    batches = Batches(corpus, tokenizer, TINY)
    assert sum(batches.counts.values()) == TINY.batch_size
    batch = batches.next()
    assert batch.shape[0] == TINY.batch_size
    assert (batch[:, 0] == tokenizer.convert_tokens_to_ids(BOS)).all()
    # each row is a training text, right-padded
    pad = tokenizer.convert_tokens_to_ids(PAD)
    texts = set(corpus.train_texts())
    for row in batch.tolist():
        words = tokenizer.convert_ids_to_tokens([t for t in row[1:] if t != pad])
        assert " ".join(words) in texts


def test_same_seed_same_weights(setup):
    corpus, tokenizer = setup
    a, _ = train_model(corpus, tokenizer, TINY)
    b, _ = train_model(corpus, tokenizer, TINY)
    c, _ = train_model(corpus, tokenizer, replace(TINY, seed=1))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_saved_model_loads_in_transformers_and_transformer_lens(setup, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    corpus, tokenizer = setup
    model, steps = train_model(corpus, tokenizer, TINY)
    assert steps == TINY.steps
    save_model(model, tokenizer, tmp_path / "m", {"steps_done": steps})
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m")).eval()
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "m"))
    assert json.loads((tmp_path / "m" / RECORD_FILE).read_text())["steps_done"] == steps
    lens = from_hf(hf, tok)
    prompt = "the capital of the state containing dallas is"
    ids = lens.to_tokens(prompt)
    with torch.no_grad():
        torch.testing.assert_close(lens.model(ids), hf(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(hf(input_ids=ids).logits, model(input_ids=ids).logits)


def test_main_refuses_a_missing_out_flag(capsys):
    with pytest.raises(SystemExit):
        main([])


def test_command_line_sets_the_model_shape_and_schedule():
    args = _parser().parse_args(["--out", "x", "--layers", "8", "--steps", "10", "--seed", "3"])
    corpus_cfg, cfg = configs_from_args(args)
    assert (cfg.n_layers, cfg.steps, cfg.seed) == (8, 10, 3)
    assert corpus_cfg == CorpusConfig()
    # without flags: the shipped model's recipe
    assert configs_from_args(_parser().parse_args(["--out", "x"]))[1] == ToyTrainConfig()


@pytest.mark.parametrize("layers", ["0", "-2", "two"])
def test_command_line_refuses_a_bad_layer_count(layers, capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--out", "x", "--layers", layers])
    assert "--layers: expected a whole number of at least 1" in capsys.readouterr().err


def test_loss_weighs_each_rows_last_token(setup):
    corpus, tokenizer = setup
    torch.manual_seed(0)
    model, _ = train_model(corpus, tokenizer, replace(TINY, steps=0))
    batch = Batches(corpus, tokenizer, TINY).next()
    pad = tokenizer.convert_tokens_to_ids(PAD)
    with torch.no_grad():
        plain = model(input_ids=batch, labels=batch.masked_fill(batch == pad, -100)).loss
        assert torch.allclose(lm_loss(model, batch, pad, 0.0), plain, atol=1e-5)
        extra = []
        for row in batch:  # one row at a time: the loss of its answer given its prompt
            ids = row[row != pad]
            logits = model(input_ids=ids[None, :-1]).logits[0, -1]
            extra.append(torch.nn.functional.cross_entropy(logits, ids[-1]))
        weighted = lm_loss(model, batch, pad, 2.0)
        assert torch.allclose(weighted, plain + 2.0 * torch.stack(extra).mean(), atol=1e-5)


def test_a_lowercasing_tokenizer_maps_capitals_and_refuses_capital_words(tmp_path):
    lower = word_level_tokenizer(["dallas", "is"], tmp_path / "lower", lowercase=True)
    plain = word_level_tokenizer(["dallas", "is"], tmp_path / "plain")
    assert lower("Dallas IS")["input_ids"] == lower("dallas is")["input_ids"] == [3, 4]
    assert plain("Dallas is")["input_ids"] == [plain.unk_token_id, 4]
    with pytest.raises(InputError, match="'Dallas' has capitals"):
        word_level_tokenizer(["Dallas"], tmp_path / "bad", lowercase=True)
    assert not (tmp_path / "bad").exists()
