"""ActivationSource: what it collects (checked against a full forward pass with a cache), that
it drops BOS and padding, stops after the last MLP, shuffles at token level in bounded chunks,
resumes at any batch, caches to disk, and reads texts, datasets and token tensors."""

from __future__ import annotations

import itertools

import pytest
import torch
from _training_helpers import lens as make_lens
from _training_helpers import texts as make_texts

from tl_clt.activations import ActivationSource, TokenBatch, load_text_dataset
from tl_clt.activations.text import pad_sequences
from tl_clt.errors import ConfigError, InputError, UnknownHookError


@pytest.fixture(scope="module", params=["gpt2", "neox", "llama"])
def any_lens(request):
    """GPT-2-style, parallel-block and Llama-style models."""
    return make_lens(request.param)


@pytest.fixture(scope="module")
def lens():
    return make_lens("gpt2")


def _reference(lens, tokens, keep, in_hook="ln2.hook_normalized"):
    """Every layer's MLP input and output at the kept positions, from a full forward pass."""
    names = [lens.mlp_in(i, in_hook) for i in range(lens.n_layers)]
    names += [lens.mlp_out(i) for i in range(lens.n_layers)]
    with torch.no_grad():
        _, cache = lens.cache(tokens, names)
    L = lens.n_layers
    x = torch.stack([cache[n][keep] for n in names[:L]], 1)
    y = torch.stack([cache[n][keep] for n in names[L:]], 1)
    return x, y


def test_collect_matches_a_full_forward_pass_and_drops_bos_and_padding(any_lens):
    lens = any_lens
    source = ActivationSource(lens, make_texts(8), seq_len=16)
    seqs = list(source.sequences())[:6]
    batch = pad_sequences(seqs, source.pad)
    assert not batch.keep[:, 0].any()  # BOS dropped
    assert (~batch.keep).sum() > len(seqs)  # some padding, dropped too
    got = source.collect(batch)
    ref = _reference(lens, batch.tokens, batch.keep)
    assert got.x.shape == (int(batch.keep.sum()), lens.n_layers, lens.d_model)
    torch.testing.assert_close(got.x, ref[0])
    torch.testing.assert_close(got.y, ref[1])


def test_collect_reads_the_configured_input_hook(any_lens):
    lens = any_lens
    if lens.parallel:  # parallel blocks have no residual stream between attention and MLP
        with pytest.raises(UnknownHookError, match="parallel"):
            ActivationSource(lens, make_texts(4), input_hook="hook_resid_mid")
        return
    source = ActivationSource(lens, make_texts(4), input_hook="hook_resid_mid", seq_len=16)
    batch = pad_sequences(list(source.sequences())[:3], source.pad)
    ref = _reference(lens, batch.tokens, batch.keep, "hook_resid_mid")
    torch.testing.assert_close(source.collect(batch).x, ref[0])


def test_forward_stops_after_the_last_mlp(any_lens):
    lens = any_lens
    source = ActivationSource(lens, make_texts(4), seq_len=16)
    batch = pad_sequences(list(source.sequences())[:2], source.pad)
    fired = []
    final = "ln_final.hook_normalized"
    assert lens.has_hook(final)
    with lens.hooks([(final, lambda t, hook: fired.append(1))]):
        source.collect(batch)
        assert not fired
        lens.model(batch.tokens)  # the same hook does fire in a full pass
    assert fired
    # and no hook is left behind: a plain run afterwards adds nothing
    lens.model(batch.tokens)
    assert len(fired) == 1


def test_long_texts_are_cut_into_bos_prefixed_windows(lens):
    words = [f"w{i % 50}" for i in range(40)]
    source = ActivationSource(lens, [" ".join(words)], seq_len=16)
    seqs = list(source.sequences())
    bos = lens.tokenizer.bos_token_id
    assert [len(s.ids) for s in seqs] == [16, 16, 11]  # BOS + 15, BOS + 15, BOS + 10
    assert all(int(s.ids[0]) == bos and not s.keep[0] and s.keep[1:].all() for s in seqs)
    text_ids = torch.cat([s.ids[1:] for s in seqs])
    assert text_ids.tolist() == lens.tokenizer.convert_tokens_to_ids(words)


