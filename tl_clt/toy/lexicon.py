"""The word lists of the toy corpus: states, capitals and cities; antonym pairs in three
languages; rhyme classes with a lead word per rhyme; attributes of people. Data only; every
word is one token of the word-level tokenizer, and `corpus.vocabulary` checks that no word
serves two roles."""

from __future__ import annotations

# state -> (capital, cities). Real names, squeezed into one word each.
STATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "texas": ("austin", ("dallas", "houston", "waco", "plano", "laredo", "lubbock")),
    "california": ("sacramento", ("fresno", "oakland", "berkeley", "pasadena", "anaheim", "modesto")),
    "florida": ("tallahassee", ("miami", "tampa", "orlando", "jacksonville", "pensacola", "gainesville")),
    "ohio": ("columbus", ("cleveland", "cincinnati", "dayton", "toledo", "akron", "youngstown")),
    "georgia": ("atlanta", ("savannah", "augusta", "macon", "athens", "valdosta", "marietta")),
    "illinois": ("springfield", ("chicago", "peoria", "rockford", "naperville", "joliet", "evanston")),
    "michigan": ("lansing", ("detroit", "flint", "kalamazoo", "saginaw", "dearborn", "muskegon")),
    "washington": ("olympia", ("seattle", "spokane", "tacoma", "bellevue", "everett", "yakima")),
    "oregon": ("salem", ("portland", "eugene", "bend", "medford", "corvallis", "beaverton")),
    "arizona": ("phoenix", ("tucson", "mesa", "tempe", "flagstaff", "yuma", "chandler")),
    "colorado": ("denver", ("boulder", "aurora", "pueblo", "greeley", "lakewood", "durango")),
    "nevada": ("carson", ("reno", "henderson", "elko", "sparks", "mesquite", "fernley")),
    "massachusetts": ("boston", ("worcester", "cambridge", "lowell", "quincy", "brockton", "plymouth")),
    "tennessee": ("nashville", ("memphis", "knoxville", "chattanooga", "clarksville", "murfreesboro", "franklin")),
    "pennsylvania": ("harrisburg", ("philadelphia", "pittsburgh", "allentown", "erie", "scranton", "lancaster")),
    "wisconsin": ("madison", ("milwaukee", "kenosha", "racine", "appleton", "oshkosh", "waukesha")),
    "virginia": ("richmond", ("norfolk", "roanoke", "arlington", "alexandria", "chesapeake", "lynchburg")),
    "kentucky": ("frankfort", ("louisville", "lexington", "owensboro", "paducah", "covington", "hopkinsville")),
    "idaho": ("boise", ("pocatello", "nampa", "meridian", "lewiston", "caldwell", "rexburg")),
    "alabama": ("montgomery", ("birmingham", "huntsville", "mobile", "tuscaloosa", "dothan", "auburn")),
}  # fmt: skip

LANGUAGES: tuple[str, ...] = ("english", "french", "german")

# "the opposite of X is" in each language: one fixed frame per language, its words used by
# that language only.
ANTONYM_FRAMES: dict[str, str] = {
    "english": "the opposite of {word} is",
    "french": "le contraire de {word} est",
    "german": "das gegenteil von {word} ist",
}
# Parallel text that ties the languages' words together, in the frame of the language it
# translates into (as the antonym frames, the frame's language is the answer's language):
# "small en francais est petit".
TRANSLATION_FRAMES: dict[str, str] = {
    "english": "{word} in english is",
    "french": "{word} en francais est",
    "german": "{word} auf deutsch ist",
}

