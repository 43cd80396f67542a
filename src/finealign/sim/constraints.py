"""The ``constraints`` task: a sentence on a topic with required words, without banned words or a letter.

Prompt: ``Write one sentence about the ocean. Use the words 'tide' and 'shell'. Do not use the
letter 'g' or the words very, really and just.`` (the letter and the word list are difficulty knobs).

Gold scorer, over the response's words (runs of letters/digits, an inner apostrophe kept):

* each required word (the word itself, or with ``s`` / ``es`` added, any case) is worth
  ``w = 1 / n_required`` at its first occurrence;
* each word containing the banned letter (any case) or equal to a banned word (any case) is a wrong
  span worth ``-penalty`` (default 0.25); the oracle deletes it (the word only, nothing around it);
* required words that never occur cost ``w`` each, judged at the stop token, and the oracle inserts
  them as a person would, before the sentence's final punctuation: ``... on the shore and tide and
  shell.`` (an empty response becomes ``Tide and shell.``).

Rewards are causal: a word's reward lands on it once the next character closes it (on the stop token
when it is the response's last, unfinished word), the missing words' cost on the stop token.

Score = sum of the rewards; 1.0 exactly when every required word is used and nothing banned is.
The generator never picks a required word that contains the banned letter or is a banned word, nor a
banned letter that occurs in the text the oracle appends.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import FinealignError
from .base import Instance, Judgement, Mention, NotGenerated, SimTask, TaskOptions, Template, distinct_sample, \
    land_word, make_judgement, words

TOPICS: dict[str, tuple[str, ...]] = {
    "the ocean": ("tide", "shell", "wave", "salt", "fish", "sand", "shore", "deep", "storm", "boat"),
    "dogs": ("loyal", "park", "tail", "bark", "bone", "walk", "puppy", "leash", "friend", "run"),
    "the city": ("street", "tower", "bus", "noise", "night", "market", "bridge", "crowd", "light", "train"),
    "winter": ("snow", "cold", "coat", "ice", "fire", "scarf", "frost", "dark", "warm", "sled"),
    "cooking": ("pan", "salt", "onion", "oven", "spoon", "recipe", "bread", "taste", "heat", "soup"),
    "music": ("song", "drum", "piano", "beat", "voice", "stage", "note", "guitar", "band", "quiet"),
    "the forest": ("tree", "moss", "owl", "path", "leaf", "root", "deer", "shade", "river", "pine"),
    "space": ("star", "moon", "orbit", "rocket", "planet", "dust", "comet", "silent", "light", "crew"),
    "school": ("desk", "teacher", "lesson", "pencil", "bell", "book", "class", "test", "chalk", "lunch"),
    "gardening": ("seed", "soil", "rose", "water", "spade", "weed", "sun", "bloom", "root", "fence"),
    "trains": ("track", "station", "ticket", "steam", "engine", "seat", "whistle", "tunnel", "late", "route"),
    "the desert": ("sand", "heat", "camel", "dune", "cactus", "dry", "oasis", "wind", "sun", "stone"),
}
FILLERS = ("very", "really", "just", "quite", "truly", "simply", "actually", "basically", "extremely",
           "incredibly", "totally", "literally")
LETTERS = "bcdfghkmpuvwy"
EXCLUDED_LETTERS = "words"  # never banned (kept from an older oracle template, so seeds give the same prompts)
PROMPT = Template("Write one sentence about {topic}. Use the words {required}.{banned}",
                  {"topic": r"[a-z ]+?", "required": r"'[a-z]+'(?:(?:, | and )'[a-z]+')*", "banned": r".*"})


@dataclass
class ConstraintsOptions(TaskOptions):
    """``required``: words to use; ``letter``: ban a letter; ``banned``: filler words to ban; ``penalty``."""

    required: int = 2
    letter: bool = True
    banned: int = 3
    penalty: float = 0.25


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def insertion(response: str, missing: list[str]) -> tuple[int, str]:
    """Where and what the oracle inserts for the ``missing`` required words: ``" and a and b"`` before the
    final ``.``/``!``/``?`` of the response (at its end when there is none); ``"A and b."`` for an
    empty response. The text uses no letter the task may ban (``EXCLUDED_LETTERS``)."""
    if not missing:
        return len(response), ""
    body = response.rstrip()
    if not body:
        words_ = " and ".join(missing)
        return len(response), words_[:1].upper() + words_[1:] + "."
    at = len(body) - 1 if body[-1] in ".!?" else len(body)
    while at > 0 and body[at - 1] in ".!?":
        at -= 1
    return at, "".join(f" and {m}" for m in missing)


def _split_and(text: str) -> list[str]:
    head, _, last = text.rpartition(" and ")
    return (head.split(", ") + [last]) if head else [text]


class ConstraintsTask(SimTask):
    name = "constraints"

    def __init__(self, options: ConstraintsOptions | None = None):
        self.options = o = options or ConstraintsOptions()
        if not 1 <= o.required <= 5:
            raise FinealignError(f"constraints task: required must be 1..5, got {o.required}")
        if not 0 <= o.banned <= len(FILLERS):
            raise FinealignError(f"constraints task: banned must be 0..{len(FILLERS)}, got {o.banned}")
        if not o.penalty > 0:
            raise FinealignError(f"constraints task: penalty must be positive, got {o.penalty}")

    # ------------------------------------------------------------------ prompts

    @staticmethod
    def render(topic: str, required: list[str], letter: str | None, banned: list[str]) -> str:
        req = _and([f"'{w}'" for w in required])
        parts = []
        if letter:
            parts.append(f"the letter '{letter}'")
        if banned:
            parts.append(("the words " if len(banned) > 1 else "the word ") + _and(banned))
        ban = f" Do not use {' or '.join(parts)}." if parts else ""
        return PROMPT.render(topic=topic, required=req, banned=ban)

    def _make(self, rng: random.Random) -> Instance:
        o = self.options
        topic = rng.choice(sorted(TOPICS))
        letter = None
        if o.letter:
            letter = rng.choice([c for c in LETTERS if c not in EXCLUDED_LETTERS])
        pool = [w for w in TOPICS[topic] if not (letter and letter in w)]
        if len(pool) < o.required:
            return self._make(rng)
        required = rng.sample(pool, o.required)
        banned = sorted(rng.sample(FILLERS, o.banned))
        f = {"topic": topic, "required": required, "letter": letter, "banned": banned}
        return Instance(self.name, f, self.render(topic, required, letter, banned))

    def sample(self, rng: random.Random, n: int) -> list[Instance]:
        return distinct_sample(self._make, rng, n, None, "constraints")

    def parse(self, prompt: str) -> Instance:
        got = PROMPT.match(prompt)
        if not got or got["topic"] not in TOPICS:
            raise NotGenerated("not a constraints prompt")
        required = [w.strip("'") for w in _split_and(got["required"])]
        letter, banned = None, []
        rest = got["banned"]
        if rest:
            if not (rest.startswith(" Do not use ") and rest.endswith(".")):
                raise NotGenerated("not a constraints prompt")
            for part in rest[len(" Do not use "):-1].split(" or "):
                if part.startswith("the letter '") and len(part) == len("the letter 'x'"):
                    letter = part[-2]
                elif part.startswith("the words ") or part.startswith("the word "):
                    banned = _split_and(part.split(" ", 2)[2])
                else:
                    raise NotGenerated("not a constraints prompt")
        f = {"topic": got["topic"], "required": required, "letter": letter, "banned": banned}
        if any(b not in FILLERS for b in banned) or (letter and letter not in LETTERS) \
                or self.render(got["topic"], required, letter, banned) != prompt:
            raise NotGenerated("not a constraints prompt")
        return Instance(self.name, f, prompt)

    # ------------------------------------------------------------------ gold

    def judge(self, instance: Instance, response: str) -> Judgement:
        f = instance.fields
        required = [w.lower() for w in f["required"]]
        letter = (f.get("letter") or "").lower()
        banned = {b.lower() for b in f.get("banned") or []}
        w = 1.0 / len(required)
        found: set[str] = set()
        mentions = []
        for s, e, word in words(response):
            low = word.lower()
            if (letter and letter in low) or low in banned:
                mentions.append(Mention(s, e, -self.options.penalty, "violation", fix="", land=land_word(response, s, e)))
                continue
            for r in required:
                if r not in found and low in (r, r + "s", r + "es"):
                    found.add(r)
                    mentions.append(Mention(s, e, w, "required", land=land_word(response, s, e)))
                    break
        missing = [r for r in f["required"] if r.lower() not in found]
        at, insert = insertion(response, missing)
        return make_judgement(mentions, response, insert, len(missing), -w * len(missing), insert_at=at)

    def neutral_words(self, instance: Instance) -> list[str]:
        letter = instance.fields.get("letter") or ""
        banned = set(instance.fields.get("banned") or [])
        return [x for x in ("also", "then", "now", "so", "thus", "still", "one", "a", "the", "at")
                if not (letter and letter in x) and x not in banned]
