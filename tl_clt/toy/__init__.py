"""The shipped toy "biology" model: a 4-layer GPT-2-style transformer trained by
`python -m tl_clt.toy.train` on a synthetic corpus of five task families (two-hop facts,
addition, multilingual antonyms, known/unknown entities, rhyming couplets), with the corpus and
its held-out evaluation items. `tl_clt.toy.load_lens()` loads it offline (a `Lens`),
`load_replacement()` with its transcoder; `corpus_texts()` and `token_classes()` are the text
source and the token classes its feature index is built over and labelled with. The library
never imports this package: the toy is an example built on tl_clt, not a default of it."""

from tl_clt.toy.corpus import Corpus, CorpusConfig, build_corpus
from tl_clt.toy.lexicon import token_classes
from tl_clt.toy.load import (
    corpus_texts,
    load_clt,
    load_corpus,
    load_hf,
    load_items,
    load_lens,
    load_record,
    load_replacement,
    model_dir,
)
from tl_clt.toy.tasks import (
    FAMILIES,
    Accuracy,
    AdditionItem,
    AntonymItem,
    EntityItem,
    Family,
    Item,
    RhymeItem,
    TwoHopItem,
    evaluate,
    predict,
    select,
)

__all__ = [
    "FAMILIES",
    "Accuracy",
    "AdditionItem",
    "AntonymItem",
    "Corpus",
    "CorpusConfig",
    "EntityItem",
    "Family",
    "Item",
    "RhymeItem",
    "TwoHopItem",
    "build_corpus",
    "corpus_texts",
    "evaluate",
    "load_clt",
    "load_corpus",
    "load_hf",
    "load_items",
    "load_lens",
    "load_record",
    "load_replacement",
    "model_dir",
    "predict",
    "select",
    "token_classes",
]
