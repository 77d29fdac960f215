"""The Idempotency-Key decorator, through a small view of this module's own (its urlpatterns).

The view writes a row for every time it runs, so each test can count the executions.
"""

import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.urls import path
from django.utils import timezone
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.tokens import AccessToken

from api.authentication import SESSION_CLAIM
from api.idempotency import idempotent
from api.models import AppSession, IdempotencyRecord
from api.tasks import purge_idempotency_keys
from portal import urls as portal_urls
from portal.errors import DomainError
from tests.factories import CustomerFactory

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]

RUN_PREFIX = "idempotency-run-"
# The race tests hold the view here so that the second request arrives while it runs.
view_entered = threading.Event()
view_release = threading.Event()


class Refused(DomainError):
    code = "code_incorrect"


class CountingView(APIView):
    """Record one run, then answer as the body asks."""

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=50)
        outcome = serializers.ChoiceField(
            choices=["ok", "domain_error", "limited", "forbidden", "crash", "held"],
            default="ok",
        )

    @idempotent
    def post(self, request, **kwargs):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        runs = executions() + 1
        Group.objects.create(name=f"{RUN_PREFIX}{runs}-{data.validated_data['name']}")
        outcome = data.validated_data["outcome"]
        if outcome == "held":
            view_entered.set()
            view_release.wait(timeout=10)
        elif outcome == "domain_error":
            raise Refused("That code is not right.", attempts_left=2)
        elif outcome == "limited":
            raise exceptions.Throttled(wait=30)
        elif outcome == "forbidden":
            raise exceptions.PermissionDenied()
        elif outcome == "crash":
            raise RuntimeError("the view broke")
        return Response(
            {"run": runs, "name": data.validated_data["name"], "at": timezone.now()},
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/things/{runs}/", "X-Not-Kept": "1"},
        )

    def put(self, request, **kwargs):  # the same path, without the decorator
        return Response({"ok": True})


class OtherView(CountingView):
    pass


# The whole site (its middleware reverses some of it) and the two test views.
urlpatterns = [
    path("api/v1/things/", CountingView.as_view()),
    path("api/v1/others/", OtherView.as_view()),
    *portal_urls.urlpatterns,
]


def executions() -> int:
    return Group.objects.filter(name__startswith=RUN_PREFIX).count()


def bearer(user) -> dict[str, str]:
    """A fresh access token (they live minutes) for the user's one app session."""
    session, _created = AppSession.objects.get_or_create(
        user=user,
        installation_id=f"install-{user.pk}",
        revoked_at=None,
        defaults={"platform": "android", "refresh_jti": "x"},
    )
    token = AccessToken.for_user(user)
    token[SESSION_CLAIM] = session.pk
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def post(client: Client, auth: dict, body: dict, key: str | None = None, url="/api/v1/things/"):
    headers = dict(auth)
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    return client.post(url, body, content_type="application/json", **headers)


@pytest.fixture
def auth(customer):
    return bearer(customer)


@pytest.fixture(autouse=True)
def _reset_events():
    view_entered.clear()
    view_release.clear()
    yield
    view_release.set()


def test_without_a_key_every_request_runs(client, auth):
    first = post(client, auth, {"name": "a"})
    second = post(client, auth, {"name": "a"})
    assert (first.status_code, second.status_code) == (201, 201)
    assert executions() == 2
    assert not IdempotencyRecord.objects.exists()
    assert "Idempotent-Replayed" not in second


def test_the_same_key_and_body_replays_the_first_response(client, auth, customer):
    first = post(client, auth, {"name": "a"}, key="key-1")
    again = post(client, auth, {"name": "a"}, key="key-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Location"] == first["Location"] == "/things/1/"
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert "X-Not-Kept" not in again
    assert executions() == 1
    record = IdempotencyRecord.objects.get()
    assert (record.user, record.key, record.status_code) == (customer, "key-1", 201)
    assert record.endpoint == "POST /api/v1/things/"
    assert record.expires_at - record.created_at == timedelta(hours=24)


def test_the_body_is_compared_as_json_not_as_bytes(client, auth):
    post(client, auth, {"name": "a", "outcome": "ok"}, key="key-1")
    again = client.post(
        "/api/v1/things/",
        '{ "outcome" : "ok", "name": "a" }',
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="key-1",
        **auth,
    )
    assert again["Idempotent-Replayed"] == "true"
    assert executions() == 1


def test_the_same_key_with_another_body_is_a_conflict(client, auth):
    post(client, auth, {"name": "a"}, key="key-1")
    other = post(client, auth, {"name": "b"}, key="key-1")
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"
    assert set(other.json()) == {"code", "message", "details"}
    assert executions() == 1


