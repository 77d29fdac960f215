"""The Chinese catalogue is complete, compiled, and holds every message the code uses."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polib

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "locale" / "zh_Hans" / "LC_MESSAGES"
SOURCES = [
    "manage.py",
    "portal",
    "accounts",
    "audit",
    "verification",
    "risk",
    "activation",
    "api",
    "templates",
    "locale",
]


def entries(catalogue) -> dict[str, str]:
    return {
        (entry.msgctxt or "") + "\x04" + entry.msgid: entry.msgstr or str(entry.msgstr_plural)
        for entry in catalogue
        if not entry.obsolete and entry.msgid
    }


def test_every_message_has_a_chinese_translation():
    po = polib.pofile(str(CATALOGUE / "django.po"))
    assert [e.msgid for e in po.untranslated_entries()] == []
    assert [e.msgid for e in po.fuzzy_entries()] == []


def test_the_compiled_catalogue_is_not_stale():
    po = entries(polib.pofile(str(CATALOGUE / "django.po")))
    mo = entries(polib.mofile(str(CATALOGUE / "django.mo")))
    assert mo == po, "run `python manage.py compilemessages`"


def test_the_catalogue_holds_every_message_the_code_uses(tmp_path):
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("tests"))
        else:
            shutil.copy(source, tmp_path / name)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "PORTAL_VAR_DIR": str(tmp_path),
    }
    subprocess.run(
        [sys.executable, "manage.py", "makemessages", "-l", "zh_Hans", "--no-location", "-v0"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    fresh = polib.pofile(str(tmp_path / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"))
    committed = polib.pofile(str(CATALOGUE / "django.po"))
    missing = set(entries(fresh)) - set(entries(committed))
    assert not missing, f"run makemessages and translate: {sorted(missing)}"
