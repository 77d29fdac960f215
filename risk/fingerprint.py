"""Recognising a returning device by its stable attributes when its cookie is gone.

One hash of all attributes breaks as soon as any attribute changes (a browser update) and
collides for identical phones, so devices are compared attribute by attribute instead: the
browser and operating system families must agree, and enough of the rest must match.
"""

import hashlib
from functools import lru_cache

import ua_parser

from .facts import ClientFacts

# How much each attribute counts towards a match; versions change with updates, so they count
# little, and the screen, time zone and touch support (from the script) count most.
WEIGHTS = {
    "browser": 0,  # must match; not scored
    "os": 0,  # must match; not scored
    "browser_major": 1,
    "os_major": 1,
    "device": 2,
    "language": 2,
    "platform": 1,
    "mobile": 1,
    "model": 2,
    "screen": 3,
    "dpr": 1,
    "tz": 3,
    "touch": 1,
}
REQUIRED = ("browser", "os")
# Headers alone (the user agent, the languages, client hints that repeat the user agent) are the
# same on every phone of one model: a device is recognised without its cookie only when both
# sides also have the script's own facts.
FROM_THE_DEVICE = ("screen", "tz")


@lru_cache(maxsize=1024)
def _parse_user_agent(user_agent: str) -> tuple[str, str, str, str, str]:
    parsed = ua_parser.parse(user_agent)
    browser = parsed.user_agent
    system = parsed.os
    device = parsed.device
    return (
        browser.family if browser else "",
        (browser.major or "") if browser else "",
        system.family if system else "",
        (system.major or "") if system else "",
        device.family if device else "",
    )


def attributes(facts: ClientFacts) -> dict[str, str]:
    """The comparable attributes of a client; missing ones are left out, not guessed."""
    browser, browser_major, system, system_major, device = _parse_user_agent(facts.user_agent)
    languages = [part.split(";")[0].strip().lower() for part in facts.accept_language.split(",")]
    found = {
        "browser": browser,
        "browser_major": browser_major,
        "os": system,
        "os_major": system_major,
        "device": device,
        "language": ",".join(language for language in languages[:3] if language),
        **{name: value for name, value in facts.hints.items() if name != "platform"},
        "platform": facts.posted.get("platform") or facts.hints.get("platform", ""),
        **{name: value for name, value in facts.posted.items() if name != "platform"},
    }
    return {name: value[:64] for name, value in found.items() if value}


# The least total weight of the known device's attributes that a comparison must cover.
MIN_WEIGHT = 12
# What makes up a device's look: no versions (a ring's phone updates too), nothing from the
# network; only with the script's facts, since headers alone are the same on every such phone.
LOOK = ("browser", "os", "device", "model", "platform", "language", "screen", "dpr", "tz", "touch")


def similarity(seen: dict[str, str], known: dict[str, str]) -> float:
    """How alike two devices' attributes are, 0 to 1; 0 when browser or system differ.

    Everything the known device showed is compared: an attribute missing now counts as a
    mismatch (so leaving out what one cannot copy does not help). The script's facts must be
    on both sides, so two phones of one model with the same headers never count as one device.
    """
    if not all(seen.get(name) and seen.get(name) == known.get(name) for name in REQUIRED):
        return 0.0
    if not all(name in seen and name in known for name in FROM_THE_DEVICE):
        return 0.0
    compared = [name for name, weight in WEIGHTS.items() if weight and name in known]
    total = sum(WEIGHTS[name] for name in compared)
    if total < MIN_WEIGHT:
        return 0.0
    matched = sum(WEIGHTS[name] for name in compared if seen.get(name) == known[name])
    return matched / total


def look(attributes: dict[str, str]) -> str:
    """A hash of the device's look, or "" without the script's facts (see ``LOOK``)."""
    if not all(name in attributes for name in FROM_THE_DEVICE):
        return ""
    text = "|".join(f"{name}={attributes.get(name, '')}" for name in LOOK)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
