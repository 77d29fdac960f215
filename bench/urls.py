from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
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


urlpatterns = [
    path("_bench/insert", insert_one_row),
    path("_bench/drf-one-query/<int:case_id>", OneQueryView.as_view()),
    path("_bench/signed-in-nothing", signed_in_nothing),
    path("", include("portal.urls")),
]
