import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD = {
    "PORTAL_ENV": "production",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "ALLOWED_HOSTS": "rescue.example.com",
    "DATABASE_URL": "postgres://portal@db.internal/portal",
    "CORE_API_TOKEN": "a-real-token",
    "CORE_WEBHOOK_SECRET": "whsec_cmVhbC1zZWNyZXQtcmVhbC1zZWNyZXQ=",
    "DEBUG": "false",
    "CACHE_URL": "rediscache://127.0.0.1:6379/0",
    "WEBAUTHN_RP_ID": "rescue.example.com",
    "WEBAUTHN_ORIGINS": "https://rescue.example.com",
    "SMS_BACKEND": "verification.sms.HttpGatewayBackend",
    "TRUSTED_PROXY_COUNT": "1",
}


def load_settings(
    *, without: tuple[str, ...] = (), **overrides: str
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TEST_"))}
    env.update(GOOD)
    env.update(overrides)
    for name in without:
        env.pop(name, None)
    env["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_starts_with_real_settings():
    assert load_settings().returncode == 0


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ({"SECRET_KEY": ""}, "SECRET_KEY"),
        ({"SECRET_KEY": "x" * 64}, "SECRET_KEY"),
        ({"DEBUG": "true"}, "DEBUG"),
        ({"DATABASE_URL": "sqlite:///var/db.sqlite3"}, "SQLite"),
        ({"ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS"),
        ({"CORE_WEBHOOK_SECRET": ""}, "CORE_WEBHOOK_SECRET"),
        ({"CACHE_URL": "locmemcache://"}, "CACHE_URL"),
        ({"WEBAUTHN_RP_ID": ""}, "WEBAUTHN_RP_ID"),
        ({"WEBAUTHN_ORIGINS": ""}, "WEBAUTHN_ORIGINS"),
    ],
)
def test_production_refuses_insecure_defaults(override, complaint):
    result = load_settings(**override)
    assert result.returncode != 0
    assert "Refusing to start in production" in result.stderr
    assert complaint in result.stderr


@pytest.mark.parametrize(
    "origins", ["https://evil.example.net", "https://rescue.example.com.evil.net"]
)
def test_passkey_origins_must_be_on_the_relying_party_domain(origins):
    result = load_settings(WEBAUTHN_ORIGINS=origins)
    assert result.returncode != 0
    assert "is not on 'rescue.example.com'" in result.stderr


def test_production_refuses_to_guess_the_sms_backend():
    result = load_settings(without=("SMS_BACKEND",))
    assert result.returncode != 0
    assert "SMS_BACKEND must be set" in result.stderr


def test_production_refuses_to_guess_how_many_proxies_stand_in_front():
    result = load_settings(without=("TRUSTED_PROXY_COUNT",))
    assert result.returncode != 0
    assert "Refusing to start in production" in result.stderr
    assert "TRUSTED_PROXY_COUNT must be set" in result.stderr


def test_production_starts_with_no_proxies_when_that_is_said_explicitly():
    result = load_settings(TRUSTED_PROXY_COUNT="0")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("value", ["", "two", "-1", "1.5"])
def test_a_proxy_count_that_is_no_whole_number_is_refused_by_name(value):
    result = load_settings(TRUSTED_PROXY_COUNT=value)
    assert result.returncode != 0
    assert f"TRUSTED_PROXY_COUNT must be a whole number, 0 or more, not {value!r}" in result.stderr


def test_passkey_origins_must_use_https_but_on_localhost():
    result = load_settings(WEBAUTHN_ORIGINS="http://rescue.example.com")
    assert result.returncode != 0
    assert "'http://rescue.example.com' must use https" in result.stderr


def test_passkey_origins_may_be_subdomains():
    assert load_settings(WEBAUTHN_ORIGINS="https://app.rescue.example.com").returncode == 0


def test_production_passes_the_deploy_checks():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TEST_"))}
    env.update(GOOD, DJANGO_SETTINGS_MODULE="portal.settings")
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rate", ["30", "30/minute", "0/h", "ten/h", "30/10x"])
def test_a_malformed_rate_limit_stops_start_up_with_its_name(rate):
    result = load_settings(ACCOUNTS_SIGN_IN_RATE_PER_IP=rate)
    assert result.returncode != 0
    assert "ACCOUNTS_SIGN_IN_RATE_PER_IP must be a rate such as 30/10m" in result.stderr


@pytest.mark.parametrize("token", ["short", "a" * 31, "with a space" + "x" * 32, "é" * 40])
def test_a_weak_or_malformed_metrics_token_stops_start_up(token):
    result = load_settings(METRICS_TOKEN=token)
    assert result.returncode != 0
    assert "METRICS_TOKEN must be at least 32 printable ASCII characters" in result.stderr


def test_production_starts_with_a_metrics_token_or_without_one():
    assert load_settings(METRICS_TOKEN=secrets.token_urlsafe(32)).returncode == 0
    assert load_settings(without=("METRICS_TOKEN",)).returncode == 0


def test_a_heartbeat_threshold_shorter_than_two_beats_stops_start_up():
    result = load_settings(WORKER_HEARTBEAT_STALE_SECONDS="30")
    assert result.returncode != 0
    assert "WORKER_HEARTBEAT_STALE_SECONDS must be at least 60" in result.stderr
