from django.urls import path

from . import views

app_name = "activation"

urlpatterns = [
    path("", views.case_list, name="list"),
    path("<int:case_id>/", views.case_detail, name="detail"),
    path("<int:case_id>/retry/", views.retry, name="retry"),
    path("<int:case_id>/status/", views.case_status, name="status"),
    path("<int:case_id>/passkey-options/", views.passkey_options, name="passkey_options"),
]
