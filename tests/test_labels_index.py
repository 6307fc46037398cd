"""The feature index on a tiny random model with a random CLT: the streamed top-k equals a
brute-force full pass through the spliced replacement model, an interrupted run resumes to
the same database, text sources skip padding, logit effects match the Hugging Face weights."""

from __future__ import annotations

import sqlite3

import pytest
import torch
from conftest import get_model, random_clt

from tl_clt import ReplacementModel, build_feature_index
from tl_clt import hooks as H
from tl_clt.errors import IndexMismatchError, InputError
from tl_clt.labels import FeatureIndex, IndexConfig, TensorSource
from tl_clt.labels.logits import top_logit_effects
from tl_clt.lens.build import tiny_hf_model

SHAPE = {"n_layers": 2, "d_model": 32}
CFG = IndexConfig(k=5, n_samples=4, n_holdout=4, n_pool=30, left=3, right=2)


def setup(n_seq=30, seq_len=12, activation="relu"):
    lens = get_model("gpt2", **SHAPE)
    clt = random_clt(2, 32, n_features=16, activation=activation, model=lens.identity())
    tokens = torch.randint(
        3, lens.d_vocab, (n_seq, seq_len), generator=torch.Generator().manual_seed(3)
    )
    return lens, clt, tokens


def brute_force_acts(lens, clt, tokens):
    """[n_seq, pos, layers * features] from one spliced run over the whole corpus."""
    rm = ReplacementModel(lens, clt)
    names = [H.features(layer) for layer in range(clt.cfg.n_layers)]
    _, cache = rm.run_with_cache(tokens, names_filter=names, error=True)
    return torch.cat([cache[n] for n in names], dim=-1)


@pytest.mark.parametrize("activation, per_pass", [("relu", None), ("topk", 5)])
def test_streamed_top_k_equals_a_brute_force_pass(tmp_path, activation, per_pass):
    lens, clt, tokens = setup(activation=activation)
    index = build_feature_index(ReplacementModel(lens, clt), TensorSource(tokens, batch_size=7), tmp_path / "f.db", CFG,
                                features_per_pass=per_pass, label=False, progress=False)  # fmt: skip
    acts = brute_force_acts(lens, clt, tokens)
    acts[:, 0] = 0  # BOS position left out
    F = clt.cfg.n_features
    n_live = 0
    for gid in range(acts.shape[-1]):
        layer, feat = divmod(gid, F)
        peaks = []
        for s in range(tokens.shape[0]):
            col = acts[s, :, gid]
            if col.max() > 0:
                peaks.append((-float(col.max()), s, int(col.argmax())))
        expect = sorted(peaks)[: CFG.k]
        got = index.examples(layer, feat, "top")
        assert [(e.seq, e.pos) for e in got] == [(s, p) for _, s, p in expect]
        assert [e.value for e in got] == pytest.approx(
            [-v for v, _, _ in expect], rel=1e-5, abs=1e-6
        )
        for e in got:  # the window: tokens and this feature's activations around the peak
            lo = max(e.pos - CFG.left, 0)
            assert list(e.token_ids) == tokens[e.seq, lo : e.pos + CFG.right + 1].tolist()
            assert list(e.acts) == pytest.approx(
                acts[e.seq, lo : e.pos + CFG.right + 1, gid].tolist(), abs=1e-5
            )
            assert e.token_ids[e.peak] == tokens[e.seq, e.pos]
        stats = index.stats(layer, feat)
        assert stats.n_fire == int((acts[..., gid] > 0).sum())
        assert stats.max_act == pytest.approx(float(acts[..., gid].max()), rel=1e-5)
        n_live += stats.live
    assert n_live > 10 and index.n_live() == n_live


