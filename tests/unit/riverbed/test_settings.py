from pathlib import Path

import pytest

from riverbed.settings import SettingsError, load_settings


def test_defaults_manage_a_local_cluster_of_three(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.manages_local_broker
    assert settings.kafka_brokers == 3
    assert settings.bootstrap_servers == "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094"
    assert settings.controller_port == 9095
    assert settings.kafka_replication_factor is None  # min(3, brokers), see kafka_admin
    assert settings.home == (Path.cwd() / ".riverbed").resolve()
    assert settings.lake_dir == settings.home / "lake"


def test_environment_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVERBED_KAFKA_PORT", "19500")
    monkeypatch.setenv("RIVERBED_KAFKA_BROKERS", "1")
    monkeypatch.setenv("RIVERBED_ALLOWED_LATENESS_S", "12.5")
    settings = load_settings()
    assert settings.bootstrap_servers == "127.0.0.1:19500"
    assert settings.controller_port == 19501
    assert settings.allowed_lateness_s == 12.5


def test_external_bootstrap_means_no_local_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVERBED_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    settings = load_settings()
    assert not settings.manages_local_broker
    assert settings.kafka_client_config()["bootstrap.servers"] == "kafka-1:9092,kafka-2:9092"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("RIVERBED_KAFKA_PORT", "abc", "RIVERBED_KAFKA_PORT='abc'"),
        ("RIVERBED_KAFKA_PORT", "80", "RIVERBED_KAFKA_PORT='80'"),
        ("RIVERBED_KAFKA_BOOTSTRAP", "no-port-here", "RIVERBED_KAFKA_BOOTSTRAP"),
        ("RIVERBED_FLUSH_INTERVAL_S", "0", "RIVERBED_FLUSH_INTERVAL_S"),
        ("RIVERBED_KAFKA_HEAP", "lots", "RIVERBED_KAFKA_HEAP"),
        ("RIVERBED_LOG_LEVEL", "LOUD", "RIVERBED_LOG_LEVEL"),
        ("RIVERBED_KAFKA_BROKERS", "0", "RIVERBED_KAFKA_BROKERS"),
        (
            "RIVERBED_KAFKA_CONTROLLER_PORT",
            "9093",
            "RIVERBED_KAFKA_CONTROLLER_PORT=9093: .*overlap",
        ),
        ("RIVERBED_KAFKA_PORT", "65534", "RIVERBED_KAFKA_PORT=65534: .*beyond 65535"),
    ],
)
def test_a_wrong_setting_fails_fast_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=expected):
        load_settings()


def test_sasl_needs_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVERBED_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(SettingsError, match="RIVERBED_KAFKA_SASL_USERNAME"):
        load_settings()


def external_sasl_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """An external SASL_SSL cluster with SCRAM, a password still to give."""
    monkeypatch.setenv("RIVERBED_KAFKA_BOOTSTRAP", "broker:9093")
    monkeypatch.setenv("RIVERBED_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("RIVERBED_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("RIVERBED_KAFKA_SASL_USERNAME", "riverbed")


def test_security_settings_pass_through_to_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    external_sasl_cluster(monkeypatch)
    monkeypatch.setenv("RIVERBED_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("RIVERBED_KAFKA_SSL_CA_LOCATION", "/etc/ca.pem")
    conf = load_settings().kafka_client_config()
    assert conf == {
        "bootstrap.servers": "broker:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "riverbed",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ca.pem",
    }


def test_to_env_round_trips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    original = load_settings(home=tmp_path, kafka_port=19999, flush_rows=7)
    for key, value in original.to_env().items():
        monkeypatch.setenv(key, value)
    assert load_settings() == original


def test_a_password_given_directly_never_reaches_a_child_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    external_sasl_cluster(monkeypatch)
    monkeypatch.setenv("RIVERBED_KAFKA_SASL_PASSWORD", "s3cret")
    settings = load_settings()
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())
    with pytest.raises(SettingsError, match="RIVERBED_KAFKA_SASL_PASSWORD_FILE"):
        settings.to_env()


def test_a_password_file_travels_as_its_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    external_sasl_cluster(monkeypatch)
    monkeypatch.setenv("RIVERBED_KAFKA_SASL_PASSWORD_FILE", str(secret))
    settings = load_settings()
    assert settings.kafka_client_config()["sasl.password"] == "s3cret"
    env = settings.to_env()
    assert env["RIVERBED_KAFKA_SASL_PASSWORD_FILE"] == str(secret)
    assert not any("s3cret" in value for value in env.values())


def test_a_missing_password_file_or_two_passwords_fail_fast(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RIVERBED_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(SettingsError, match=r"RIVERBED_KAFKA_SASL_PASSWORD_FILE=.*no readable"):
        load_settings()
    (tmp_path / "absent").write_text("x\n")
    monkeypatch.setenv("RIVERBED_KAFKA_SASL_PASSWORD", "y")
    with pytest.raises(SettingsError, match="both set"):
        load_settings()


def test_secure_is_for_the_local_cluster_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVERBED_KAFKA_SECURE", "true")
    monkeypatch.setenv("RIVERBED_KAFKA_BOOTSTRAP", "broker:9093")
    with pytest.raises(SettingsError, match="RIVERBED_KAFKA_SECURE secures the cluster Riverbed"):
        load_settings()
