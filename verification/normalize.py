"""Turn what a person typed or pasted into the digits of a code."""

import re
import unicodedata

_DIGIT_RUNS = re.compile(r"\d+")


def normalize_code(raw: str, length: int = 6) -> str:
    """Return the code in ``raw``, tolerating spaces, dashes, full-width digits and SMS text.

    ``"１２３ ４５６"``, ``"123-456"`` and ``"Your code is 123456, valid 5 minutes"`` all give
    ``"123456"``. Anything that does not contain exactly one code gives ``""``.
    """
    text = unicodedata.normalize("NFKC", raw or "")
    runs = [run for run in _DIGIT_RUNS.findall(text) if run.isascii()]
    joined = "".join(runs)
    if len(joined) == length:
        return joined
    exact = [run for run in runs if len(run) == length]
    if len(exact) == 1:
        return exact[0]
    return ""
