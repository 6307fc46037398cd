"""Loading the shipped toy model offline: wrapped in a `Lens` (`load_lens`), as plain
Hugging Face objects (`load_hf`), its transcoder (`load_clt`), both spliced together
(`load_replacement`), the corpus it was trained on (`load_corpus`) and its evaluation items
(`load_items`). The weights live in the package (`weights/model/`, Hugging Face
`save_pretrained` format; `weights/clt/`, tl_clt's transcoder format), so nothing touches a
hub."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from tl_clt.clt import CrossLayerTranscoder
from tl_clt.errors import CheckpointError
from tl_clt.lens import Lens, from_hf
from tl_clt.lens.build import Backend
from tl_clt.replacement import ReplacementModel
from tl_clt.toy.corpus import Corpus, CorpusConfig, build_corpus
from tl_clt.toy.tasks import Family, Item, select

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MODEL_DIR = WEIGHTS_DIR / "model"
CLT_DIR = WEIGHTS_DIR / "clt"
MODEL_NAME = "tl-clt-toy"
RECORD_FILE = "toy.json"


def model_dir() -> Path:
    """The directory of the shipped model (loadable with AutoModelForCausalLM/AutoTokenizer)."""
    if not (MODEL_DIR / "config.json").is_file():
        raise CheckpointError(
            f"the shipped toy model is missing from {MODEL_DIR}; reinstall tl_clt or retrain it "
            f"with `python -m tl_clt.toy.train --stage model --out {WEIGHTS_DIR}`"
        )
    return MODEL_DIR


def load_hf(device: str | None = None, directory: str | Path | None = None) -> tuple[Any, Any]:
    """The shipped model (or the toy model saved in `directory`) as a `transformers`
    GPT2LMHeadModel (eval mode) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = model_dir() if directory is None else Path(directory)
    if not (directory / "config.json").is_file():
        raise CheckpointError(
            f"no toy model in {directory} (no config.json); train one there with "
            f"`python -m tl_clt.toy.train --stage model --out {directory.parent}`"
        )
    model = AutoModelForCausalLM.from_pretrained(str(directory)).eval()
    if device is not None:
        model = model.to(device)
    return model, AutoTokenizer.from_pretrained(str(directory))


def load_lens(
    backend: Backend = "auto", device: str | None = None, directory: str | Path | None = None
) -> Lens:
    """The shipped toy model (or one saved by `python -m tl_clt.toy.train` in `directory`, named
    as the shipped one) as a TransformerLens model (`TransformerBridge` under transformer-lens
    4.x, `HookedTransformer` under 3.x with backend "auto"), wrapped in a `Lens` (its `.model`).
    (`tl_clt.lens.load_model(path_or_name)` loads any other model the same way.)"""
    model, tokenizer = load_hf(device, directory)
    return from_hf(model, tokenizer, name=MODEL_NAME, backend=backend)


def load_clt(device: str | None = None) -> CrossLayerTranscoder:
    """The shipped cross-layer transcoder of the toy model (eval mode)."""
    if not (CLT_DIR / "config.json").is_file():
        raise CheckpointError(
            f"the shipped transcoder is missing from {CLT_DIR}; reinstall tl_clt or retrain it "
            f"with `python -m tl_clt.toy.train --stage clt --out {WEIGHTS_DIR}`"
        )
    return CrossLayerTranscoder.from_pretrained(CLT_DIR, device=device)


def load_replacement(backend: Backend = "auto", device: str | None = None) -> ReplacementModel:
    """The shipped model with its transcoder: a `ReplacementModel`."""
    return ReplacementModel(load_lens(backend, device), load_clt(device))


@lru_cache(maxsize=1)
def load_record() -> dict[str, Any]:
    """What the training script recorded: corpus and training configs, accuracies, wall time."""
    path = model_dir() / RECORD_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read the toy model's record {path}: {exc}") from exc


@lru_cache(maxsize=1)
def load_corpus() -> Corpus:
    """The corpus the shipped model was trained on (regenerated from its recorded config)."""
    return build_corpus(CorpusConfig(**load_record()["corpus"]))


def load_items(
    family: Family | None = None, held_out: bool | None = True, group: str | None = None
) -> list[Item]:
    """Evaluation items of the shipped model's corpus (default: the held-out ones)."""
    return select(load_corpus().items, family=family, held_out=held_out, group=group)


def corpus_texts() -> list[str]:
    """The training texts of the shipped corpus: the text source the shipped transcoder's
    feature index is built over (`tl-clt label`, the demos)."""
    return list(load_corpus().train_texts())
