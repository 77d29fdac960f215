"""The portal's settings plus the bare baseline view the surge benchmark compares against."""

from portal.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
