"""``manage.py check --deploy``: the mistakes that only matter in production are named."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks

XFRAME = "django.middleware.clickjacking.XFrameOptionsMiddleware"


def deploy_messages(prefix: str = "django_watcher_auth.") -> dict[str, str]:
    found = checks.run_checks(include_deployment_checks=True)
    return {m.id: m.msg for m in found if m.id and m.id.startswith(prefix)}


@pytest.fixture
def production(settings: Any) -> Any:
    """A production-like configuration every deploy check passes."""
    settings.DEBUG = False
    settings.WATCHER_AUTH = {"URL": "https://watcher.example.com", "STORE": "db"}
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, XFRAME]
    return settings


def test_a_production_configuration_passes(production: Any) -> None:
    assert deploy_messages() == {}


def test_tls_verification_off_is_named(production: Any) -> None:
    production.WATCHER_AUTH = {**production.WATCHER_AUTH, "VERIFY_TLS": False}
    assert deploy_messages() == {
        "django_watcher_auth.W004": "WATCHER_AUTH['VERIFY_TLS'] is False: Watcher's certificate "
        "is not checked, so anyone on the network path can read Watcher passwords and tokens."
    }


def test_plain_http_to_another_machine_is_named(production: Any) -> None:
    production.WATCHER_AUTH = {**production.WATCHER_AUTH, "URL": "http://watcher.example.com"}
    assert deploy_messages() == {
        "django_watcher_auth.W001": "WATCHER_AUTH['URL'] uses plain http:// to "
        "watcher.example.com: Watcher passwords and tokens would cross the network unencrypted."
    }


def test_plain_http_to_this_machine_is_fine(production: Any) -> None:
    production.WATCHER_AUTH = {**production.WATCHER_AUTH, "URL": "http://127.0.0.1:8080"}
    assert deploy_messages() == {}


def test_a_per_process_store_is_named(production: Any) -> None:
    production.WATCHER_AUTH = {**production.WATCHER_AUTH, "STORE": "memory"}
    messages = deploy_messages()
    assert list(messages) == ["django_watcher_auth.W002"]
    assert messages["django_watcher_auth.W002"].startswith(
        "The Watcher token store keeps tokens inside one process"
    )


def test_debug_with_a_service_account_is_named(production: Any) -> None:
    production.DEBUG = True
    production.WATCHER_AUTH = {
        **production.WATCHER_AUTH,
        "SERVICE_ACCOUNT": {"USERNAME": "bob", "PASSWORD": "hunter2"},
    }
    messages = deploy_messages()
    assert messages == {
        "django_watcher_auth.W005": "DEBUG is on while a Watcher service account is configured: "
        "debug pages and logs could show the site's settings to visitors."
    }
    assert "hunter2" not in str(checks.run_checks(include_deployment_checks=True))


def test_debug_without_a_service_account_is_not_this_checks_business(production: Any) -> None:
    production.DEBUG = True
    production.WATCHER_AUTH = {**production.WATCHER_AUTH, "SERVICE_ACCOUNT": False}
    assert "django_watcher_auth.W005" not in deploy_messages()


def test_pages_that_other_sites_may_frame_are_named(production: Any) -> None:
    production.MIDDLEWARE = [m for m in production.MIDDLEWARE if m != XFRAME]
    assert deploy_messages() == {
        "django_watcher_auth.W006": "Other sites may frame the Watcher connect and disconnect "
        f"pages (clickjacking): {XFRAME} is not in MIDDLEWARE and no Content Security Policy "
        "sets frame-ancestors."
    }


def test_a_csp_with_frame_ancestors_also_protects_the_pages(production: Any) -> None:
    production.MIDDLEWARE = [m for m in production.MIDDLEWARE if m != XFRAME]
    production.MIDDLEWARE = [*production.MIDDLEWARE, "csp.middleware.CSPMiddleware"]
    production.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"frame-ancestors": ["'none'"]}}
    assert "django_watcher_auth.W006" not in deploy_messages()


def test_the_deploy_checks_stay_quiet_without_deploy(production: Any) -> None:
    production.WATCHER_AUTH = {**production.WATCHER_AUTH, "VERIFY_TLS": False}
    production.MIDDLEWARE = [m for m in production.MIDDLEWARE if m != XFRAME]
    ids = {m.id for m in checks.run_checks()}
    assert not {"django_watcher_auth.W004", "django_watcher_auth.W006"} & ids
