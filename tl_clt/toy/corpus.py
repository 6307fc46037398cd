"""The toy "biology" corpus: five task families mirroring the case studies of "On the Biology of
a Large Language Model", generated deterministically from a seed, with held-out items that never
occur in the training texts.

- two_hop:  "dallas is in texas", "the state containing dallas is texas", "the capital of texas
            is austin"; the query "the capital of the state containing dallas is austin" is
            held out for some cities, so the model must compose city -> state -> capital.
- addition: "36 + 59 = 95", every number 0..198 one token; some operand pairs (both orders)
            held out.
- antonym:  one frame per language ("the opposite of small is big", "le contraire de petit est
            grand", "das gegenteil von klein ist gross") plus parallel text ("petit in english is
            small"); some (concept, language) pairs held out in both directions.
- entity:   facts and questions about known people ("what sport does barkin play ? tennis");
            questions about names without facts answer "unknown"; held out: one question per
            known person, and names never seen at all. A few people appear in fact form only.
- rhyme:    "she saw a cat / furry as a hat": the lead word opening the second line is tied to
            its rhyme word, so the rhyme is chosen at the line break; some first lines held out.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from itertools import product

from tl_clt.errors import ConfigError
from tl_clt.toy import lexicon as lx
from tl_clt.toy.tasks import (
    FAMILIES,
    AdditionItem,
    AntonymItem,
    EntityItem,
    Family,
    Item,
    RhymeItem,
    TwoHopItem,
)

MAX_OPERAND = 99
FORCED_HELD_OUT_CITIES = ("dallas",)  # the paper's example stays a held-out composition


@dataclass(frozen=True)
class CorpusConfig:
    """How the corpus is drawn; the same config always gives the same corpus."""

    seed: int = 0
    heldout_cities_per_state: int = 2  # of six; their two-hop queries are never trained
    heldout_addition: float = 0.05  # fraction of unordered operand pairs (both orders held out)
    heldout_antonym_concepts: int = 22  # concepts with one language held out (both directions)
    translations: bool = True  # parallel text "petit in english is small"
    crosslingual: bool = (
        True  # frames around other languages' words: "the opposite of petit is big"
    )
    decompositions: bool = True  # "36 = 30 + 6" for every number 10..198
    n_known: int = 40  # people with facts and question-form text
    n_fact_only: int = 4  # people with facts but no question-form text (a case to study)
    n_unknown_train: int = 400  # names asked about in training, answered "unknown"
    n_unknown_heldout: int = 60  # people never seen in training (new first name + surname pairs)
    heldout_rhyme: float = 0.1  # fraction of first lines held out

    def __post_init__(self) -> None:
        if not 0 <= self.heldout_cities_per_state < 6:
            raise ConfigError(
                "heldout_cities_per_state must be in 0..5 (each state has six cities)"
            )
        for name in ("heldout_addition", "heldout_rhyme"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be a fraction in [0, 1)")
        if not 0 <= self.heldout_antonym_concepts <= len(lx.ANTONYMS):
            raise ConfigError(f"heldout_antonym_concepts must be in 0..{len(lx.ANTONYMS)}")
        n_surnames = len(lx.NAME_ONSETS) * len(lx.NAME_CODAS)
        own = self.n_known + self.n_fact_only
        unfamiliar = (n_surnames - own) * len(lx.FIRST_NAMES)
        if own >= n_surnames or self.n_unknown_train + self.n_unknown_heldout > unfamiliar:
            raise ConfigError(
                f"{own} people with surnames of their own and "
                f"{self.n_unknown_train + self.n_unknown_heldout} without facts asked for; the "
                f"name syllables make {n_surnames} surnames ({unfamiliar} unfamiliar combinations)"
            )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Corpus:
    """Distinct training texts per pool, every evaluation item, and the vocabulary. The pools
    are the families, with the questions about names without facts in a pool of their own
    ("unknown"), so that training can weigh them apart."""

    config: CorpusConfig
    train: Mapping[str, tuple[str, ...]]
    items: tuple[Item, ...]
    vocabulary: tuple[str, ...] = field(repr=False)

    def held_out(self, family: Family | None = None) -> list[Item]:
        return [it for it in self.items if it.held_out and family in (None, it.family)]

    def train_texts(self) -> list[str]:
        return [t for texts in self.train.values() for t in texts]


def build_corpus(config: CorpusConfig | None = None) -> Corpus:
    """The corpus for `config` (default: CorpusConfig())."""
    config = config or CorpusConfig()
    builders = {
        "two_hop": _two_hop, "addition": _addition, "antonym": _antonym,
        "entity": _entity, "rhyme": _rhyme,
    }  # fmt: skip
    train: dict[str, tuple[str, ...]] = {}
    items: list[Item] = []
    for i, fam in enumerate(FAMILIES):
        texts, fam_items = builders[fam](config, random.Random(config.seed * 1000 + i))
        for pool, pool_texts in texts.items() if isinstance(texts, dict) else [(fam, texts)]:
            train[pool] = tuple(dict.fromkeys(pool_texts))
        items.extend(fam_items)
    return Corpus(config, train, tuple(items), vocabulary(config))


# ---------------------------------------------------------------- two-hop facts
def _two_hop(cfg: CorpusConfig, rng: random.Random) -> tuple[list[str], list[Item]]:
    texts, items = [], []
    for state, (capital, cities) in lx.STATES.items():
        texts.append(f"the capital of {state} is {capital}")
        forced = [c for c in cities if c in FORCED_HELD_OUT_CITIES]
        others = [c for c in cities if c not in forced]
        held = set(forced + rng.sample(others, cfg.heldout_cities_per_state - len(forced)))
        for city in cities:
            texts += [f"{city} is in {state}", f"the state containing {city} is {state}"]
            item = TwoHopItem(
                prompt=f"the capital of the state containing {city} is", answer=capital,
                family="two_hop", held_out=city in held, city=city, state=state, capital=capital,
            )  # fmt: skip
            items.append(item)
            if city not in held:
                texts.append(item.text)
    return texts, items


# ---------------------------------------------------------------- addition
def _addition(cfg: CorpusConfig, rng: random.Random) -> tuple[dict[str, list[str]], list[Item]]:
    pairs = [(a, b) for a in range(MAX_OPERAND + 1) for b in range(a, MAX_OPERAND + 1)]
    held = set(rng.sample(pairs, round(cfg.heldout_addition * len(pairs))))
    texts, items = [], []
    for a, b in product(range(MAX_OPERAND + 1), repeat=2):
        item = AdditionItem(prompt=f"{a} + {b} =", answer=str(a + b), family="addition",
                            held_out=(min(a, b), max(a, b)) in held, a=a, b=b)  # fmt: skip
        items.append(item)
        if not item.held_out:
            texts.append(item.text)
    pools = {"addition": texts}
    if cfg.decompositions:
        pools["digits"] = [f"{n} = {n - n % 10} + {n % 10}" for n in range(10, 2 * MAX_OPERAND + 1)]
    return pools, items


# ---------------------------------------------------------------- antonyms
def _antonym(cfg: CorpusConfig, rng: random.Random) -> tuple[list[str], list[Item]]:
    concepts = list(range(len(lx.ANTONYMS)))
    held = {
        c: rng.randrange(len(lx.LANGUAGES))
        for c in rng.sample(concepts, cfg.heldout_antonym_concepts)
    }
    texts, items = [], []
    for c, pairs in enumerate(lx.ANTONYMS):
        concept = "/".join(pairs[0])
        for li, lang in enumerate(lx.LANGUAGES):
            for side in (0, 1):
                word, other = pairs[li][side], pairs[li][1 - side]
                item = AntonymItem(
                    prompt=lx.ANTONYM_FRAMES[lang].format(word=word), answer=other,
                    family="antonym", held_out=held.get(c) == li, concept=concept,
                    language=lang, word=word, side=side,
                )  # fmt: skip
                items.append(item)
                if not item.held_out:
                    texts.append(item.text)
                for lk, frame_lang in enumerate(lx.LANGUAGES):
                    if cfg.crosslingual and lk != li and held.get(c) != lk:
                        frame = lx.ANTONYM_FRAMES[frame_lang].format(word=word)
                        texts.append(f"{frame} {pairs[lk][1 - side]}")
                if cfg.translations:
                    for lj, target in enumerate(lx.LANGUAGES):
                        if lj != li:
                            frame = lx.TRANSLATION_FRAMES[target].format(word=word)
                            texts.append(f"{frame} {pairs[lj][side]}")
    return texts, items


# ---------------------------------------------------------------- known and unknown entities
def surnames() -> list[str]:
    return [on + co for on in lx.NAME_ONSETS for co in lx.NAME_CODAS]


def person_names(cfg: CorpusConfig, rng: random.Random) -> tuple[list[str], ...]:
    """(known, fact-only, unknown in training, never seen) people. Known and fact-only people
    each have a surname of their own; the others combine a first name with a surname from the
    unfamiliar pool, the never-seen ones in combinations absent from training."""
    last = surnames()
    rng.shuffle(last)
    own, pool = last[: cfg.n_known + cfg.n_fact_only], last[cfg.n_known + cfg.n_fact_only :]
    people = [f"{rng.choice(lx.FIRST_NAMES)} {s}" for s in own]
    others = [f"{first} {s}" for first in lx.FIRST_NAMES for s in pool]
    rng.shuffle(others)
    n_train = cfg.n_unknown_train
    return (people[: cfg.n_known], people[cfg.n_known :], others[:n_train],
            others[n_train : n_train + cfg.n_unknown_heldout])  # fmt: skip


def _entity(cfg: CorpusConfig, rng: random.Random) -> tuple[dict[str, list[str]], list[Item]]:
    known, fact_only, unk_train, unk_held = person_names(cfg, rng)
    relations = list(lx.RELATIONS)
    texts: dict[str, list[str]] = {"entity": [], "unknown": []}
    items: list[Item] = []

    def add(name: str, rel: str, answer: str, status: str, held_out: bool) -> None:
        question = lx.RELATIONS[rel][0].format(name=name)
        item = EntityItem(prompt=question, answer=answer, family="entity", held_out=held_out,
                          group=status, name=name, relation=rel, status=status)  # fmt: skip
        items.append(item)
        if not held_out:
            texts["unknown" if status == "unknown" else "entity"].append(item.text)

    for name in known + fact_only:
        held_rel = rng.choice(relations)
        for rel in relations:
            value = rng.choice(lx.RELATIONS[rel][2])
            texts["entity"].append(lx.RELATIONS[rel][1].format(name=name, value=value))
            if name in known:
                add(name, rel, value, "known", held_out=rel == held_rel)
            else:
                add(name, rel, value, "fact_only", held_out=True)
    for name, rel in product(unk_train, relations):
        add(name, rel, lx.UNKNOWN, "unknown", held_out=False)
    for name, rel in product(unk_held, relations):
        add(name, rel, lx.UNKNOWN, "unknown", held_out=True)
    return texts, items


# ---------------------------------------------------------------- rhyming couplets
def _rhyme(cfg: CorpusConfig, rng: random.Random) -> tuple[list[str], list[Item]]:
    lines = list(product(lx.LINE_SUBJECTS, lx.LINE_VERBS, lx.LINE_DETS, [
        (cls, word) for cls, pairs in lx.RHYMES.items() for word, _ in pairs
    ]))  # fmt: skip
    held = set(rng.sample(range(len(lines)), round(cfg.heldout_rhyme * len(lines))))
    texts, items = [], []
    for i, (subj, verb, det, (cls, word)) in enumerate(lines):
        prompt = f"{subj} {verb} {det} {word} {lx.LINE_BREAK}"
        seconds = [(r, f"{lead} as a {r}") for r, lead in lx.RHYMES[cls] if r != word]
        answer, line2 = seconds[0]
        items.append(RhymeItem(
            prompt=prompt, answer=answer, accept=tuple(r for r, _ in seconds), family="rhyme",
            held_out=i in held, n_generate=3, word=word, rhyme_class=cls, line2=line2,
        ))  # fmt: skip
        if i not in held:
            texts += [f"{prompt} {second}" for _, second in seconds]
    return texts, items


# ---------------------------------------------------------------- vocabulary
def vocabulary(cfg: CorpusConfig | None = None) -> tuple[str, ...]:
    """Every word of the corpus, each once, in a fixed order (numbers first). Raises if a
    word would serve two roles (a city that is also a name, a word in two languages)."""
    roles: dict[str, str] = {}

    def put(words, role: str) -> None:
        for w in words:
            if roles.setdefault(w, role) != role:
                raise ConfigError(f"word {w!r} is both {roles[w]} and {role}")

    put([str(n) for n in range(2 * MAX_OPERAND + 1)], "number")
    put(["+", "=", lx.LINE_BREAK, lx.UNKNOWN], "symbol")
    english_frame = [
        "the",
        "capital",
        "of",
        "state",
        "containing",
        "is",
        "in",
        "opposite",
        "what",
        "does",
        "as",
        "a",
    ]
    put(english_frame, "english")
    for state, (capital, cities) in lx.STATES.items():
        put([state, capital, *cities], "place")
    for li, lang in enumerate(lx.LANGUAGES):
        put(lx.ANTONYM_FRAMES[lang].format(word="").split(), lang)
        put(lx.TRANSLATION_FRAMES[lang].format(word="").split(), lang)
        put([w for pairs in lx.ANTONYMS for w in pairs[li]], lang)
    for frames in lx.RELATIONS.values():
        put([w for f in frames[:2] for w in f.format(name="", value="").split()], "english")
    put([v for rel in lx.RELATIONS.values() for v in rel[2]], "attribute")
    put([*lx.LINE_SUBJECTS, *lx.LINE_VERBS, *lx.LINE_DETS], "english")
    put([w for pairs in lx.RHYMES.values() for pair in pairs for w in pair], "rhyme")
    put([*lx.FIRST_NAMES, *surnames()], "name")
    return tuple(roles)
