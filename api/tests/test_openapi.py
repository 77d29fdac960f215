"""The OpenAPI document: valid, checked in as docs/openapi.yaml, and served with its readers."""

import difflib
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command

from api.schema import ERROR_COMPONENT, ErrorSerializer, error_responses

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "docs" / "openapi.yaml"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> str:
    """The document as ``make openapi`` writes it (validated, failing on any warning)."""
    path = tmp_path_factory.mktemp("openapi") / "openapi.yaml"
    call_command("spectacular", lang="en", validate=True, fail_on_warn=True, file=str(path))
    return path.read_text()


def test_docs_openapi_yaml_is_the_schema_the_code_generates(generated):
    checked_in = CHECKED_IN.read_text() if CHECKED_IN.exists() else ""
    if checked_in != generated:
        diff = "".join(
            difflib.unified_diff(
                checked_in.splitlines(keepends=True),
                generated.splitlines(keepends=True),
                "docs/openapi.yaml",
                "generated",
                n=2,
            )
        )
        pytest.fail(
            "docs/openapi.yaml differs from the schema the code generates; run `make openapi` "
            f"and commit the result.\n{diff[:4000]}"
        )


def test_every_operation_says_how_it_is_authenticated_and_how_it_fails(generated):
    schema = yaml.safe_load(generated)
    assert set(schema["components"]["securitySchemes"]) == {"appAccessToken", "staffToken"}
    for scheme in schema["components"]["securitySchemes"].values():
        assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    error = schema["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"code", "message", "details"}
    assert schema["paths"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            default = operation["responses"]["default"]["content"]["application/json"]
            assert default["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path)


def test_the_error_responses_helper_gives_the_envelope_for_each_status():
    responses = error_responses(400, 409, 429)
    assert set(responses) == {400, 409, 429}
    assert all(response.response is ErrorSerializer for response in responses.values())
    assert "Retry-After" in responses[429].description
    assert set(error_responses()) == {400, 401, 403}


def test_the_hand_written_error_component_is_what_the_serializer_generates(generated):
    """The hook's copy (for documents no view uses ErrorSerializer in) must not drift."""
    schema = yaml.safe_load(generated)
    from_serializer = schema["components"]["schemas"]["ErrorRequest"]  # the webhook's
    assert from_serializer == ERROR_COMPONENT


def test_the_core_callback_is_a_webhook_not_a_path(generated):
    schema = yaml.safe_load(generated)
    assert schema["openapi"].startswith("3.1")
    assert "/api/v1/core/events/" not in schema["paths"]
    webhook = schema["webhooks"]["coreEvent"]["post"]
    assert "webhook-signature" in webhook["description"]
    event = webhook["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert event == "#/components/schemas/CoreEvent"
    assert schema["components"]["schemas"]["CoreEvent"]["properties"]["type"]
    assert set(webhook["responses"]) == {"200", "400", "401"}


def test_the_schema_is_served_to_anyone(client):
    response = client.get("/api/v1/schema/")
    assert response.status_code == 200
    assert yaml.safe_load(response.content)["info"]["title"] == "Activation Rescue API"


@pytest.mark.parametrize("url", ["/api/v1/docs/", "/api/v1/redoc/"])
def test_the_readers_load_from_our_static_files(client, url):
    response = client.get(url)
    assert response.status_code == 200
    page = response.content.decode()
    assert "/static/drf_spectacular_sidecar/" in page
    assert "cdn" not in page.lower()
