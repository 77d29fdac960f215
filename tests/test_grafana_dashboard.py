"""The Grafana dashboard imports anywhere and queries only metrics the portal exposes."""

import json
import re

import pytest
from prometheus_client import Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from portal import instruments

from .fixtures import ROOT
from .test_alert_rules import RULES, runbook_anchors

DASHBOARD = ROOT / "deploy" / "grafana" / "activation-rescue.json"
TOKEN = "dashboard-test-token-0123456789abcdefghijklmnop"
# A whole metric name, so a recording rule such as reason:activation_rescue_x:rate15m is read
# as one name, not as activation_rescue_x.
METRIC_NAME = re.compile(r"(?<![\w:])(?:[a-zA-Z_]\w*:)?activation_rescue_[a-z0-9_:]+")
RECORDING_RULE = re.compile(r"^\s+- record: (\S+)\s*$", re.MULTILINE)
RUNBOOK_LINK = re.compile(r"docs/runbook\.md#([a-z0-9-]+)")
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    """Every panel, nested ones included, rows left out (a row holds no query)."""
    found = []
    pending = list(dashboard()["panels"])
    while pending:
        panel = pending.pop(0)
        pending.extend(panel.get("panels", []))
        if panel["type"] != "row":
            found.append(panel)
    return found


def all_panels_and_rows() -> list[dict]:
    found = []
    pending = list(dashboard()["panels"])
    while pending:
        panel = pending.pop(0)
        pending.extend(panel.get("panels", []))
        found.append(panel)
    return found


def expressions() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel["targets"]]


def instrument_names() -> set[str]:
    """The series names the code paths' counters and histograms expose."""
    names = set()
    for metric in instruments.ALL:
        if isinstance(metric, Counter):
            names |= {metric._name + "_total", metric._name + "_created"}
        elif isinstance(metric, Histogram):
            names |= {metric._name + suffix for suffix in ("_bucket", "_sum", "_count", "_created")}
        else:
            raise AssertionError(f"{metric._name}: a metric type this test does not know")
    return names


def recording_rules() -> set[str]:
    return set(RECORDING_RULE.findall(RULES.read_text()))


@pytest.fixture
def scraped_names(db, client, settings) -> set[str]:
    """The series names on a /metrics page with nothing counted yet: the gauges, all of them."""
    settings.METRICS_TOKEN = TOKEN
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    return {
        sample.name
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_the_dashboard_has_its_fixed_identity():
    board = dashboard()
    assert board["uid"] == "activation-rescue"
    assert board["title"] == "Activation Rescue"
    assert 36 <= board["schemaVersion"] <= 41


def test_every_panel_has_a_title_a_description_and_a_query():
    found = panels()
    assert len(found) >= 20
    for panel in found:
        assert panel.get("title"), panel
        assert panel.get("description"), panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]


def test_the_rows_are_the_ones_staff_expect():
    rows = [panel["title"] for panel in dashboard()["panels"] if panel["type"] == "row"]
    assert rows == [
        "Overview",
        "Activations",
        "Core",
        "SMS",
        "Callbacks",
        "Risk",
        "Workers",
        "HTTP",
    ]


def test_panel_ids_are_unique():
    ids = [panel["id"] for panel in all_panels_and_rows()]
    assert len(ids) == len(set(ids))


def test_every_query_uses_the_datasource_variable():
    board = dashboard()
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert [entry["name"] for entry in board["__inputs"]] == ["DS_PROMETHEUS"]
    for panel in panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    # No uid of somebody's own Grafana anywhere in the file.
    uids = re.findall(r'"uid": "([^"]*)"', DASHBOARD.read_text())
    assert set(uids) <= {"${DS_PROMETHEUS}", "-- Grafana --", "activation-rescue"}, uids


def test_every_metric_queried_is_exposed_or_recorded(scraped_names):
    known = scraped_names | instrument_names() | recording_rules()
    # The gauges read from the cache are on the page too (the test cache answers).
    assert "activation_rescue_circuit_breaker_state" in scraped_names
    assert "activation_rescue_worker_heartbeat_age_seconds" in scraped_names
    used = {name for expr in expressions() for name in METRIC_NAME.findall(expr)}
    assert len(used) >= 20
    assert used - known == set()


def test_every_gauge_and_instrument_is_on_the_dashboard(scraped_names):
    used = {name for expr in expressions() for name in METRIC_NAME.findall(expr)}
    gauges = scraped_names - instrument_names()
    assert "activation_rescue_open_cases" in gauges
    assert gauges - used == set(), "gauges on no panel"
    for metric in instruments.ALL:
        series = {name for name in used if name.startswith(metric._name + "_")}
        assert series & instrument_names(), f"{metric._name} is on no panel"


def test_the_metric_name_pattern_reads_a_recording_rule_as_one_name():
    expr = "reason:activation_rescue_case_failures:rate15m * 900 + activation_rescue_x_total"
    assert METRIC_NAME.findall(expr) == [
        "reason:activation_rescue_case_failures:rate15m",
        "activation_rescue_x_total",
    ]


def test_every_runbook_section_named_exists():
    anchors = runbook_anchors()
    named = {link for panel in panels() for link in RUNBOOK_LINK.findall(panel["description"])}
    assert len(named) >= 8
    assert named <= anchors, named - anchors
