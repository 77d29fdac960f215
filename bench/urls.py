from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template import engines
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from activation.models import ActivationCase
from api.customer.views import IsAppCustomer
from bench.tasks import write_one_row
from portal.queue import enqueue_on_commit
from portal.ratelimits import limit_retry_posts


@csrf_exempt
def insert_one_row(request: HttpRequest) -> HttpResponse:
    """The baseline: the least a request that writes can do, one INSERT."""
    write_one_row()
    return HttpResponse("ok")


@login_required
@limit_retry_posts
def signed_in_nothing(request: HttpRequest) -> HttpResponse:
    """What a customer's POST costs before any work: session, user, CSRF check, rate limits."""
    return redirect("activation:list")


@login_required
@limit_retry_posts
def floor_submit(request: HttpRequest) -> HttpResponse:
    """The submit at its floor (``bench/tasks.py``): the signed-in POST, one INSERT, the delivery
    queued after the commit."""
    with transaction.atomic():
        write_one_row()
        enqueue_on_commit("bench.tasks.floor_delivery")
    return redirect("activation:list")


class OneQueryView(APIView):
    """The API baseline: a DRF view, no authentication, one indexed read, JSON out."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request, case_id: int):
        return Response(ActivationCase.objects.filter(pk=case_id).values("id", "state").first())


# The web baselines' template: tiny, compiled once, rendered through the same engine as the pages.
TINY_PAGE = engines["django"].from_string(
    "<!DOCTYPE html><title>{{ case.id }}</title><p>{{ case.state }}</p>"
)


def one_query_page(request: HttpRequest, case_id: int) -> HttpResponse:
    """The web page baseline: signed out, one indexed read, a tiny template."""
    case = ActivationCase.objects.filter(pk=case_id).values("id", "state").first()
    return HttpResponse(TINY_PAGE.render({"case": case}, request))


def one_query_json(request: HttpRequest, case_id: int) -> JsonResponse:
    """The web JSON baseline: signed out, one indexed read, JSON out."""
    return JsonResponse(ActivationCase.objects.filter(pk=case_id).values("id", "state").first())


# The signed-in floors: what the status reads cannot shed without weakening who may read a case.
# Each is its bare view behind the real authentication (the browser's session from Redis and
# its user, through the whole middleware stack; the app's bearer token, its AppSession and user)
# with the same indexed read, narrowed to the signed-in customer's own cases as any real read
# must be.


def _own_case(request: HttpRequest, case_id: int) -> dict:
    """The customer's case's id and state, or 404."""
    case = (
        ActivationCase.objects.filter(pk=case_id, credit_line__customer=request.user)
        .values("id", "state")
        .first()
    )
    if case is None:
        raise Http404
    return case


@login_required
def signed_in_one_query_page(request: HttpRequest, case_id: int) -> HttpResponse:
    """The status page's floor: a signed-in customer, one indexed read, the tiny template."""
    return HttpResponse(TINY_PAGE.render({"case": _own_case(request, case_id)}, request))


@login_required
def signed_in_one_query_json(request: HttpRequest, case_id: int) -> JsonResponse:
    """The status JSON's floor: a signed-in customer, one indexed read, JSON out."""
    return JsonResponse(_own_case(request, case_id))


class SignedInOneQueryView(APIView):
    """The app status call's floor: the API's own token authentication (the default classes:
    the JWT, its unrevoked AppSession and user, read in one query) and the customer views'
    permission, then one indexed read, JSON out."""

    permission_classes = [IsAppCustomer]

    def get(self, request, case_id: int):
        return Response(_own_case(request, case_id))


urlpatterns = [
    path("_bench/insert", insert_one_row),
    path("_bench/floor-submit", floor_submit),
    path("_bench/drf-one-query/<int:case_id>", OneQueryView.as_view()),
    path("_bench/page-one-query/<int:case_id>", one_query_page),
    path("_bench/json-one-query/<int:case_id>", one_query_json),
    path("_bench/signed-in-page-one-query/<int:case_id>", signed_in_one_query_page),
    path("_bench/signed-in-json-one-query/<int:case_id>", signed_in_one_query_json),
    path("_bench/signed-in-drf-one-query/<int:case_id>", SignedInOneQueryView.as_view()),
    path("_bench/signed-in-nothing", signed_in_nothing),
    path("", include("portal.urls")),
]