def test_batches_are_a_token_level_shuffle_of_each_chunk_and_resume_anywhere(lens):
    source = ActivationSource(lens, make_texts(40), seq_len=16, buffer_tokens=96, seed=3)
    chunks = list(source.chunks())
    assert len(chunks) > 2
    assert all(96 <= c.n_tokens < 96 + 16 for c in chunks[:-1])  # memory bound: one chunk
    size = 32
    per_epoch = sum(c.n_tokens // size for c in chunks)
    batches = list(itertools.islice(source.batches(size), per_epoch + 3))
    # epoch 0 holds each chunk's tokens once, in shuffled order (rows are exact copies)
    first = chunks[0]
    acts = source.chunk_activations(first)
    n0 = first.n_tokens // size
    served = torch.cat([b.x for b in batches[:n0]])
    rows = {tuple(r.tolist()) for r in acts.x.flatten(1)}
    assert all(tuple(r.tolist()) in rows for r in served.flatten(1))
    assert len({tuple(r.tolist()) for r in served.flatten(1)}) == served.shape[0]
    assert not torch.equal(served, acts.x[: served.shape[0]])  # not in sequence order
    # resuming at batch n reproduces the same batches, across the epoch boundary too
    for start in (1, n0, per_epoch - 1, per_epoch + 1):
        again = list(itertools.islice(source.batches(size, start=start), 2))
        for a, b in zip(again, batches[start : start + 2]):
            assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    # a second epoch reshuffles
    assert not torch.equal(batches[per_epoch].x, batches[0].x)


def test_disk_cache_is_read_by_a_second_run(lens, tmp_path, monkeypatch):
    data = make_texts(30)
    kw = {"seq_len": 16, "buffer_tokens": 64, "holdout_sequences": 2, "cache_dir": str(tmp_path)}
    first = ActivationSource(lens, data, **kw)
    want = list(itertools.islice(first.batches(16), 12))
    assert (tmp_path / "manifest.json").is_file() and list(tmp_path.glob("shard_*.safetensors"))
    second = ActivationSource(lens, data, **kw)

    def no_model(*args, **kwargs):
        raise AssertionError("the cache should have been read")

    monkeypatch.setattr(second, "collect", no_model)
    got = list(itertools.islice(second.batches(16), 12))
    assert all(torch.equal(a.x, b.x) and torch.equal(a.y, b.y) for a, b in zip(got, want))
    with pytest.raises(ConfigError, match="other text"):
        list(itertools.islice(ActivationSource(lens, make_texts(30, seed=9), **kw).batches(16), 1))
    with pytest.raises(ConfigError, match="other settings"):
        ActivationSource(lens, data, **{**kw, "seq_len": 12})


def test_complete_cache_serves_later_epochs_of_a_one_shot_iterator(lens, tmp_path):
    data = make_texts(12)
    source = ActivationSource(
        lens, iter(data), seq_len=16, buffer_tokens=48, cache_dir=str(tmp_path)
    )
    per_epoch = sum(
        c.n_tokens // 16
        for c in ActivationSource(lens, data, seq_len=16, buffer_tokens=48).chunks()
    )
    got = list(itertools.islice(source.batches(16), 2 * per_epoch + 1))  # needs epochs 1 and 2
    assert len(got) == 2 * per_epoch + 1
    no_cache = ActivationSource(lens, iter(data), seq_len=16, buffer_tokens=48)
    with pytest.raises(InputError, match="one-shot iterator"):
        list(itertools.islice(no_cache.batches(16), 2 * per_epoch + 1))


def test_hugging_face_dataset_from_a_local_text_file(lens, tmp_path):
    lines = make_texts(10)
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    want = [s.ids.tolist() for s in ActivationSource(lens, lines, seq_len=16).sequences()]
    for streaming in (True, False):
        ds = load_text_dataset(path, streaming=streaming, cache_dir=tmp_path / "hf")
        got = [s.ids.tolist() for s in ActivationSource(lens, ds, seq_len=16).sequences()]
        assert got == want
    with pytest.raises(InputError, match="column"):
        list(ActivationSource(lens, ds, seq_len=16, text_column="body").sequences())


def test_token_tensors_drop_bos_and_padding(lens):
    bos, pad = lens.tokenizer.bos_token_id, lens.tokenizer.pad_token_id
    tokens = torch.tensor([[bos, 5, 6, 7], [bos, 8, pad, pad]])
    source = ActivationSource(lens, tokens)
    seqs = list(source.sequences())
    assert [s.keep.tolist() for s in seqs] == [[False, True, True, True], [False, True]]
    explicit = TokenBatch(
        tokens, torch.tensor([[True, True, False, True], [False, True, True, False]])
    )
    seqs = list(ActivationSource(lens, [explicit]).sequences())
    assert [len(s.ids) for s in seqs] == [4, 3]
    batch = next(ActivationSource(lens, tokens).batches(4))
    assert batch.x.shape == (4, lens.n_layers, lens.d_model)


def test_bad_inputs_raise_clear_errors(lens):
    with pytest.raises(InputError, match="single string"):
        ActivationSource(lens, "w1 w2 w3")
    with pytest.raises(InputError, match="no batch"):
        next(ActivationSource(lens, ["w1 w2"]).batches(64))
    with pytest.raises(InputError, match="not a str"):
        list(ActivationSource(lens, ["w1", 3]).sequences())
