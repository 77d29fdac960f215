"""The API's JSON parser: what the database or the answer could not hold is refused with 400.

DRF's parser already turns malformed JSON into 400. On top of it: a body larger than any
request of ours needs is refused before it is read (413), JSON nested deep enough to exhaust
the parser's stack is a 400 (not a 500), and a NUL character, a lone UTF-16 surrogate or a NaN —
which PostgreSQL cannot store and the JSON renderer cannot echo back in an error — is a 400 too.
"""

from django.conf import settings
from django.utils.translation import gettext_lazy as _
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

from portal.json_checks import unstorable_json


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "body_too_large"
    default_detail = _("The request body is too large.")


class SafeJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        except ValueError:
            length = 0
        if length > settings.API_MAX_BODY_BYTES:
            raise BodyTooLarge()
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(_("The JSON nests too deep.")) from None
        except ParseError:
            # DRF's message quotes the Python error (limits, settings): say it plainly instead.
            raise ParseError(_("The request body is not valid JSON.")) from None
        problem = unstorable_json(data)
        if problem:
            raise ParseError(problem)
        return data