# concept -> one (word, antonym) pair per language, in LANGUAGES order. The concept name is
# the English pair.
ANTONYMS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("big", "small"), ("grand", "petit"), ("gross", "klein")),
    (("hot", "cold"), ("chaud", "froid"), ("heiss", "kalt")),
    (("fast", "slow"), ("rapide", "lent"), ("schnell", "langsam")),
    (("good", "bad"), ("bon", "mauvais"), ("gut", "schlecht")),
    (("new", "old"), ("neuf", "vieux"), ("neu", "alt")),
    (("happy", "sad"), ("heureux", "triste"), ("froh", "traurig")),
    (("strong", "weak"), ("fort", "faible"), ("stark", "schwach")),
    (("bright", "dark"), ("clair", "sombre"), ("hell", "dunkel")),
    (("rich", "poor"), ("riche", "pauvre"), ("reich", "arm")),
    (("open", "closed"), ("ouvert", "ferme"), ("offen", "geschlossen")),
    (("full", "empty"), ("plein", "vide"), ("voll", "leer")),
    (("early", "late"), ("tot", "tard"), ("frueh", "spaet")),
    (("high", "low"), ("haut", "bas"), ("hoch", "niedrig")),
    (("hard", "soft"), ("dur", "mou"), ("hart", "weich")),
    (("wet", "dry"), ("mouille", "sec"), ("nass", "trocken")),
    (("thick", "thin"), ("epais", "mince"), ("dick", "duenn")),
    (("clean", "dirty"), ("propre", "sale"), ("sauber", "schmutzig")),
    (("heavy", "light"), ("lourd", "leger"), ("schwer", "leicht")),
    (("near", "far"), ("proche", "loin"), ("nah", "fern")),
    (("loud", "quiet"), ("bruyant", "calme"), ("laut", "leise")),
    (("sweet", "sour"), ("doux", "aigre"), ("suess", "sauer")),
    (("wide", "narrow"), ("large", "etroit"), ("breit", "eng")),
    (("true", "false"), ("vrai", "faux"), ("wahr", "falsch")),
    (("first", "last"), ("premier", "dernier"), ("erst", "letzt")),
    (("win", "lose"), ("gagner", "perdre"), ("gewinnen", "verlieren")),
    (("love", "hate"), ("aimer", "detester"), ("lieben", "hassen")),
    (("day", "night"), ("jour", "nuit"), ("tag", "nacht")),
    (("black", "white"), ("noir", "blanc"), ("schwarz", "weiss")),
    (("inside", "outside"), ("dedans", "dehors"), ("innen", "aussen")),
    (("begin", "finish"), ("commencer", "finir"), ("beginnen", "enden")),
    (("buy", "sell"), ("acheter", "vendre"), ("kaufen", "verkaufen")),
    (("give", "take"), ("donner", "prendre"), ("geben", "nehmen")),
    (("push", "pull"), ("pousser", "tirer"), ("druecken", "ziehen")),
    (("friend", "enemy"), ("ami", "ennemi"), ("freund", "feind")),
    (("always", "never"), ("toujours", "jamais"), ("immer", "nie")),
    (("before", "after"), ("avant", "apres"), ("vorher", "nachher")),
    (("left", "right"), ("gauche", "droite"), ("links", "rechts")),
    (("easy", "difficult"), ("facile", "difficile"), ("einfach", "schwierig")),
    (("war", "peace"), ("guerre", "paix"), ("krieg", "frieden")),
    (("laugh", "cry"), ("rire", "pleurer"), ("lachen", "weinen")),
    (("arrive", "depart"), ("arriver", "partir"), ("ankommen", "abfahren")),
    (("smooth", "rough"), ("lisse", "rugueux"), ("glatt", "rau")),
    (("wise", "foolish"), ("sage", "sot"), ("weise", "dumm")),
    (("awake", "asleep"), ("eveille", "endormi"), ("wach", "schlafend")),
    (("brave", "cowardly"), ("courageux", "lache"), ("mutig", "feige")),
)

