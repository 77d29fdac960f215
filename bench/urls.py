from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

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


urlpatterns = [
    path("_bench/insert", insert_one_row),
    path("_bench/signed-in-nothing", signed_in_nothing),
    path("", include("portal.urls")),
]