def _dump(path) -> dict[str, list]:
    conn = sqlite3.connect(str(path))
    tables = [
        t
        for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
    ]
    out = {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
    conn.close()
    return out


class Interrupted(TensorSource):
    """A source whose first reading stops with Ctrl-C after `stop_after` batches."""

    def __init__(self, tokens, batch_size, stop_after):
        super().__init__(tokens, batch_size)
        self.stop_after, self.readings = stop_after, 0

    def batches(self, start=0):
        self.readings += 1
        for i, batch in enumerate(super().batches(start), start=start):
            if self.readings == 1 and i == self.stop_after:
                raise KeyboardInterrupt
            yield batch


@pytest.mark.parametrize("per_pass, stop_after", [(None, 3), (20, 2)])
def test_interrupted_run_resumes_to_the_same_database(tmp_path, per_pass, stop_after):
    lens, clt, tokens = setup()
    kw = dict(config=CFG, features_per_pass=per_pass, progress=False, checkpoint_seconds=0.0)
    build_feature_index(
        ReplacementModel(lens, clt), TensorSource(tokens, 4), tmp_path / "full.db", **kw
    )
    src = Interrupted(tokens, 4, stop_after)
    passes = 0 if per_pass is None else 1  # with slices, interrupt the second pass
    if passes:
        src.readings = -1  # the first pass reads through; the second is interrupted
    with pytest.raises(KeyboardInterrupt):
        build_feature_index(ReplacementModel(lens, clt), src, tmp_path / "resumed.db", **kw)
    conn = sqlite3.connect(str(tmp_path / "resumed.db"))
    progress = dict(conn.execute("SELECT key, value FROM checkpoint"))
    conn.close()
    assert "state" in progress and f'"batch": {stop_after}' in progress["progress"]
    index = build_feature_index(ReplacementModel(lens, clt), src, tmp_path / "resumed.db", **kw)
    assert src.readings == 2
    assert _dump(tmp_path / "resumed.db") == _dump(tmp_path / "full.db")
    assert index.n_live() > 0 and next(index.labels(), None) is not None


def test_labels_are_kept_for_the_same_classes_and_redone_for_others(tmp_path):
    """Building again with the same token classes (or none) keeps the stored labels; other
    classes label every feature again."""
    lens, clt, tokens = setup(n_seq=8)
    path = tmp_path / "f.db"
    classes = {"low": [lens.to_str_tokens(torch.tensor([3]))[0]]}
    index = build_feature_index(ReplacementModel(lens, clt), tokens, path, CFG, token_classes=classes,
                                progress=False)  # fmt: skip
    marker = "set by hand"
    with index.conn:
        index.conn.execute("UPDATE labels SET label=?", (marker,))

    def texts(ix):
        return {lab.text for lab in ix.labels()}

    assert texts(build_feature_index(ReplacementModel(lens, clt), tokens, path, CFG, token_classes=dict(classes),
                                     progress=False)) == {marker}  # fmt: skip
    assert texts(
        build_feature_index(ReplacementModel(lens, clt), tokens, path, CFG, progress=False)
    ) == {marker}
    with index.conn:  # labelled by an older summariser: labelled again
        index.conn.execute("UPDATE meta SET value='1' WHERE key='summariser_version'")
    assert marker not in texts(
        build_feature_index(ReplacementModel(lens, clt), tokens, path, CFG, progress=False)
    )
    with index.conn:
        index.conn.execute("UPDATE labels SET label=?", (marker,))
    other = {"low": classes["low"] + [lens.to_str_tokens(torch.tensor([4]))[0]]}
    relabelled = build_feature_index(ReplacementModel(lens, clt), tokens, path, CFG, token_classes=other,
                                     progress=False)  # fmt: skip
    assert marker not in texts(relabelled) and len(texts(relabelled)) > 1


def test_other_settings_are_refused_and_overwrite_replaces(tmp_path):
    lens, clt, tokens = setup(n_seq=8)
    path = tmp_path / "f.db"
    build_feature_index(ReplacementModel(lens, clt), tokens, path, CFG, label=False, progress=False)
    with pytest.raises(IndexMismatchError, match="other settings.*config"):
        build_feature_index(
            ReplacementModel(lens, clt), tokens, path, IndexConfig(k=3), label=False, progress=False
        )
    index = build_feature_index(
        ReplacementModel(lens, clt),
        tokens,
        path,
        IndexConfig(k=3),
        overwrite=True,
        label=False,
        progress=False,
    )
    assert index.config.k == 3
    plan = " ".join(str(r) for r in index.conn.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM examples WHERE layer=1 AND feature=2"))  # fmt: skip
    assert "PRIMARY KEY (layer=? AND feature=?)" in plan  # looked up by the (layer, feature) index


def test_text_source_leaves_padding_and_bos_out(tmp_path):
    lens, clt, _ = setup()
    texts = ["w1 w2 w3 w4 w5 w6 w7", "w8 w9", "w10 w11 w12 w13", "w3 w3"]
    index = build_feature_index(
        ReplacementModel(lens, clt),
        texts,
        tmp_path / "t.db",
        CFG,
        batch_size=3,
        label=False,
        progress=False,
    )
    assert index.n_tokens == sum(len(t.split()) for t in texts)  # BOS and padding not counted
    pad = lens.tokenizer.pad_token_id
    for layer, feat in index.live_features():
        for e in index.examples(layer, feat, "top"):
            assert pad not in e.token_ids and e.pos >= 1
            assert e.tokens[e.peak] in texts[e.seq].split()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_logit_effects_match_the_weights(family):
    lens = get_model(family, **SHAPE)
    clt = random_clt(2, 32, n_features=8, model=lens.identity(), scales=True)
    hf = tiny_hf_model(family, **SHAPE)  # the same weights as the Lens
    norm, head = (
        (hf.transformer.ln_f, hf.lm_head) if family == "gpt2" else (hf.model.norm, hf.lm_head)
    )
    with torch.no_grad():
        for layer in range(2):
            v = sum(clt.W_dec_at(layer, t) for t in clt.writes_to(layer))
            if family == "gpt2":
                v = v - v.mean(-1, keepdim=True)  # LayerNorm centres; RMSNorm does not
            eff = (v * norm.weight) @ head.weight.T
            eff = eff - eff.mean(-1, keepdim=True)
            up, down = top_logit_effects(lens, clt, layer, n=4)
            exp_up = eff.topk(4, dim=-1)
            torch.testing.assert_close(up.values, exp_up.values, atol=1e-4, rtol=1e-4)
            assert torch.equal(up.indices, exp_up.indices)
            assert torch.equal(down.indices, (-eff).topk(4, dim=-1).indices)
            torch.testing.assert_close(
                up.z, exp_up.values / eff.std(-1, keepdim=True), atol=1e-3, rtol=1e-3
            )


def test_feature_index_rejects_bad_input(tmp_path):
    with pytest.raises(InputError, match="no feature index"):
        FeatureIndex(tmp_path / "missing.db")
    with pytest.raises(InputError, match="2-d tensor"):
        TensorSource(torch.zeros(5, dtype=torch.long))


def test_build_feature_index_needs_its_replacement_model_and_source(tmp_path):
    """No default model or corpus: the transcoder-first order and a missing source are refused
    with a message that names what to pass."""
    lens, clt, tokens = setup(n_seq=4)
    with pytest.raises(InputError, match=r"ReplacementModel first, got a CrossLayerTranscoder"):
        build_feature_index(clt, lens, tmp_path / "f.db")
    with pytest.raises(InputError, match="needs a token source"):
        build_feature_index(ReplacementModel(lens, clt), None, tmp_path / "f.db")
    assert not (tmp_path / "f.db").exists()


def test_an_index_of_another_transcoder_is_refused_where_it_labels_a_graph(tmp_path, capsys):
    from tl_clt import attribute, group_supernodes, render_graph
    from tl_clt.cli import main

    lens, clt, tokens = setup()
    path = tmp_path / "f.db"
    index = build_feature_index(ReplacementModel(lens, clt), TensorSource(tokens, batch_size=10),
                                path, CFG, label=False, progress=False)  # fmt: skip
    other = random_clt(2, 32, n_features=16, seed=1, model=lens.identity())
    index.check_transcoder(clt)  # its own transcoder: accepted
    graph = attribute(ReplacementModel(lens, other), "w3 w1 w4 w1")
    pruned = graph.prune()
    for call in (
        lambda: index.check_transcoder(other),
        lambda: render_graph(pruned, index, None, other),
        lambda: group_supernodes(pruned, ReplacementModel(lens, other), index),
    ):
        with pytest.raises(IndexMismatchError, match="built for another transcoder"):
            call()
    render_graph(pruned, index, None, clt)  # the right pair renders
    # the command line: one line, exit 2
    model_dir, clt_dir = tmp_path / "model", tmp_path / "clt"
    hf = tiny_hf_model("gpt2", **SHAPE)  # the same tiny model, saved with its tokenizer
    hf.save_pretrained(model_dir)
    lens.tokenizer.save_pretrained(str(model_dir))
    other.save_pretrained(clt_dir)
    code = main(["trace", "w3 w1 w4", "--model", str(model_dir), "--clt", str(clt_dir),
                 "--index", str(path), "--out", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "built for another transcoder" in err and "Traceback" not in err


def test_the_transcoder_fingerprint_follows_in_place_edits():
    """Remembered between checks, recomputed once a weight is written to or replaced."""
    from tl_clt.labels.reader import clt_fingerprint

    clt = random_clt(2, 8, n_features=4)
    first = clt_fingerprint(clt)
    assert clt_fingerprint(clt) == first
    with torch.no_grad():
        clt.W_enc[0, 0, 0] += 1.0
    edited = clt_fingerprint(clt)
    assert edited != first
    clt.load_state_dict(random_clt(2, 8, n_features=4).state_dict())  # back to the same values
    assert clt_fingerprint(clt) == first