# rhyme class -> (rhyme word, its lead word) pairs. The second line of a couplet is
# "<lead> as a <rhyme word>", so the lead, the first word written after the line break,
# already commits to the rhyme word: the rhyme has to be planned at the break.
RHYMES: dict[str, tuple[tuple[str, str], ...]] = {
    "at": (("cat", "furry"), ("hat", "tall"), ("bat", "blind"), ("rat", "sneaky")),
    "og": (("dog", "loyal"), ("frog", "green"), ("log", "wooden"), ("fog", "grey")),
    "ake": (("cake", "tasty"), ("lake", "deep"), ("snake", "sly"), ("rake", "rusty")),
    "ee": (("bee", "busy"), ("tree", "leafy"), ("sea", "vast"), ("key", "tiny")),
    "ing": (("king", "proud"), ("ring", "golden"), ("wing", "feathered"), ("string", "tangled")),
    "ox": (("fox", "clever"), ("box", "square"), ("ox", "patient"), ("rocks", "solid")),
    "air": (("bear", "fierce"), ("pear", "ripe"), ("chair", "sturdy"), ("hair", "curly")),
    "oon": (("moon", "pale"), ("spoon", "shiny"), ("balloon", "floating"), ("raccoon", "masked")),
    "ail": (("snail", "slimy"), ("whale", "huge"), ("pail", "dented"), ("nail", "sharp")),
    "ug": (("bug", "crawling"), ("mug", "chipped"), ("rug", "woven"), ("jug", "clay")),
    "ock": (("clock", "ticking"), ("lock", "iron"), ("sock", "woolly"), ("block", "cubic")),
    "ouse": (("mouse", "timid"), ("house", "cosy"), ("blouse", "silky"), ("grouse", "plump")),
    "ain": (("train", "noisy"), ("rain", "cool"), ("chain", "heavyset"), ("plane", "silver")),
    "ell": (("bell", "ringing"), ("shell", "pink"), ("well", "stony"), ("smell", "foul")),
    "oat": (("goat", "hairy"), ("boat", "leaky"), ("coat", "warm"), ("moat", "murky")),
    "ig": (("pig", "muddy"), ("wig", "fake"), ("fig", "purple"), ("twig", "brittle")),
}

# Words of the couplets' first line: "<subject> <verb> <det> <rhyme word> /".
LINE_SUBJECTS: tuple[str, ...] = ("i", "we", "they", "he", "she")
LINE_VERBS: tuple[str, ...] = ("saw", "found", "liked", "drew", "wanted", "met")
LINE_DETS: tuple[str, ...] = ("a", "the")
LINE_BREAK = "/"

# Attributes of people: relation -> (question words, fact words, values).
# question: "what sport does <name> play ?" fact: "<name> plays <value>".
RELATIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "sport": (
        "what sport does {name} play ?",
        "{name} plays {value}",
        ("tennis", "golf", "soccer", "hockey", "rugby", "cricket", "baseball", "chess"),
    ),
    "job": (
        "what job does {name} have ?",
        "{name} works as a {value}",
        ("doctor", "teacher", "farmer", "pilot", "baker", "lawyer", "nurse", "painter"),
    ),
    "instrument": (
        "what instrument does {name} own ?",
        "{name} owns a {value}",
        ("piano", "violin", "flute", "drum", "harp", "cello", "trumpet", "banjo"),
    ),
}
UNKNOWN = "unknown"

# People are "<first name> <surname>". First names are shared by everyone; a known person's
# surname is theirs alone (as "jordan" marks michael jordan), while people without facts take
# surnames from a separate, unfamiliar pool, so a never-seen person ("michael batkin") is a new
# combination of a familiar first name and an unfamiliar surname.
FIRST_NAMES: tuple[str, ...] = (
    "anna", "ben", "clara", "david", "emma", "felix", "grace", "henry", "iris", "jack", "kate",
    "leo", "maria", "nina", "oscar", "paul", "rosa", "sam", "tina", "victor", "wendy", "yusuf",
    "zoe", "hugo",
)  # fmt: skip
# Syllables that make surnames ("bar" + "kin" -> "barkin").
NAME_ONSETS: tuple[str, ...] = (
    "bar", "dor", "fen", "gal", "hol", "jas", "kel", "lom", "mar", "nor", "pel", "quin",
    "ras", "sol", "tam", "vel", "wil", "zan", "bri", "cor",
)  # fmt: skip
NAME_CODAS: tuple[str, ...] = ("kin", "dra", "ton", "mek")


def token_classes() -> dict[str, list[str]]:
    """Token classes of the corpus, for feature labels (`build_feature_index(...,
    token_classes=...)`): each state with its capital and cities, each language with its
    antonym words, each rhyme with its rhyming words."""
    classes = {state: [state, capital, *cities] for state, (capital, cities) in STATES.items()}
    for i, language in enumerate(LANGUAGES):
        classes[language] = [w for pairs in ANTONYMS for w in pairs[i]]
    for sound, pairs in RHYMES.items():
        classes[f"-{sound} rhymes"] = [word for word, _ in pairs]
    return classes
