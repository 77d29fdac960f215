"""The status page's layout works out its links, static files and languages once per process,
and still links, translates and protects its forms as before; the benchmark's signed-in floors
ask for the same sign-in as the real status reads."""

import re
from unittest import mock

import pytest
from django import urls
from django.template import engines
from django.templatetags.static import StaticNode, static
from django.test import Client, override_settings
from django.urls import reverse
from rest_framework.test import APIClient

from activation.tests.test_status_page import STATUS_QUERIES, queries_of
from api.tests.test_case_status_call import app  # noqa: F401 - the signed-in app client
from tests.factories import open_failed_case

pytestmark = pytest.mark.django_db

CSRF_TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture
def case(customer):
    return open_failed_case(customer)


def test_the_layout_reverses_no_url_when_a_page_is_rendered(rf, customer):
    request = rf.get("/help/")
    request.user = customer
    layout = engines["django"].from_string('{% extends "base.html" %}')
    layout.render({}, request)  # the first page of the process works the links out
    # {% url %} and {% static %} look these up when they render.
    with (
        mock.patch("django.urls.reverse", wraps=urls.reverse) as reversed_,
        mock.patch.object(StaticNode, "handle_simple", wraps=StaticNode.handle_simple) as static_,
    ):
        html = layout.render({}, request)
    assert (reversed_.call_count, static_.call_count) == (0, 0)
    assert f'action="{reverse("logout")}"' in html


def test_the_layout_links_where_reversing_would(signed_in, case):
    html = signed_in.get(f"/activation/{case.pk}/").text
    for name in ("home", "help", "profile"):
        assert f'href="{reverse(name)}"' in html
    assert f'action="{reverse("logout")}"' in html
    assert f'action="{reverse("set_language")}"' in html
    assert f'href="{static("css/site.css")}"' in html
    for script in ("progress", "device", "passkey"):
        assert f'<script src="{static(f"js/{script}.js")}" defer></script>' in html
    assert '<option value="en" selected>English</option>' in html
    assert '<option value="zh-hans">简体中文</option>' in html
    assert f'name="next" type="hidden" value="/activation/{case.pk}/"' in html


def test_the_layout_speaks_chinese_and_selects_it(signed_in, case):
    signed_in.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    html = signed_in.get(f"/activation/{case.pk}/").text
    assert '<html lang="zh-hans">' in html
    assert "退出登录" in html and "帮助" in html
    assert '<option value="zh-hans" selected>简体中文</option>' in html
    assert '<option value="en">English</option>' in html


def test_the_layouts_forms_carry_a_token_that_the_csrf_check_accepts(customer, case):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(customer)
    html = browser.get(f"/activation/{case.pk}/").text
    tokens = CSRF_TOKEN.findall(html)
    assert len(tokens) == 2  # sign out and the language
    refused = browser.post("/i18n/setlang/", {"language": "zh-hans", "next": "/help/"})
    assert refused.status_code == 403
    accepted = browser.post(
        "/i18n/setlang/",
        {"language": "zh-hans", "next": "/help/", "csrfmiddlewaretoken": tokens[1]},
    )
    assert accepted.status_code == 302
    assert "帮助" in browser.get("/help/").text


def test_a_failed_case_still_shows_its_reason_and_retry_in_the_same_queries(signed_in, case):
    url = f"/activation/{case.pk}/"
    html = signed_in.get(url).text
    assert case.get_failure_reason_display() in html
    assert f'href="{reverse("activation:retry", args=[case.pk])}"' in html
    assert case.credit_line.product_name in html and case.credit_line.reference in html
    assert queries_of(signed_in, url) == STATUS_QUERIES
    status = signed_in.get(f"/activation/{case.pk}/status/").json()
    assert status["state"] == "failed" and case.get_failure_reason_display() in status["html"]


@override_settings(ROOT_URLCONF="bench.urls")
def test_the_web_floors_ask_for_a_signed_in_customer_and_their_own_case(
    client, customer, other_customer, case
):
    floors = [f"/_bench/signed-in-page-one-query/{case.pk}"]
    floors.append(f"/_bench/signed-in-json-one-query/{case.pk}")
    for url in floors:
        assert client.get(url).status_code == 302  # to the sign-in page
    client.force_login(other_customer)
    for url in floors:
        assert client.get(url).status_code == 404
    client.force_login(customer)
    assert client.get(floors[1]).json() == {"id": case.pk, "state": "failed"}
    assert queries_of(client, floors[0]) == 2  # the user, the case


@override_settings(ROOT_URLCONF="bench.urls")
def test_the_app_floor_asks_for_the_apps_token(app, case):  # noqa: F811
    url = f"/_bench/signed-in-drf-one-query/{case.pk}"
    assert APIClient().get(url).status_code == 401
    assert app.get(url).json() == {"id": case.pk, "state": "failed"}


def test_the_layout_follows_a_setting_a_test_overrides(signed_in, case):
    signed_in.get(f"/activation/{case.pk}/")  # the process has worked its layout out
    with override_settings(STATIC_URL="/elsewhere/"):
        html = signed_in.get(f"/activation/{case.pk}/").text
        assert f'href="{static("css/site.css")}"' in html
        assert 'href="/elsewhere/' in html
    assert 'href="/elsewhere/' not in signed_in.get(f"/activation/{case.pk}/").text
