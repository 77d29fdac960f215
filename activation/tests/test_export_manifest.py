"""The manifest's text: written from a template for its chain heads, the same as json.dumps's."""

import json
from dataclasses import asdict

import pytest

from activation.exports import Manifest


def manifest(chain_heads: dict) -> Manifest:
    return Manifest(
        format="jsonl",
        filters={"since": None, "until": "2026-12-07T00:00:00+00:00", "states": ['"a"\n', "é"]},
        exported_by='auditor \u2028 "q" 审计',
        exported_at="2026-12-07T12:00:00+00:00",
        pii=False,
        rows=1_000_000,
        sha256="ab" * 32,
        chain_heads=chain_heads,
    )


def indented_json(manifest: Manifest) -> str:
    return json.dumps(asdict(manifest), indent=2, sort_keys=True)


@pytest.mark.parametrize(
    "chain_heads",
    [
        {},
        {"7": {"seq": 0, "hash": "0" * 64}},
        # Keys sort as text ("10" before "9"), as json.dumps sorts them.
        {str(n): {"seq": n % 21, "hash": f"{n:064x}"} for n in range(1, 1200)},
        {"1": {"hash": 'é "quoted" \\ \n\x01 \u2028 😀', "seq": 2**70}},
        # Not the usual head: json.dumps writes them all.
        {"1": {"seq": True, "hash": "x"}},
        {"1": {"seq": 1, "hash": None}},
        {"1": {"seq": 1, "hash": "x", "extra": [1, 2]}},
        {"1": {"seq": 1}},
        {1: {"seq": 1, "hash": "x"}},
    ],
    ids=["none", "one", "many", "awkward-text", "bool", "null", "extra-key", "missing", "int-key"],
)
def test_the_manifest_text_is_its_fields_as_indented_sorted_json(chain_heads):
    written = manifest(chain_heads)
    assert written.to_json() == indented_json(written)
    assert json.loads(written.to_json())["chain_heads"] == json.loads(json.dumps(chain_heads))


def test_the_manifest_text_leaves_the_manifest_as_it_was():
    heads = {"2": {"seq": 3, "hash": "c" * 64}, "10": {"seq": 1, "hash": "d" * 64}}
    written = manifest(heads)
    before = asdict(written)
    written.to_json()
    assert asdict(written) == before
    assert list(written.chain_heads) == ["2", "10"]
