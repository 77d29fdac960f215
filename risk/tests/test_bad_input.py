"""Forged and broken input to the checkpoint: a clear answer, an unknown device, never a 500.

Everything goes through the real sign-in and retry views; the checkpoint's record of what it
saw (the evaluation and the ``risk.evaluated`` timeline event) shows how it was read.
"""

import json

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from activation.models import CaseState
from risk.middleware import DEVICE_COOKIE
from risk.models import Device, Evaluation, Moment, Rule, RuleSetVersion
from risk.rules import clean_params, validate_rule_set
from tests.factories import CustomerFactory, open_failed_case
from tests.fixtures import last_sms_code

from .conftest import PIXEL_FACTS, fired_kinds, last_risk_event

pytestmark = pytest.mark.django_db

TWO_MEGABYTES = 2 * 1024 * 1024


def deeply_nested(depth: int) -> str:
    return '{"screen": ' + "[" * depth + "]" * depth + "}"


FORGED_FACTS = {
    "two megabytes": json.dumps({"screen": "412x915", "padding": "x" * TWO_MEGABYTES}),
    "nested 100 000 deep": deeply_nested(100_000),
    "nested 500 deep, short": "[" * 500 + "]" * 500,
    "not JSON": "screen=412x915; tz=Asia/Shanghai",
    "a JSON list": json.dumps([PIXEL_FACTS]),
    "a JSON string": json.dumps("412x915"),
    "NUL bytes": '{"screen": "412x915\x00", "tz": "Asia/\x00Shanghai"}\x00',
}
WRONG_TYPES = {
    "screen": 412,
    "tz": ["Asia/Shanghai"],
    "touch": True,
    "dpr": None,
    "platform": {"name": "Linux armv81"},
}
SHAPES_WRONG = {
    "screen": "412x915'; DROP TABLE risk_device; --",
    "tz": "../../etc/passwd",
    "platform": "<script>alert(1)</script>",
    "touch": "-1",
    "dpr": "1e308",
}


def sign_in_and_ask_for_a_code(phone, customer, **post):
    """Sign-in and a code request, both posting ``post``; returns both responses."""
    case = open_failed_case(customer)
    signed_in = phone.sign_in(customer, post)
    sent = phone.post(
        reverse("activation:retry", args=[case.pk]), {"action": "send", "channel": "sms", **post}
    )
    case.refresh_from_db()
    return case, signed_in, sent


@pytest.mark.parametrize("raw", FORGED_FACTS.values(), ids=FORGED_FACTS.keys())
def test_a_forged_or_oversized_device_facts_field_is_dropped_not_a_500(phone, raw):
    customer = CustomerFactory()
    forger = phone(facts=None)
    case, signed_in, sent = sign_in_and_ask_for_a_code(forger, customer, device_facts=raw)

    assert signed_in.status_code == 302
    assert sent.status_code == 302
    assert case.state == CaseState.PENDING_VERIFICATION
    assert last_sms_code(str(customer.phone_number))
    event = last_risk_event(case, Moment.CODE_REQUEST)
    assert event["signals"]["device_facts"] == "malformed"
    assert event["signals"]["device_recognised"] == ""
    assert "bad_device_facts" in fired_kinds(event)
    assert event["decision"] == "allow"  # malformed facts alone never stop anyone
    attributes = Device.objects.get(key=forger.device_key).attributes
    assert not {"screen", "tz", "touch", "padding"} & set(attributes)


@pytest.mark.parametrize("posted", [WRONG_TYPES, SHAPES_WRONG], ids=["wrong types", "bad shapes"])
def test_device_facts_of_the_wrong_type_or_shape_are_left_out(phone, posted):
    customer = CustomerFactory()
    forger = phone(facts=posted)
    case, signed_in, sent = sign_in_and_ask_for_a_code(forger, customer)

    assert (signed_in.status_code, sent.status_code) == (302, 302)
    assert case.state == CaseState.PENDING_VERIFICATION
    attributes = Device.objects.get(key=forger.device_key).attributes
    assert not set(posted) - {"platform"} & set(attributes)
    assert attributes.get("platform") in (None, "Android")  # the client hint, never the script's


def test_a_body_beyond_the_upload_limit_is_a_clear_400(phone):
    customer = CustomerFactory()
    response = phone(facts=None).sign_in(customer, {"device_facts": "x" * (3 * 1024 * 1024)})
    assert response.status_code == 400
    assert not Evaluation.objects.filter(customer=customer).exists()


