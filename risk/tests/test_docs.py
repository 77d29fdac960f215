"""docs/risk.md documents every rule kind the code offers, so the two cannot drift apart."""

from pathlib import Path

from risk.rules import KINDS

DOC = Path(__file__).resolve().parents[2] / "docs" / "risk.md"


def test_every_rule_kind_is_documented():
    text = DOC.read_text(encoding="utf-8")
    missing = [code for code in KINDS if f"`{code}`" not in text]
    assert not missing, f"docs/risk.md does not describe the rule kinds {missing}"


def test_the_documented_kinds_all_exist():
    """A kind removed from the code leaves no row behind in the table of kinds."""
    text = DOC.read_text(encoding="utf-8")
    table = text.split("## Rule kinds", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    documented = [row.split("`")[1] for row in rows]
    assert sorted(documented) == sorted(KINDS)