def test_the_same_key_on_another_endpoint_is_a_conflict(client, auth):
    post(client, auth, {"name": "a"}, key="key-1")
    other = post(client, auth, {"name": "a"}, key="key-1", url="/api/v1/others/")
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"
    assert executions() == 1


def test_keys_belong_to_one_user(client, auth):
    post(client, auth, {"name": "a"}, key="key-1")
    someone_else = post(Client(), bearer(CustomerFactory()), {"name": "a"}, key="key-1")
    assert someone_else.status_code == 201
    assert "Idempotent-Replayed" not in someone_else
    assert executions() == 2
    assert IdempotencyRecord.objects.count() == 2


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "clé", "tab\there", "new\nline"],
    ids=["empty", "long", "non-ascii", "tab", "nl"],
)
def test_a_malformed_key_is_refused_before_the_view_runs(client, auth, key):
    headers = {**auth, "HTTP_IDEMPOTENCY_KEY": key}
    response = client.post(
        "/api/v1/things/", {"name": "a"}, content_type="application/json", **headers
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_idempotency_key"
    assert executions() == 0
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.parametrize("key", ["a", "x" * 255, "order 42: retry #1 ~!"])
def test_a_key_of_printable_ascii_up_to_255_characters_is_accepted(client, auth, key):
    assert post(client, auth, {"name": "a"}, key=key).status_code == 201
    assert post(client, auth, {"name": "a"}, key=key)["Idempotent-Replayed"] == "true"
    assert executions() == 1


def test_an_error_the_api_answers_is_stored_and_replayed(client, auth):
    first = post(client, auth, {"name": "a", "outcome": "domain_error"}, key="key-1")
    again = post(client, auth, {"name": "a", "outcome": "domain_error"}, key="key-1")
    assert first.status_code == again.status_code == 400
    assert (
        again.json()
        == first.json()
        == {
            "code": "code_incorrect",
            "message": "That code is not right.",
            "details": {"attempts_left": 2},
        }
    )
    assert again["Idempotent-Replayed"] == "true"
    assert executions() == 1


def test_invalid_input_is_stored_and_replayed(client, auth):
    first = post(client, auth, {"name": ""}, key="key-1")
    again = post(client, auth, {"name": ""}, key="key-1")
    assert first.status_code == again.status_code == 400
    assert first.json()["details"] == again.json()["details"]
    assert again["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize(
    ("outcome", "expected"), [("limited", 429), ("forbidden", 403), ("crash", 500)]
)
def test_rate_limits_refusals_and_crashes_are_not_stored(outcome, expected, auth):
    client = Client(raise_request_exception=False)
    first = post(client, auth, {"name": "a", "outcome": outcome}, key="key-1")
    assert first.status_code == expected
    assert not IdempotencyRecord.objects.exists()
    again = post(client, auth, {"name": "a", "outcome": outcome}, key="key-1")
    assert again.status_code == expected
    assert "Idempotent-Replayed" not in again
    assert executions() == 2
    assert not IdempotencyRecord.objects.exists()


def test_after_a_crash_the_same_key_runs_afresh(auth):
    client = Client(raise_request_exception=False)
    assert post(client, auth, {"name": "a", "outcome": "crash"}, key="key-1").status_code == 500
    # The retry may even change its body: nothing was stored for the key.
    assert post(client, auth, {"name": "a"}, key="key-1").status_code == 201
    assert executions() == 2


def test_the_retry_after_of_a_429_is_left_to_the_client(client, auth):
    response = post(client, auth, {"name": "a", "outcome": "limited"}, key="key-1")
    assert response["Retry-After"] == "30"


def test_a_replay_answers_in_the_language_of_the_first_response(client, auth):
    first = post(client, auth | {"HTTP_ACCEPT_LANGUAGE": "zh-hans"}, {"name": "a"}, key="k")
    again = post(client, auth | {"HTTP_ACCEPT_LANGUAGE": "en"}, {"name": "a"}, key="k")
    assert first["Content-Language"] == "zh-hans"
    assert again["Content-Language"] == "zh-hans"
    assert IdempotencyRecord.objects.get().response_headers == {
        "Location": "/things/1/",
        "Content-Language": "zh-hans",
    }


def test_an_unauthenticated_request_with_a_key_is_refused_and_not_stored(client):
    response = client.post(
        "/api/v1/things/",
        {"name": "a"},
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="key-1",
    )
    assert response.status_code == 401
    assert executions() == 0
    assert not IdempotencyRecord.objects.exists()


def test_a_key_lives_24_hours_and_then_runs_afresh(client, customer, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    post(client, bearer(customer), {"name": "a"}, key="key-1")
    time_machine.shift(timedelta(hours=23, minutes=59))
    auth = bearer(customer)
    assert post(client, auth, {"name": "a"}, key="key-1")["Idempotent-Replayed"] == "true"
    time_machine.shift(timedelta(minutes=1))
    fresh = post(client, auth, {"name": "b"}, key="key-1")
    assert fresh.status_code == 201
    assert "Idempotent-Replayed" not in fresh
    assert executions() == 2
    assert IdempotencyRecord.objects.get().request_hash  # one record: the new one
    assert post(client, auth, {"name": "b"}, key="key-1")["Idempotent-Replayed"] == "true"


def test_the_lifetime_follows_the_setting(client, auth, settings):
    settings.API_IDEMPOTENCY_KEY_HOURS = 48
    post(client, auth, {"name": "a"}, key="key-1")
    record = IdempotencyRecord.objects.get()
    assert record.expires_at - record.created_at == timedelta(hours=48)


def test_the_purge_deletes_only_expired_keys(client, customer, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    post(client, bearer(customer), {"name": "a"}, key="old")
    time_machine.shift(timedelta(hours=12))
    post(client, bearer(customer), {"name": "a"}, key="new")
    time_machine.shift(timedelta(hours=12))
    assert purge_idempotency_keys.delay().get() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]


def test_a_method_without_the_decorator_ignores_the_key(client, auth):
    response = client.put("/api/v1/things/", {}, HTTP_IDEMPOTENCY_KEY="key-1", **auth)
    assert response.status_code == 200
    assert not IdempotencyRecord.objects.exists()


# --- Concurrency, on the real PostgreSQL ------------------------------------------------------


def _post_in_thread(auth: dict, body: dict, key: str, results: list, start=None) -> None:
    try:
        if start is not None:
            start.wait(timeout=10)
        results.append(post(Client(), auth, body, key=key))
    finally:
        connection.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_retry_while_the_first_request_runs_is_told_to_wait():
    auth = bearer(CustomerFactory())
    body = {"name": "a", "outcome": "held"}
    results: list = []
    first = threading.Thread(target=_post_in_thread, args=(auth, body, "key-1", results))
    first.start()
    try:
        assert view_entered.wait(timeout=10)
        retry = post(Client(), auth, body, key="key-1")
        assert retry.status_code == 409
        assert retry.json()["code"] == "idempotency_key_in_use"
        assert retry["Retry-After"] == "1"
    finally:
        view_release.set()
        first.join(timeout=10)
    assert [r.status_code for r in results] == [201]
    assert post(Client(), auth, body, key="key-1")["Idempotent-Replayed"] == "true"
    assert executions() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(3))
def test_two_simultaneous_first_requests_run_the_view_once(attempt):
    auth = bearer(CustomerFactory())
    body = {"name": "a", "outcome": "held"}
    start = threading.Barrier(2)
    results: list = []
    threads = [
        threading.Thread(target=_post_in_thread, args=(auth, body, "key-1", results, start))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    # Hold the winner in the view until the loser has had its answer.
    try:
        assert view_entered.wait(timeout=10)
        for _ in range(100):
            if len(results) == 1:
                break
            threading.Event().wait(0.05)
    finally:
        view_release.set()
        for thread in threads:
            thread.join(timeout=10)
    codes = sorted(r.status_code for r in results)
    assert codes == [201, 409], codes
    loser = next(r for r in results if r.status_code == 409)
    assert loser.json()["code"] == "idempotency_key_in_use"
    assert executions() == 1
    assert IdempotencyRecord.objects.get().status_code == 201


def test_a_key_left_in_progress_by_a_dead_request_is_taken_over_after_a_while(
    client, auth, customer, time_machine
):
    time_machine.move_to(timezone.now(), tick=False)
    body = {"name": "a"}
    assert post(client, auth, body, key="key-dead").status_code == 201
    # What a worker killed mid-request leaves: the key claimed, no answer stored (its
    # transaction rolled back).
    IdempotencyRecord.objects.filter(key="key-dead").update(status_code=None, response_body=None)
    assert post(client, auth, body, key="key-dead").status_code == 409  # it may still run
    time_machine.shift(121)
    assert post(client, auth, body, key="key-dead").status_code == 201
    assert executions() == 2
    replay = post(client, auth, body, key="key-dead")
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