def test_a_tampered_device_cookie_is_replaced_and_recorded(phone):
    customer = CustomerFactory()
    honest = phone(facts=PIXEL_FACTS)
    honest.sign_in(customer)
    genuine = honest.client.cookies[DEVICE_COOKIE].value
    key, _stamp, signature = genuine.split(":")

    tamperer = phone(facts=PIXEL_FACTS)
    forged = f"{'f' * 32}:{_stamp}:{signature}"  # another id under the genuine signature
    tamperer.client.cookies[DEVICE_COOKIE] = forged
    case = open_failed_case(customer)
    signed_in = tamperer.sign_in(customer)
    assert signed_in.status_code == 302
    replaced = signed_in.cookies[DEVICE_COOKIE].value
    assert replaced not in (forged, genuine)
    assert tamperer.device_key not in (key, "f" * 32)

    sent = tamperer.send(case)
    assert sent.status_code == 302
    sign_in = Evaluation.objects.filter(customer=customer, moment=Moment.SIGN_IN).latest("pk")
    assert sign_in.signals["device_cookie"] == "tampered"
    assert sign_in.device_id == tamperer.device_key
    # From then on the browser carries its new, valid cookie.
    event = last_risk_event(case, Moment.CODE_REQUEST)
    assert event["signals"]["device_cookie"] == "valid"


@pytest.mark.parametrize(
    "cookie",
    ["", "garbage", "a" * 4096, "x:y:z", "\x00\x01\x02", '"quoted"', "é" * 10],
    ids=["empty", "garbage", "4 KB", "colons", "control", "quoted", "non-ASCII"],
)
def test_a_garbage_device_cookie_is_a_new_device_not_an_error(phone, cookie):
    customer = CustomerFactory()
    tamperer = phone(facts=PIXEL_FACTS)
    tamperer.client.cookies[DEVICE_COOKIE] = cookie
    response = tamperer.sign_in(customer)
    assert response.status_code == 302
    evaluation = Evaluation.objects.get(customer=customer, moment=Moment.SIGN_IN)
    assert evaluation.signals["device_cookie"] in ("tampered", "new")
    assert evaluation.signals["device_recognised"] == ""
    assert len(tamperer.device_key) == 32


GARBAGE_HEADERS = {
    "HTTP_USER_AGENT": "Mozilla/5.0 " + "(KHTML; like Gecko) " * 500,  # 10 KB
    "HTTP_ACCEPT_LANGUAGE": "".join(chr(code) for code in range(0x80, 0x100)) + "\x00;q=zz,",
    "HTTP_SEC_CH_UA": '"Not A;Brand";v="99", ' * 400,
    "HTTP_SEC_CH_UA_PLATFORM": '"' + "\x00\x7f\x1b[31m" * 100 + '"',
    "HTTP_SEC_CH_UA_MOBILE": "?2" * 1000,
    "HTTP_SEC_CH_UA_MODEL": "\u202e" + "Pixel" * 2000,
    "HTTP_X_FORWARDED_FOR": "not-an-ip, <script>, 999.999.1.1, " * 50,
}


@pytest.mark.parametrize("proxies", [0, 1])
def test_headers_full_of_garbage_get_a_clear_answer(phone, settings, proxies):
    settings.TRUSTED_PROXY_COUNT = proxies
    customer = CustomerFactory()
    garbled = phone(facts=PIXEL_FACTS, **GARBAGE_HEADERS)
    case, signed_in, sent = sign_in_and_ask_for_a_code(garbled, customer)
    assert (signed_in.status_code, sent.status_code) == (302, 302)
    response = garbled.verify(case, last_sms_code(str(customer.phone_number)))
    assert response.status_code == 302
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING

    attributes = Device.objects.get(key=garbled.device_key).attributes
    assert all(len(value) <= 64 and value.isprintable() for value in attributes.values())
    for evaluation in Evaluation.objects.filter(customer=customer):
        assert evaluation.signals["device_recognised"] == ""
        assert len(json.dumps(evaluation.signals)) < 2000


def test_no_address_at_all_is_read_as_an_unknown_network(phone):
    customer = CustomerFactory()
    nowhere = phone(facts=PIXEL_FACTS, address="")
    case, signed_in, sent = sign_in_and_ask_for_a_code(nowhere, customer)
    assert (signed_in.status_code, sent.status_code) == (302, 302)
    event = last_risk_event(case, Moment.CODE_REQUEST)
    assert event["signals"]["network"]["prefix"] == ""
    assert event["decision"] == "allow"


