import pytest

from scim_pipeline.resources.target import ScimTargetResource, target_resource
from scim_pipeline.scim import ConfigurationError
from scim_pipeline.settings import PipelineSettings


def target_from_env(env: dict[str, str]) -> ScimTargetResource:
    return target_resource(PipelineSettings.from_env(env))


def test_the_secret_stays_out_of_the_resource_repr() -> None:
    target = ScimTargetResource(
        base_url="https://tenant.delinea.app/scim/v2", client_id="svc", client_secret="hunter2-x"
    )
    assert "hunter2-x" not in repr(target)
    assert target.connection_settings().client_secret is not None


def test_no_base_url_means_demo_mode() -> None:
    target = target_from_env({})
    assert target.demo_mode
    assert "DEMO MODE" in target.describe()


def test_the_secret_is_read_through_an_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIM_CLIENT_SECRET", "from-the-environment")
    env = {"SCIM_BASE_URL": "https://tenant.delinea.app/scim/v2", "SCIM_CLIENT_SECRET": "from-the-environment"}
    target = target_from_env(env)
    assert "from-the-environment" not in repr(target)


def test_plain_http_to_a_remote_host_is_refused_naming_the_variable() -> None:
    target = target_from_env({"SCIM_BASE_URL": "http://tenant.example.com/scim/v2"})
    with pytest.raises(ConfigurationError, match="SCIM_BASE_URL"):
        target.connection_settings()


def test_a_bad_number_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="SCIM_CONCURRENCY"):
        target_from_env({"SCIM_BASE_URL": "https://t.example.com/scim/v2", "SCIM_CONCURRENCY": "lots"})
