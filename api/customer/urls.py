from django.urls import path

from . import views

urlpatterns = [
    path("auth/token/", views.SignInView.as_view(), name="sign-in"),
    path("auth/refresh/", views.RefreshView.as_view(), name="refresh"),
    path("auth/sessions/", views.SessionsView.as_view(), name="sessions"),
    path("auth/sessions/<int:session_id>/", views.SessionView.as_view(), name="session"),
    path("credit-lines/", views.CreditLinesView.as_view(), name="credit-lines"),
    path("cases/<int:case_id>/", views.CaseView.as_view(), name="case"),
    path("cases/<int:case_id>/channels/", views.ChannelsView.as_view(), name="channels"),
    path("cases/<int:case_id>/codes/", views.CodesView.as_view(), name="codes"),
    path("cases/<int:case_id>/verification/", views.VerificationView.as_view(), name="verify"),
    path(
        "cases/<int:case_id>/passkey-options/",
        views.PasskeyOptionsView.as_view(),
        name="passkey-options",
    ),
]