# --- rule parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("no_such_kind", {}),
        ("__import__('os').system('id')", {}),
        ("young_account", {"days": 0}),
        ("young_account", {"days": 366}),
        ("young_account", {"days": -5}),
        ("young_account", {"days": "14"}),
        ("young_account", {"days": 14.5}),
        ("young_account", {"days": True}),
        ("young_account", {"days": None}),
        ("young_account", {}),
        ("young_account", {"days": 14, "expression": "1 == 1"}),
        ("young_account", [14]),
        ("young_account", "days=14"),
        ("new_device", {"days": 3}),
        ("network_listed", {"labels": "vpn"}),
        ("network_listed", {"labels": []}),
        ("network_listed", {"labels": ["vpn", "tor"]}),
        ("country_not_in", {"countries": ["CHN"]}),
        ("country_not_in", {"countries": ["C1"]}),
        ("country_not_in", {"countries": [86]}),
        ("asn_in", {"asns": ["AS4134"]}),
        ("asn_in", {"asns": [0]}),
        ("asn_in", {"asns": [2**32]}),
        ("asn_in", {"asns": list(range(1, 300))}),
        ("many_customers", {"key": "phone", "more_than": 3}),
        ("many_customers", {"key": "device", "more_than": 0}),
        ("code_velocity", {"counter": "sent", "key": "device", "more_than": 3}),
        ("code_velocity", {"counter": "failed", "key": "device", "more_than": "3"}),
        ("earlier_lockouts", {"at_least": 0, "days": 30}),
    ],
)
def test_bad_rule_parameters_are_refused(kind, params):
    with pytest.raises(ValidationError):
        clean_params(kind, params)


def test_good_rule_parameters_are_normalised():
    assert clean_params("young_account", {"days": 14}) == {"days": 14}
    assert clean_params("network_listed", {"labels": ["vpn", "hosting", "vpn"]}) == {
        "labels": ["hosting", "vpn"]
    }
    assert clean_params("country_not_in", {"countries": ["cn", "HK"]}) == {
        "countries": ["CN", "HK"]
    }


@pytest.mark.parametrize(
    ("rules", "step_up_at", "review_at"),
    [
        # Network facts alone must never reach the step-up score.
        (
            [
                ("network_listed", {"labels": ["vpn"]}, 25),
                ("address_changed", {}, 15),
                ("new_device", {}, 40),
            ],
            40,
            90,
        ),
        ([("asn_in", {"asns": [64500]}, 40)], 40, 90),
        ([("country_not_in", {"countries": ["CN"]}, 100)], 40, 90),
        # Thresholds out of order or zero.
        ([("new_device", {}, 40)], 0, 90),
        ([("new_device", {}, 40)], 90, 40),
    ],
)
def test_a_rule_set_that_would_stop_people_on_the_network_alone_is_refused(
    rules, step_up_at, review_at
):
    with pytest.raises(ValidationError):
        validate_rule_set(rules, step_up_at=step_up_at, review_at=review_at)


def test_the_default_rule_set_passes_its_own_validation():
    live = RuleSetVersion.objects.get(status=RuleSetVersion.Status.LIVE)
    rules = [(rule.kind, rule.params, rule.score) for rule in live.rules.all()]
    for kind, params, _score in rules:
        assert clean_params(kind, params) == params
    validate_rule_set(rules, step_up_at=live.step_up_at, review_at=live.review_at)


def test_a_rule_of_an_unknown_kind_or_with_bad_parameters_in_the_database_is_skipped(phone):
    """Rows written around the forms (an old kind, a hand edit) never break a sign-in."""
    RuleSetVersion.objects.filter(status=RuleSetVersion.Status.LIVE).update(
        status=RuleSetVersion.Status.RETIRED
    )
    version = RuleSetVersion.objects.create(
        number=99,
        status=RuleSetVersion.Status.LIVE,
        step_up_at=40,
        review_at=90,
        published_at=timezone.now(),
    )
    Rule.objects.create(version=version, kind="__import__('os').system('id')", params={}, score=90)
    Rule.objects.create(version=version, kind="young_account", params={"days": "14"}, score=90)
    Rule.objects.create(version=version, kind="many_customers", params={"key": "x"}, score=90)
    Rule.objects.create(version=version, kind="young_account", params={"days": 30}, score=5)

    customer = CustomerFactory()
    honest = phone(facts=PIXEL_FACTS)
    case, signed_in, sent = sign_in_and_ask_for_a_code(honest, customer)
    assert (signed_in.status_code, sent.status_code) == (302, 302)
    event = last_risk_event(case, Moment.CODE_REQUEST)
    assert event["live"]["version"] == 99
    assert [item["kind"] for item in event["live"]["fired"]] == ["young_account"]
    assert (event["live"]["score"], event["decision"]) == (5, "allow")
