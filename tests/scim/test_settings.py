"""Connection settings: https except on loopback, a Delinea token URL by default, SCIM_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from scim_pipeline.scim import ConfigurationError, ConnectionSettings
from scim_pipeline.scim.settings import ENV_VARIABLES, ClientSettings

SECRET = "Very-Secret-Value-123"


def test_token_url_defaults_to_the_delinea_endpoint_on_the_base_url_origin() -> None:
    settings = ConnectionSettings(base_url="https://acme.delinea.app/scim/v2/")
    assert settings.base_url == "https://acme.delinea.app/scim/v2"
    assert settings.token_url == "https://acme.delinea.app/identity/api/oauth2/token/xpmplatform"
    assert settings.scope == "xpm.platform"
    assert settings.profile == "delinea"
    assert settings.verify_tls is True
    assert settings.tls_verify is True


@pytest.mark.parametrize(
    ("field", "variable"),
    [("base_url", "SCIM_BASE_URL"), ("token_url", "SCIM_TOKEN_URL")],
)
def test_plain_http_is_refused_off_loopback_naming_the_variable(field: str, variable: str) -> None:
    values = {"base_url": "https://acme.delinea.app/scim/v2", field: "http://acme.delinea.app/x"}
    with pytest.raises(ConfigurationError, match=variable) as caught:
        ConnectionSettings(**values)
    assert "https" in str(caught.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/v2", "http://127.8.9.10/v2", "http://localhost/v2", "http://[::1]:9/v2"]
)
def test_plain_http_is_accepted_on_loopback(url: str) -> None:
    assert ConnectionSettings(base_url=url).base_url == url


def test_a_relative_or_odd_url_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="SCIM_BASE_URL"):
        ConnectionSettings(base_url="ftp://acme/scim")
    with pytest.raises(ConfigurationError, match="SCIM_BASE_URL"):
        ConnectionSettings(base_url="/scim/v2")


def test_from_env_reads_the_scim_variables() -> None:
    env = {
        "SCIM_BASE_URL": "https://acme.delinea.app/scim/v2",
        "SCIM_TOKEN_URL": "https://login.acme.test/token",
        "SCIM_CLIENT_ID": "svc-scim",
        "SCIM_CLIENT_SECRET": SECRET,
        "SCIM_SCOPE": "xpmheadless",
        "SCIM_PROFILE": "RFC7644",
        "SCIM_CONCURRENCY": "4",
        "SCIM_RATE_LIMIT": "12.5",
        "SCIM_TIMEOUT": "7",
    }
    settings = ConnectionSettings.from_env(env)
    assert settings.token_url == "https://login.acme.test/token"
    assert settings.client_id == "svc-scim"
    assert settings.client_secret is not None
    assert settings.client_secret.get_secret_value() == SECRET
    assert (settings.scope, settings.profile) == ("xpmheadless", "rfc7644")
    assert (settings.concurrency, settings.rate_limit, settings.timeout) == (4, 12.5, 7)


def test_from_env_reads_the_retry_pacing_and_limit_variables() -> None:
    env = {
        "SCIM_BASE_URL": "https://acme.delinea.app/scim/v2",
        "SCIM_MAX_ATTEMPTS": "3",
        "SCIM_MAX_RETRY_WAIT_S": "5",
        "SCIM_RETRY_BUDGET_S": "120",
        "SCIM_ADAPTIVE_PACING": "false",
        "SCIM_MAX_RESPONSE_BYTES": "1048576",
        "SCIM_MAX_PAGES": "10",
    }
    settings = ConnectionSettings.from_env(env)
    assert (settings.max_attempts, settings.max_retry_wait_s, settings.retry_budget_s) == (3, 5, 120)
    assert settings.adaptive_pacing is False
    assert (settings.max_response_bytes, settings.max_pages) == (1048576, 10)


def test_the_safe_defaults_of_the_limits() -> None:
    settings = ConnectionSettings(base_url="https://acme.delinea.app/scim/v2")
    assert settings.adaptive_pacing is True
    assert settings.retry_budget_s == 300
    assert settings.max_response_bytes == 32 * 1024 * 1024
    assert settings.max_pages == 20_000


@pytest.mark.parametrize("field", ["base_url", "token_url"])
def test_credentials_in_a_url_are_refused_without_echoing_them(field: str) -> None:
    values = {"base_url": "https://acme.delinea.app/scim/v2", field: "https://svc:pa55-word@acme.delinea.app/x"}
    with pytest.raises(ConfigurationError, match="credentials in the URL") as caught:
        ConnectionSettings(**values)
    assert "pa55-word" not in str(caught.value)
    assert "svc" not in str(caught.value)


def test_flags_override_the_environment_and_unset_flags_fall_through() -> None:
    env = {"SCIM_BASE_URL": "https://a.test/scim/v2", "SCIM_SCOPE": "from-env"}
    settings = ConnectionSettings.from_env(env, scope="from-flag", profile=None)
    assert settings.scope == "from-flag"
    assert settings.profile == "delinea"


def test_an_invalid_value_names_its_variable_without_echoing_it() -> None:
    env = {"SCIM_BASE_URL": "https://a.test/scim/v2", "SCIM_CONCURRENCY": "lots"}
    with pytest.raises(ConfigurationError, match="SCIM_CONCURRENCY") as caught:
        ConnectionSettings.from_env(env)
    assert "lots" not in str(caught.value)


def test_a_missing_base_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="SCIM_BASE_URL"):
        ConnectionSettings.from_env({})


def test_an_unknown_profile_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match="SCIM_PROFILE") as caught:
        ConnectionSettings(base_url="https://a.test/scim/v2", profile="okta")
    assert "'delinea' or 'rfc7644'" in str(caught.value)


def test_client_id_and_secret_go_together() -> None:
    with pytest.raises(ConfigurationError, match="SCIM_CLIENT_SECRET"):
        ConnectionSettings(base_url="https://a.test/scim/v2", client_id="svc")


def test_the_secret_never_shows_in_repr_or_str() -> None:
    settings = ConnectionSettings(base_url="https://a.test/scim/v2", client_id="svc", client_secret=SECRET)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert SECRET not in settings.model_dump_json()


def test_a_ca_bundle_is_handed_to_tls_verification(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = ConnectionSettings(base_url="https://a.test/scim/v2", ca_bundle=bundle)
    assert settings.tls_verify == str(bundle)
    assert settings.ca_bundle_path == bundle
    with pytest.raises(ConfigurationError, match="SCIM_CA_BUNDLE"):
        ConnectionSettings(base_url="https://a.test/scim/v2", ca_bundle=tmp_path / "missing.pem")


def test_blank_optional_values_count_as_unset() -> None:
    settings = ConnectionSettings(
        base_url="https://a.test/scim/v2", token_url="", client_id=" ", client_secret="", ca_bundle=""
    )
    assert settings.token_url == "https://a.test/identity/api/oauth2/token/xpmplatform"
    assert (settings.client_id, settings.client_secret, settings.ca_bundle) == (None, None, None)


def test_every_client_setting_is_read_from_its_scim_variable() -> None:
    """One declaration: each field of ClientSettings is SCIM_<FIELD>, and from_env reads every one of them."""
    assert {name: variable for name, variable in ENV_VARIABLES.items() if name in ClientSettings.model_fields} == {
        name: f"SCIM_{name.upper()}" for name in ClientSettings.model_fields
    }
    assert {"base_url", "client_secret"} <= set(ENV_VARIABLES)
    assert not {"verify_tls", "page_size"} & set(ENV_VARIABLES), "TLS verification is never turned off by a variable"


def test_from_env_reads_the_client_authentication_and_email_variables(tmp_path: Path) -> None:
    key = tmp_path / "client.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    env = {
        "SCIM_BASE_URL": "https://a.test/scim/v2",
        "SCIM_CLIENT_ID": "svc",
        "SCIM_TOKEN_AUTH": "Private_Key_JWT",
        "SCIM_CLIENT_KEY_FILE": str(key),
        "SCIM_CLIENT_KEY_ID": "key-2026",
        "SCIM_EMAIL_FORM": "single",
    }
    settings = ConnectionSettings.from_env(env)
    assert (settings.token_auth, settings.client_key_path) == ("private_key_jwt", key)
    assert settings.client_key_id == "key-2026"
    assert settings.email_form == "single"
    assert settings.uses_oauth


def test_private_key_jwt_names_the_missing_key_file() -> None:
    with pytest.raises(ConfigurationError, match="SCIM_CLIENT_KEY_FILE"):
        ConnectionSettings(base_url="https://a.test/scim/v2", client_id="svc", token_auth="private_key_jwt")
    with pytest.raises(ConfigurationError, match=r"SCIM_CLIENT_KEY_FILE .*no such file"):
        ConnectionSettings(
            base_url="https://a.test/scim/v2", client_id="svc", token_auth="private_key_jwt", client_key_file="/no/key"
        )


def test_an_unknown_token_auth_method_names_its_variable() -> None:
    with pytest.raises(ConfigurationError, match="SCIM_TOKEN_AUTH"):
        ConnectionSettings.from_env({"SCIM_BASE_URL": "https://a.test/scim/v2", "SCIM_TOKEN_AUTH": "mtls"})


def test_a_renamed_or_unknown_field_is_refused_rather_than_ignored() -> None:
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        ConnectionSettings(base_url="https://a.test/scim/v2", max_concurrency=4)


def test_the_client_settings_mix_into_a_pydantic_settings_model() -> None:
    """The pipeline's settings model inherits every client setting and reads it from the same variable."""

    class Pipeline(ClientSettings, BaseSettings):
        model_config = SettingsConfigDict(env_prefix="SCIM_", env_ignore_empty=True, extra="ignore", frozen=True)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCIM_CONCURRENCY", "3")
        patch.setenv("SCIM_TOKEN_AUTH", "client_secret_basic")
        patch.setenv("SCIM_PROFILE", "RFC7644")
        patch.setenv("SCIM_RATE_LIMIT", "12.5")
        settings = Pipeline()
    assert (settings.concurrency, settings.token_auth, settings.profile, settings.rate_limit) == (
        3,
        "client_secret_basic",
        "rfc7644",
        12.5,
    )
    assert set(ClientSettings.model_fields) <= set(Pipeline.model_fields)
