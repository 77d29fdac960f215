from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template import engines
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from activation.models import ActivationCase
from portal.ratelimits import limit_retry_posts


@csrf_exempt
def insert_one_row(request: HttpRequest) -> HttpResponse:
    """The baseline: the least a request that writes can do, one INSERT."""
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_probe (created_at) VALUES (now())")
    return HttpResponse("ok")


@login_required
@limit_retry_posts
def signed_in_nothing(request: HttpRequest) -> HttpResponse:
    """What a customer's POST costs before any work: session, user, CSRF check, rate limits."""
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


urlpatterns = [
    path("_bench/insert", insert_one_row),
    path("_bench/drf-one-query/<int:case_id>", OneQueryView.as_view()),
    path("_bench/page-one-query/<int:case_id>", one_query_page),
    path("_bench/json-one-query/<int:case_id>", one_query_json),
    path("_bench/signed-in-nothing", signed_in_nothing),
    path("", include("portal.urls")),
]
