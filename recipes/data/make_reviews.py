"""Writes recipes/data/reviews.csv: 3,000 short synthetic reviews with two labels, a topic (sports,
tech, food, travel) and a sentiment (pos, neg), for the bundled text recipe (``python
recipes/data/make_reviews.py``; written by this project, no third-party text: CC0, see README.md).

Each review is drawn from templates: an opener, one or two nouns of its topic (a fifth of the reviews
also name a noun of another topic), an opinion -- an adjective of the topic's own (``delicious``,
``laggy``) or a generic one (``great``, ``awful``), negated by ``not`` / ``never`` a quarter of the time,
which flips the sentiment -- and a closing. 5% of each label is then replaced by a random one, so no
model reaches 100%. The sentiment needs word order (negation) and the topic-specific opinions tie the
two tasks together.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

TOPICS = {
    "sports": ["match", "goal", "team", "coach", "season", "player", "stadium", "referee", "league", "race"],
    "tech": [
        "phone",
        "laptop",
        "software",
        "chip",
        "battery",
        "app",
        "screen",
        "update",
        "keyboard",
        "camera",
    ],
    "food": ["pizza", "soup", "chef", "recipe", "dinner", "bread", "dessert", "menu", "sauce", "salad"],
    "travel": ["hotel", "flight", "beach", "trip", "airport", "guide", "tour", "island", "train", "room"],
}
OWN = {  # topic-specific opinions: (positive, negative)
    "sports": (["thrilling", "fair", "energetic"], ["sloppy", "dirty", "lifeless"]),
    "tech": (["fast", "reliable", "sleek"], ["laggy", "buggy", "flimsy"]),
    "food": (["delicious", "fresh", "tasty"], ["bland", "greasy", "stale"]),
    "travel": (["relaxing", "scenic", "comfortable"], ["crowded", "delayed", "noisy"]),
}
GENERIC = (
    ["great", "excellent", "wonderful", "lovely", "superb"],
    ["awful", "terrible", "boring", "poor", "bad"],
)
OPENERS = ["", "honestly", "well", "so", "i think", "to be fair", "overall", "in short", "my verdict"]
FILLER = ["the", "this", "our", "that", "a", "my"]
CLOSINGS = ["", "!", ".", "would say so again.", "that is all.", "five words: make up your mind.", "ok?"]
NOISE = 0.05


def review(rng: np.random.Generator, topic: str, positive: bool) -> str:
    nouns = list(rng.choice(TOPICS[topic], size=rng.integers(1, 3), replace=False))
    negated = rng.random() < 0.25
    says_positive = positive != negated
    pool = OWN[topic] if rng.random() < 0.6 else GENERIC
    adjective = rng.choice(pool[0] if says_positive else pool[1])
    opinion = f"{rng.choice(['not', 'never'])} {adjective}" if negated else adjective
    subject = " and ".join(f"{rng.choice(FILLER)} {n}" for n in nouns)
    if rng.random() < 0.2:
        other = rng.choice([t for t in TOPICS if t != topic])
        subject += f", unlike {rng.choice(FILLER)} {rng.choice(TOPICS[other])},"
    verb = rng.choice(["was", "is", "felt", "seemed"])
    words = [rng.choice(OPENERS), subject, verb, opinion, rng.choice(CLOSINGS)]
    text = " ".join(w for w in words if w)
    return text[0].upper() + text[1:]


def generate(n: int = 3000, seed: int = 0) -> list[dict[str, str]]:
    """``n`` rows of review, topic and sentiment."""
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    rows = []
    for _ in range(n):
        topic, positive = str(rng.choice(names)), bool(rng.random() < 0.5)
        text = review(rng, topic, positive)
        if rng.random() < NOISE:
            topic = str(rng.choice(names))
        if rng.random() < NOISE:
            positive = bool(rng.random() < 0.5)
        rows.append({"review": text, "topic": topic, "sentiment": "pos" if positive else "neg"})
    return rows


if __name__ == "__main__":
    out = Path(__file__).with_name("reviews.csv")
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["review", "topic", "sentiment"])
        writer.writeheader()
        writer.writerows(generate())
    print(f"wrote {out}")
