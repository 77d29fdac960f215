from django.test import override_settings

from activation.models import FailureReason
from activation.reasons import explain


@override_settings(VERIFICATION_CODE_TTL_SECONDS=600)
def test_an_expired_code_is_explained_with_the_configured_code_lifetime(client):
    explanation = explain(FailureReason.CODE_EXPIRED)

    assert "10 minutes" in str(explanation.what_happened)
    assert "within 10 minutes" in str(explanation.what_to_do)
    page = client.get("/help/").content.decode()
    assert "10 minutes" in page and "5 minutes" not in page


@override_settings(VERIFICATION_CODE_TTL_SECONDS=60)
def test_a_one_minute_code_lifetime_reads_in_the_singular():
    assert "within 1 minute." in str(explain(FailureReason.CODE_EXPIRED).what_to_do)
