"""The Prometheus alert rules load, pass their unit tests, and each names a runbook section."""

import re
import shutil
import subprocess

from .fixtures import ROOT, require

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts.test.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_LINK = re.compile(r"^\s+runbook_url: docs/runbook\.md#([a-z0-9-]+)\s*$", re.MULTILINE)


def promtool(*arguments: str) -> subprocess.CompletedProcess:
    executable = shutil.which("promtool")
    require(executable is not None, "promtool (Debian's prometheus package)")
    return subprocess.run(
        [executable, *arguments], capture_output=True, text=True, timeout=300, check=False
    )


def alerts() -> dict[str, str]:
    """Each alert's name and its rule's text, read from alerts.yml without a YAML library."""
    blocks = re.split(r"^\s+- (?=alert: |record: )", RULES.read_text(), flags=re.MULTILINE)
    found = {}
    for block in blocks:
        name = re.match(r"alert: (\w+)", block)
        if name:
            found[name.group(1)] = block
    return found


def heading_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_anchors() -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {heading_anchor(heading) for heading in headings}


def test_the_alert_rules_pass_promtool_check():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alert_rules_pass_their_unit_tests():
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_names_a_runbook_section_that_exists():
    anchors = runbook_anchors()
    rules = alerts()
    assert len(rules) >= 10
    for name, rule in rules.items():
        links = RUNBOOK_LINK.findall(rule)
        assert len(links) == 1, f"{name} should name exactly one runbook section"
        assert links[0] in anchors, f"{name} points at #{links[0]}, not a heading in the runbook"


def test_every_alert_has_a_severity():
    for name, rule in alerts().items():
        assert re.search(r"^\s+severity: (critical|warning)$", rule, re.MULTILINE), name


def test_every_alert_is_unit_tested_both_firing_and_quiet():
    tests = RULE_TESTS.read_text()
    for name in alerts():
        quiet = rf"alertname: {name}\n\s+exp_alerts: \[\]"
        firing = rf"alertname: {name}\n\s+exp_alerts:( &\w+)?\n\s+- exp_labels:"
        assert re.search(quiet, tests), f"no test where {name} stays quiet"
        assert re.search(firing, tests), f"no test where {name} fires"


def test_the_heading_anchor_follows_githubs_rules():
    assert heading_anchor("Failed audit-chain verification") == "failed-audit-chain-verification"
    assert heading_anchor("Slow or failing SMS gateway") == "slow-or-failing-sms-gateway"
    assert heading_anchor("/metrics down") == "metrics-down"
