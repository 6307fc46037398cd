"""The toy corpus: deterministic, held-out items truly unseen (checked by brute force against
every training text), every answer one token, languages with disjoint vocabularies."""

from __future__ import annotations

import pytest

from tl_clt.errors import ConfigError
from tl_clt.toy import lexicon as lx
from tl_clt.toy.corpus import CorpusConfig, build_corpus
from tl_clt.toy.tasks import FAMILIES


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(CorpusConfig())


@pytest.fixture(scope="module")
def train_texts(corpus):
    return corpus.train_texts()


@pytest.fixture(scope="module")
def train_prefixes(train_texts):
    """Every word-prefix of every training text."""
    prefixes = set()
    for text in train_texts:
        words = text.split()
        for n in range(1, len(words) + 1):
            prefixes.add(" ".join(words[:n]))
    return prefixes


def test_same_seed_same_corpus_other_seed_other_split(corpus):
    again = build_corpus(CorpusConfig())
    assert again.train == corpus.train
    assert again.items == corpus.items
    assert again.vocabulary == corpus.vocabulary
    other = build_corpus(CorpusConfig(seed=1))
    held = {it.prompt for it in corpus.items if it.held_out}
    other_held = {it.prompt for it in other.items if it.held_out}
    assert held != other_held
    assert other.vocabulary == corpus.vocabulary


def test_every_family_has_train_and_held_out_items(corpus):
    for fam in FAMILIES:
        items = [it for it in corpus.items if it.family == fam]
        assert any(it.held_out for it in items), fam
        assert any(not it.held_out for it in items), fam


def test_held_out_prompts_never_start_a_training_text(corpus, train_prefixes):
    held = corpus.held_out()
    assert len(held) > 1000
    leaked = [it.prompt for it in held if it.prompt in train_prefixes]
    assert leaked == []
    # and the training items' prompts do appear (the check can fail)
    trained = [it for it in corpus.items if not it.held_out and it.group != "fact_only"]
    assert all(it.prompt in train_prefixes for it in trained[::7])


def test_held_out_specifics(corpus, train_texts, train_prefixes):
    words_seen = {w for t in train_texts for w in t.split()}
    padded = [f" {t} " for t in train_texts]
    for it in corpus.held_out("entity"):
        first, last = it.name.split()
        assert first in words_seen and last in words_seen  # every name part is familiar
        seen = any(f" {it.name} " in t for t in padded)
        # never-seen people occur nowhere in training; people with facts have them trained
        assert seen == (it.status != "unknown"), it.name
    for it in corpus.held_out("addition"):  # both operand orders held out
        assert f"{it.b} + {it.a} =" not in train_prefixes
    for it in corpus.held_out("antonym"):  # no frame of that language around the concept
        words = {
            w for pairs in lx.ANTONYMS if "/".join(pairs[0]) == it.concept for p in pairs for w in p
        }
        frame_start = lx.ANTONYM_FRAMES[it.language].split("{word}")[0]
        frames = [t.split() for t in train_texts if t.startswith(frame_start)]
        assert frames and not any(set(t) & words for t in frames), it.prompt
    for it in corpus.held_out("two_hop"):  # the one-hop facts of a held-out city are trained
        assert f"{it.city} is in {it.state}" in train_texts
        assert f"the capital of {it.state} is {it.capital}" in train_texts
    assert any(it.city == "dallas" for it in corpus.held_out("two_hop"))


def test_fact_only_people_have_facts_but_no_questions(corpus, train_texts):
    people = {it.name for it in corpus.items if it.group == "fact_only"}
    assert len(people) == corpus.config.n_fact_only
    for name in people:
        with_name = [t for t in train_texts if f" {name} " in f" {t} "]
        assert len(with_name) == len(lx.RELATIONS)
        assert not any(t.startswith("what ") for t in with_name)


def test_answers_and_texts_are_in_vocabulary(corpus, train_texts):
    vocab = set(corpus.vocabulary)
    assert len(vocab) == len(corpus.vocabulary)
    assert {w for t in train_texts for w in t.split()} <= vocab
    for it in corpus.items:
        assert set(it.prompt.split()) <= vocab
        assert set(it.accept) <= vocab and it.answer in it.accept
    sums = {it.answer for it in corpus.items if it.family == "addition"}
    assert sums == {str(n) for n in range(199)}
    operands = {(it.a, it.b) for it in corpus.items if it.family == "addition"}
    assert operands == {(a, b) for a in range(100) for b in range(100)}


def test_languages_have_disjoint_vocabularies():
    words = {}
    for li, lang in enumerate(lx.LANGUAGES):
        frame = set(lx.ANTONYM_FRAMES[lang].format(word="").split())
        words[lang] = frame | {w for pairs in lx.ANTONYMS for w in pairs[li]}
    for i, a in enumerate(lx.LANGUAGES):
        for b in lx.LANGUAGES[i + 1 :]:
            assert not words[a] & words[b], (a, b, words[a] & words[b])


def test_rhyme_items_accept_the_class_and_not_the_word(corpus):
    for it in corpus.held_out("rhyme")[:50]:
        members = [w for w, _ in lx.RHYMES[it.rhyme_class]]
        assert set(it.accept) == set(members) - {it.word}
        assert it.prompt.endswith(lx.LINE_BREAK)
        assert it.line2.split()[-1] == it.answer


def test_bad_config_is_refused():
    with pytest.raises(ConfigError):
        CorpusConfig(heldout_cities_per_state=6)
    with pytest.raises(ConfigError):
        CorpusConfig(n_unknown_train=10_000)
