import ssl

import pytest

from activation.core.client import CoreClient
from portal.http import tls_context
from verification.sms import HttpGatewayBackend, SmsDeliveryError


@pytest.fixture
def trust_store_loads(monkeypatch):
    """How often a client loads the trusted certificates (the expensive part of building one)."""
    tls_context.cache_clear()
    loads = []
    real = ssl.SSLContext.load_verify_locations

    def counting(self, *args, **kwargs):
        loads.append(args or kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    yield loads
    tls_context.cache_clear()


def test_core_clients_and_sms_sends_load_the_trust_store_once(trust_store_loads, settings):
    settings.SMS_GATEWAY_URL = "http://127.0.0.1:9/"  # nothing listens: the send fails fast
    settings.SMS_GATEWAY_RETRIES = 0
    for _delivery in range(3):
        with CoreClient.from_settings():
            pass
        with pytest.raises(SmsDeliveryError):
            HttpGatewayBackend().send(to="+8613800000000", body="code 123456")
    assert len(trust_store_loads) == 1
