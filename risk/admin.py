"""The risk checkpoint's back-office pages: rule sets, lists, and the risk panel on cases."""

from . import admin_cases, admin_rules  # noqa: F401  (each registers its pages)
