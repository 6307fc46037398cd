"""The shipped toy model: loads offline under the installed TransformerLens major and in plain
transformers with the same logits, tokenizes every prompt word by word, and meets the accuracy
targets on held-out items of every family."""

from __future__ import annotations

import json
import random
import warnings

import pytest
import torch

from tl_clt.errors import CheckpointError
from tl_clt.lens import TL_MAJOR
from tl_clt.tokenization import word_level_tokenizer
from tl_clt.toy import load_corpus, load_hf, load_items, load_lens, load_record
from tl_clt.toy.load import MODEL_DIR
from tl_clt.toy.tasks import FAMILIES, evaluate, predict

# held-out accuracy targets of issue 4 (all met by the shipped model: docs/toy-model.md).
TARGETS = {
    ("two_hop", "two_hop"): 0.95,
    ("addition", "addition"): 0.95,
    ("antonym", "antonym"): 0.80,
    ("rhyme", "rhyme"): 0.95,
    ("entity", "unknown"): 0.95,
    ("entity", "known"): 0.95,
}


@pytest.fixture(scope="module")
def lens():
    torch.manual_seed(0)
    return load_lens()


@pytest.fixture(scope="module")
def hf():
    return load_hf()


def _sample(items, n, seed=0):
    return random.Random(seed).sample(items, min(n, len(items)))


def test_backend_follows_the_transformer_lens_major(lens):
    assert lens.is_bridge == (TL_MAJOR >= 4)
    assert (lens.n_layers, lens.d_model) == (4, 128)


def test_tokens_round_trip_word_by_word(lens, hf):
    _, tokenizer = hf
    for fam in FAMILIES:
        for it in _sample(load_items(fam, held_out=None), 5):
            toks = lens.to_tokens(it.prompt)[0].tolist()
            words = it.prompt.split()
            assert toks == tokenizer.convert_tokens_to_ids(["<bos>", *words])
            assert lens.to_str_tokens(it.prompt) == ["<bos>", *words]
            assert tokenizer.unk_token_id not in toks


def test_the_tokenizer_ignores_case_and_matches_a_rebuilt_one(lens, tmp_path):
    prompt = "the capital of the state containing dallas is"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing unknown: no warning
        capitals = lens.tokens("The Capital of the State containing DALLAS is")
    assert capitals.tolist() == lens.tokens(prompt).tolist()
    assert lens.tokens("<bos> <unk>")[0, 1:].tolist() == [0, 2]  # specials stay as written
    # the shipped tokenizer is what the training script builds from the corpus
    word_level_tokenizer(load_corpus().vocabulary, tmp_path, lowercase=True)
    built = json.loads((tmp_path / "tokenizer.json").read_text())
    assert built == json.loads((MODEL_DIR / "tokenizer.json").read_text())
    # and names a tokenizer class both transformers majors load (5.x alone knows the name
    # "TokenizersBackend" it writes by default)
    for directory in (tmp_path, MODEL_DIR):
        config = json.loads((directory / "tokenizer_config.json").read_text())
        assert config["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_transformer_lens_and_transformers_give_the_same_logits(lens, hf):
    model, tokenizer = hf
    prompts = [it.prompt for it in _sample(load_items("two_hop", held_out=None), 8)]
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(["<bos>", *p.split()]) for p in prompts])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        got = lens.model(ids.to(lens.device))
    torch.testing.assert_close(got.float(), expected.float(), atol=1e-4, rtol=1e-4)


def test_predict_matches_one_prompt_at_a_time_argmax(lens, hf):
    """Batched greedy answers against a plain loop over the transformers model."""
    model, tokenizer = hf
    items = [it for fam in FAMILIES for it in _sample(load_items(fam), 4, seed=1)]
    got = predict(lens, items, batch_size=3)
    for it, pred in zip(items, got):
        ids = tokenizer.convert_tokens_to_ids(["<bos>", *it.prompt.split()])
        with torch.no_grad():
            for _ in range(it.n_generate + 1):
                ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
        assert pred == tokenizer.convert_ids_to_tokens(ids[-1]), it.prompt


def test_held_out_accuracy_meets_targets(lens):
    """Every held-out item of every family (one batched pass per prompt shape)."""
    rows = {(r.family, r.group): r for r in evaluate(lens, load_items())}
    for key, target in TARGETS.items():
        assert rows[key].accuracy >= target, (key, rows[key])
    recorded = load_record()["held_out_accuracy"]
    for (fam, group), row in rows.items():  # the shipped weights are the ones trained
        name = fam if group == fam else f"{fam}/{group}"
        assert abs(row.correct - recorded[name]["correct"]) <= 1, name  # TL 3 logits differ ~1e-5


def test_known_people_are_answered_and_the_default_is_unknown(lens):
    """On the trained questions: known people get their attribute, others "unknown"."""
    items = load_items("entity", held_out=False, group="known")
    items += _sample(load_items("entity", held_out=False, group="unknown"), 80)
    rows = {r.group: r for r in evaluate(lens, items)}
    assert rows["known"].accuracy >= 0.95 and rows["unknown"].accuracy >= 0.95
    # people known from facts alone: a known surname is enough, they are answered too
    fact_only = load_items("entity", group="fact_only")
    answers = predict(lens, fact_only)
    assert sum(a == it.answer for a, it in zip(answers, fact_only)) >= len(fact_only) - 1


def test_corpus_is_the_one_recorded(lens):
    corpus = load_corpus()
    assert corpus.config.to_dict() == load_record()["corpus"]
    assert len(corpus.vocabulary) + 3 == lens.d_vocab


def test_a_directory_without_a_model_is_refused_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="no toy model in .*python -m tl_clt.toy.train"):
        load_lens(directory=tmp_path / "model")
