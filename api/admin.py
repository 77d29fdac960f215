from django.utils.translation import gettext_lazy as _

from portal.backoffice import backoffice

from .admin_views import api_tokens

backoffice.register_page("api-tokens/", api_tokens, name="api-tokens", menu=_("API tokens"))
