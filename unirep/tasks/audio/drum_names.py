"""The rule that names a Hydrogen instrument's drum class from its name (drumkit.xml `<instrument><name>`).

The name is lower-cased and every run of characters other than letters, digits and '#' becomes one space (so
"PowR_SN_1.flac" reads "powr sn 1 flac"); the first of these patterns that matches gives the class:

    cymbal  a word starting with crash, ride, splash, china or cymbal
    hi-hat  hi-hat / hi hat / hihat, a word starting with "hat" or ending in "hat" (openhat2), hh / chh / ohh
    kick    a word starting with kick, "bass drum" / bassdrum, or bd (bd, bd1)
    snare   a word starting with snare, or sn
    tom     a word starting with tom (tom, tomhi2, tom2; not "custom")

Anything else (claps, sticks, cowbells, hand percussion, effects, unnamed slots) is left out. Cymbals are tried
first because some cymbal names hold another class's word ("Crash/Ride Bell"); "Ride (Custom, Zagrebin 22")" is a
cymbal, not a tom, because a word must *start* with "tom".
"""

from __future__ import annotations

import re

DRUM_CLASSES = ("cymbal", "hi-hat", "kick", "snare", "tom")
_RULES = (
    ("cymbal", re.compile(r"\b(crash|ride|splash|china|cymbal)")),
    ("hi-hat", re.compile(r"hi hat|hihat|\bhat|[a-z]hat(\b|\d)|\b[co]?hh\b")),
    ("kick", re.compile(r"\bkick|\bbass ?drum|\bbd\d*\b")),
    ("snare", re.compile(r"\bsnare|\bsn\b")),
    ("tom", re.compile(r"\btom")),
)


def drum_class(instrument_name: str) -> str | None:
    """The drum class of a Hydrogen instrument name, or None when the rule leaves it out."""
    name = re.sub(r"[^a-z0-9#]+", " ", instrument_name.lower())
    for label, pattern in _RULES:
        if pattern.search(name):
            return label
    return None
