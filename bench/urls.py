from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def insert_one_row(request: HttpRequest) -> HttpResponse:
    """The baseline: the least a request that writes can do, one INSERT."""
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_probe (created_at) VALUES (now())")
    return HttpResponse("ok")


urlpatterns = [
    path("_bench/insert", insert_one_row),
    path("", include("portal.urls")),
]
