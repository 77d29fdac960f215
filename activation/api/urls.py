from django.urls import path

from .views import CoreEventsView

app_name = "api"

urlpatterns = [
    path("core/events/", CoreEventsView.as_view(), name="core-events"),
]
