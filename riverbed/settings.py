"""Riverbed's settings: every knob, read from ``RIVERBED_*`` environment variables.

This is the one place settings are read. Call :func:`load_settings` at run time
(in ``main()``, ``get_flow()``, a Dagster resource), never at import, so tests
can set the environment per test.

A wrong value fails fast with :class:`SettingsError`, whose message names the
environment variable and says what is wrong with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "RIVERBED_"


# Which job a Kafka client does; against the secured local cluster, also its user.
KafkaRole = Literal["admin", "producer", "flows"]

# Settings that hold secrets; each has a ``<name>_file`` twin.
_SECRETS = ("kafka_sasl_password", "kafka_ssl_key_password")


class SettingsError(ValueError):
    """A setting has a value Riverbed cannot use."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
        validate_default=True,
    )

    # --- where runtime state lives -------------------------------------------------
    home: Path = Field(
        Path(".riverbed"),
        description="Runtime state: kafka/, lake/, warehouse.duckdb, flows/, dagster/.",
    )

    # --- Kafka ---------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        None,
        description="An existing cluster's bootstrap servers. Unset: Riverbed runs its own "
        "cluster of RIVERBED_KAFKA_BROKERS nodes on 127.0.0.1 from RIVERBED_KAFKA_PORT on.",
    )
    kafka_brokers: int = Field(
        3, ge=1, le=9, description="Nodes of the local cluster (each a broker and a controller)."
    )
    kafka_port: int = Field(
        9092,
        ge=1024,
        le=65535,
        description="Client port of local node 1; node n takes port + n - 1.",
    )
    kafka_controller_port: int | None = Field(
        None,
        ge=1024,
        le=65535,
        description="KRaft controller port of local node 1 (default: after the last client port).",
    )
    kafka_metrics_port: int | None = Field(
        None,
        ge=1024,
        le=65535,
        description="Prometheus metrics port (JMX exporter) of local node 1; node n takes "
        "port + n - 1 (default: after the last controller port).",
    )
    kafka_version: str = Field("4.4.0", description="Apache Kafka version fetched from Maven.")
    kafka_dist: Path | None = Field(
        None,
        description="A directory holding Kafka's already fetched libs/, used as it is (a "
        "shared cache for CI or tests). Unset: RIVERBED_HOME/kafka/dist/<version>, fetched once.",
    )
    kafka_heap: str = Field("512m", pattern=r"^\d+[mMgG]$", description="Local broker's -Xmx.")
    kafka_secure: bool = Field(
        False,
        description="Run the local cluster secured: SASL/SCRAM-SHA-512 over TLS, a user and "
        "ACLs per role (riverbed.kafka_security). Fixed when the cluster is formatted.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = Field(None, description="e.g. PLAIN, SCRAM-SHA-512")
    kafka_sasl_username: str | None = None
    # Secrets: SecretStr keeps them out of reprs, logs and Dagster metadata; the *_file
    # twin is what child processes get (see to_env).
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = Field(
        None, description="A file holding the SASL password (its first line)."
    )
    kafka_ssl_ca_location: str | None = None
    kafka_ssl_certificate_location: str | None = None
    kafka_ssl_key_location: str | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_key_password_file: Path | None = Field(
        None, description="A file holding the client key's password (its first line)."
    )
    kafka_replication_factor: int | None = Field(
        None,
        ge=1,
        le=32,
        description="Replication factor of declared topics (default: min(3, brokers)).",
    )

    # --- producer ------------------------------------------------------------------
    producer_rate: float = Field(200.0, gt=0, description="Default events/s of `produce`.")
    producer_fraud_share: float = Field(0.02, ge=0, le=1)
    producer_late_share: float = Field(0.01, ge=0, le=1)
    producer_duplicate_share: float = Field(0.01, ge=0, le=1)
    producer_invalid_share: float = Field(0.005, ge=0, le=1)
    producer_cards: int = Field(20_000, ge=1)
    producer_merchants: int = Field(500, ge=1)

    # --- flows ---------------------------------------------------------------------
    consumer_group: str = Field("riverbed.payments", min_length=1)
    allowed_lateness_s: float = Field(30.0, ge=0)
    flush_interval_s: float = Field(5.0, gt=0)
    snapshot_interval_s: float = Field(
        120.0,
        gt=0,
        description="Bytewax epochs: how often a flow takes its recovery snapshot (whole "
        "seconds, at least 1). A snapshot pickles all of the flow's state and stalls it "
        "meanwhile (~0.9 s at 5,000 events/s over 125,000 cards); a restart replays at "
        "most this much input.",
    )
    flow_transaction_timeout_s: float = Field(
        60.0,
        ge=1,
        le=900,
        description="transaction.timeout.ms of the flow's Kafka outputs: how long the broker "
        "waits for a stalled flow's open transaction before it aborts it and fences it.",
    )
    flow_metrics: bool = Field(
        True, description="Serve the flow's metrics to Prometheus (flows.kit.metrics)."
    )
    flush_rows: int = Field(50_000, ge=1)
    window_s: int = Field(60, ge=1)
    fraud_velocity_count: int = Field(5, ge=2)
    fraud_velocity_window_s: float = Field(60.0, gt=0)
    fraud_spike_min_amount: float = Field(500.0, gt=0)
    fraud_spike_factor: float = Field(5.0, gt=1)
    fraud_travel_kmh: float = Field(900.0, gt=0)
    fraud_travel_min_km: float = Field(
        50.0, ge=0, description="Closer than this is one place: no travel alert."
    )
    fraud_testing_count: int = Field(3, ge=2)
    fraud_testing_max_amount: float = Field(2.0, gt=0)
    fraud_testing_window_s: float = Field(600.0, gt=0)
    fraud_profile_sigmas: float = Field(
        4.0,
        gt=0,
        description="profile_amount: an amount more than this many standard deviations "
        "above the card's profiled mean (payments.card_profiles) ...",
    )
    fraud_profile_min_factor: float = Field(
        3.0, ge=1, description="... and at least this many times that mean."
    )

    # --- the IoT flow ----------------------------------------------------------------
    iot_window_s: int = Field(300, ge=1, description="Device windows are this long ...")
    iot_hop_s: int = Field(
        60, ge=1, description="... and one starts every this many seconds (hopping windows)."
    )
    iot_baseline_sigmas: float = Field(
        4.0,
        gt=0,
        description="baseline: a reading more than this many standard deviations from its "
        "device's baseline for the hour of day (iot.device_baselines).",
    )
    iot_baseline_min_readings: int = Field(
        10, ge=2, description="A baseline hour judges readings once it holds this many."
    )
    iot_flatline_readings: int = Field(
        30, ge=3, description="flatline: this many identical readings in a row of a measurement."
    )
    iot_dropout_s: float = Field(
        120.0, gt=0, description="dropout: a device's event times further apart than this."
    )
    iot_join_interval_s: float = Field(
        30.0, gt=0, description="Room join: readings of one room this close in event time."
    )
    iot_occupied_lux: float = Field(
        250.0, ge=0, description="Room occupied: light at least this ... (lux)"
    )
    iot_occupied_co2_ppm: float = Field(600.0, ge=0, description="... and CO2 at least this (ppm).")

    # --- control plane -------------------------------------------------------------
    dagster_port: int = Field(3000, ge=1024, le=65535)
    prometheus_port: int = Field(9090, ge=1024, le=65535, description="Riverbed's Prometheus.")
    dashboard_port: int = Field(8050, ge=1024, le=65535, description="The live dashboard.")
    lag_threshold: int = Field(100_000, ge=0, description="Consumer lag that counts as behind.")
    flow_restart_limit: int = Field(
        5, ge=0, description="Redeploys of a dead flow, then it stays down."
    )
    flow_restart_backoff_s: float = Field(10.0, gt=0, description="First redeploy delay; doubles.")
    freshness_threshold_s: float = Field(120.0, gt=0)
    lake_vacuum_retention_h: float = Field(
        24.0,
        ge=1,
        description="Hours a data file replaced by compaction is kept for readers before "
        "vacuum deletes it; longer than the longest read of the lake.",
    )
    warehouse_lock_timeout_s: float = Field(
        300.0,
        gt=0,
        description="How long a warehouse build (dbt) waits for another build's writer lock "
        "before it fails naming the holder (dbt/profiles.yml reads it).",
    )
    lake_compact_target_mb: int = Field(
        128, ge=1, description="Compaction writes files of about this size."
    )
    profile_window_days: int = Field(
        30,
        ge=1,
        description="Card profiles cover the transactions of this many days up to the "
        "lake's newest event.",
    )
    profile_min_txns: int = Field(
        5, ge=1, description="A card gets a profile once it has this many transactions."
    )
    baseline_window_days: int = Field(
        14,
        ge=1,
        description="Device baselines cover the readings of this many days up to the "
        "lake's newest reading.",
    )
    baseline_min_readings: int = Field(
        30,
        ge=1,
        description="A device gets a baseline once it has this many readings in the window.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_shape(cls, v: str | None) -> str | None:
        if v is None or v.strip() == "":
            return None
        for server in v.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {server.strip()!r}")
        return v.strip()

    @model_validator(mode="after")
    def _hops_tile_windows(self) -> Settings:
        if self.iot_window_s % self.iot_hop_s:
            raise ValueError(
                f"RIVERBED_IOT_WINDOW_S ({self.iot_window_s}) must be a whole number of "
                f"RIVERBED_IOT_HOP_S ({self.iot_hop_s}): every window starts on a hop"
            )
        return self

    @model_validator(mode="after")
    def _sasl_complete(self) -> Settings:
        password = self.kafka_sasl_password or self.kafka_sasl_password_file
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and password
        ):
            raise ValueError(
                "RIVERBED_KAFKA_SECURITY_PROTOCOL is SASL_*: set RIVERBED_KAFKA_SASL_MECHANISM, "
                "RIVERBED_KAFKA_SASL_USERNAME and RIVERBED_KAFKA_SASL_PASSWORD_FILE (or "
                "RIVERBED_KAFKA_SASL_PASSWORD)"
            )
        return self

    @model_validator(mode="after")
    def _secrets_readable(self) -> Settings:
        for name in _SECRETS:
            path: Path | None = getattr(self, f"{name}_file")
            if path is None:
                continue
            if getattr(self, name) is not None:
                raise ValueError(
                    f"{ENV_PREFIX}{name.upper()} and {ENV_PREFIX}{name.upper()}_FILE are both "
                    "set: keep one (the file, so the secret stays out of environments)"
                )
            if not path.is_file() or not os.access(path, os.R_OK):
                raise ValueError(
                    f"{ENV_PREFIX}{name.upper()}_FILE={str(path)!r}: no readable file there"
                )
        return self

    @model_validator(mode="after")
    def _secure_is_local(self) -> Settings:
        if not self.kafka_secure:
            return self
        if not self.manages_local_broker:
            raise ValueError(
                "RIVERBED_KAFKA_SECURE secures the cluster Riverbed runs, but "
                "RIVERBED_KAFKA_BOOTSTRAP names one of yours: describe its security with "
                "RIVERBED_KAFKA_SECURITY_PROTOCOL, RIVERBED_KAFKA_SASL_* and "
                "RIVERBED_KAFKA_SSL_* instead"
            )
        if self.kafka_security_protocol != "PLAINTEXT":
            raise ValueError(
                "RIVERBED_KAFKA_SECURE sets the local cluster's security itself: unset "
                "RIVERBED_KAFKA_SECURITY_PROTOCOL"
            )
        return self

    @model_validator(mode="after")
    def _local_ports_apart(self) -> Settings:
        if not self.manages_local_broker:
            return self
        n = self.kafka_brokers
        ranges = {
            "RIVERBED_KAFKA_PORT": ("client", self.kafka_port),
            "RIVERBED_KAFKA_CONTROLLER_PORT": ("controller", self.controller_port),
            "RIVERBED_KAFKA_METRICS_PORT": ("metrics", self.metrics_port),
        }

        def shown(first: int) -> str:
            return f"{first}-{first + n - 1}"

        for variable, (role, first) in ranges.items():
            if first + n - 1 > 65535:
                raise ValueError(
                    f"{variable}={first}: {n} nodes need {role} ports {shown(first)}, "
                    "beyond 65535; set it lower"
                )
        seen = list(ranges.items())
        for i, (variable, (role, first)) in enumerate(seen):
            for _, (other_role, other) in seen[:i]:
                if abs(first - other) < n:
                    raise ValueError(
                        f"{variable}={first}: {role} ports {shown(first)} overlap the "
                        f"{other_role} ports {shown(other)} of the {n} local nodes; set it "
                        "apart, or leave it unset"
                    )
        return self

    # --- derived -------------------------------------------------------------------
    @property
    def manages_local_broker(self) -> bool:
        """True when Riverbed runs its own broker (no external cluster was named)."""
        return self.kafka_bootstrap is None

    @property
    def bootstrap_servers(self) -> str:
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        ports = range(self.kafka_port, self.kafka_port + self.kafka_brokers)
        return ",".join(f"127.0.0.1:{port}" for port in ports)

    @property
    def controller_port(self) -> int:
        """Controller port of local node 1; node n takes this + n - 1."""
        return self.kafka_controller_port or self.kafka_port + self.kafka_brokers

    @property
    def metrics_port(self) -> int:
        """Metrics port of local node 1; node n takes this + n - 1."""
        return self.kafka_metrics_port or self.controller_port + self.kafka_brokers

    @property
    def kafka_dir(self) -> Path:
        return self.home / "kafka"

    @property
    def lake_dir(self) -> Path:
        return self.home / "lake"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def warehouse_read_path(self) -> Path:
        """The read-only copy of the warehouse each build publishes, for people and dashboards."""
        return self.home / "warehouse-read.duckdb"

    @property
    def flows_dir(self) -> Path:
        return self.home / "flows"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def secure_local(self) -> bool:
        """Riverbed runs the cluster, secured (riverbed.kafka_security)."""
        return self.kafka_secure and self.manages_local_broker

    def kafka_client_config(self, role: KafkaRole = "admin") -> dict[str, str]:
        """librdkafka settings shared by every client: servers and security.

        ``role`` says which job the client does. Against the secured local cluster each
        role logs in as its own user, whose ACLs allow that job only; otherwise every
        role uses the RIVERBED_KAFKA_SASL_* user, if any.
        """
        if self.secure_local:
            from riverbed import kafka_security  # the secrets live with the cluster

            conf = {
                "bootstrap.servers": self.bootstrap_servers,
                **kafka_security.client_config(self, self.kafka_sasl_username or role),
            }
            given = self.secret("kafka_sasl_password")  # an operator's own credentials
            return conf if given is None else {**conf, "sasl.password": given}
        if self.manages_local_broker and self._local_cluster_is_secure():
            raise SettingsError(
                f"the local Kafka cluster in {self.kafka_dir} runs secured: set "
                "RIVERBED_KAFKA_SECURE=true for every Riverbed command that uses it"
            )
        conf: dict[str, str] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        optional = {
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "sasl.password": self.secret("kafka_sasl_password"),
            "ssl.ca.location": self.kafka_ssl_ca_location,
            "ssl.certificate.location": self.kafka_ssl_certificate_location,
            "ssl.key.location": self.kafka_ssl_key_location,
            "ssl.key.password": self.secret("kafka_ssl_key_password"),
        }
        conf.update({k: v for k, v in optional.items() if v})
        return conf

    def _local_cluster_is_secure(self) -> bool:
        # riverbed.broker records how the cluster was formatted; a plaintext client
        # would otherwise only time out against its TLS listeners.
        try:
            return bool(json.loads((self.kafka_dir / "cluster.json").read_text()).get("secure"))
        except (OSError, ValueError):
            return False

    def secret(self, name: str) -> str | None:
        """A secret's value, given directly or read from its ``*_file``."""
        value: SecretStr | None = getattr(self, name)
        if value is not None:
            return value.get_secret_value()
        path: Path | None = getattr(self, f"{name}_file")
        if path is None:
            return None
        lines = path.read_text().splitlines()
        return lines[0] if lines else ""

    def to_env(self) -> dict[str, str]:
        """These settings as ``RIVERBED_*`` variables, for a child process to read back.

        Secrets are never among them: a child's environment is readable by every process
        of the user (/proc/<pid>/environ) and ends up in crash reports. A secret given as
        a file travels as that file's path; one given directly stops here, with what to do.
        """
        env = {}
        for name, value in self.model_dump(exclude_none=True).items():
            if name in _SECRETS:
                raise SettingsError(
                    f"{ENV_PREFIX}{name.upper()} is set, and Riverbed does not put secrets "
                    "in the environment of the processes it starts (flows, Dagster). Write "
                    "it to a file only you can read and set "
                    f"{ENV_PREFIX}{name.upper()}_FILE to its path instead."
                )
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return env


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise :class:`SettingsError` naming the bad one."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if not err["loc"]:  # a rule across settings: its message names them
                problems.append(err["msg"].removeprefix("Value error, "))
                continue
            field = ".".join(str(p) for p in err["loc"])
            problems.append(f"{ENV_PREFIX}{field.upper()}={err.get('input')!r}: {err['msg']}")
        raise SettingsError("invalid Riverbed settings:\n  " + "\n  ".join(problems)) from None
