"""Secured mode of the local cluster: TLS, SCRAM users and ACLs that Riverbed makes and keeps.

``riverbed kafka start --secure`` (``RIVERBED_KAFKA_SECURE=true``) runs the local
cluster so that nothing talks to it without TLS and a password, and each Riverbed
part may do its own job only:

- clients and the brokers among themselves use each node's one client listener,
  ``SASL_SSL`` with SCRAM-SHA-512;
- the KRaft controllers talk over TLS with both sides showing the nodes' certificate
  (mutual TLS: SCRAM users live in the metadata the controllers serve, so they
  cannot log in the controllers themselves);
- Kafka's ``StandardAuthorizer`` denies what no ACL allows.

Users, and what their ACLs allow:

==========  ==================================================================
admin       super user: the brokers among themselves, topics, ACLs, health, lag
producer    write ``payments.transactions`` and ``iot.readings``, and the dead-letter
            topics (``riverbed replay`` sends rows that break the contract there)
flows       read ``payments.transactions``, ``iot.readings`` and the batch layer's
            tables; write the alerts, anomalies and dead-letter topics; its consumer
            group; transactional ids under its group's name
==========  ==================================================================

Every Riverbed client picks its user by role (``Settings.kafka_client_config``),
reading the password from its file at the moment it connects: no password is in
an environment variable, a command line or a log line.

Files, in ``RIVERBED_HOME/kafka/secrets/`` (the directory 0700, every file 0600)::

    ca.pem           the CA certificate clients trust (librdkafka's ssl.ca.location)
    ca.key           the CA's key, kept to sign the nodes' certificate again
    node.p12         the nodes' key and certificate (127.0.0.1, localhost), PKCS#12
    node.p12.pass    that keystore's password
    users/<name>     each user's password

The CA and certificates are made with the ``cryptography`` package rather than
``keytool`` or ``openssl``: in-process, with no password on any command line, and
with the same code on every machine. The first user (admin) is written into the
cluster's metadata when its storage is formatted (``kafka-storage format
--add-scram``, its arguments in a file only this user can read); the others and the
ACLs are set through the admin API on every secured start, so a start also repairs
them.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from riverbed.files import write_atomically
from riverbed.settings import Settings
from riverbed.topics import (
    IOT_ANOMALIES,
    IOT_DEVICE_BASELINES,
    IOT_DLQ,
    IOT_READINGS,
    PAYMENTS_ALERTS,
    PAYMENTS_CARD_PROFILES,
    PAYMENTS_DLQ,
    PAYMENTS_TRANSACTIONS,
)

MECHANISM = "SCRAM-SHA-512"
USERS = ("admin", "producer", "flows")
# The principal of the nodes' certificate, as Kafka names it (its subject's DN).
NODE_PRINCIPAL = "User:CN=riverbed-node"
_SCRAM_ITERATIONS = 8192
_VALID_DAYS = 3650
_TIMEOUT_S = 30.0


class SecurityError(RuntimeError):
    """The secured cluster's secrets or ACLs could not be made or applied; says why."""


@dataclass(frozen=True)
class Secrets:
    """Where the secured cluster's files are."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def keystore(self) -> Path:
        return self.dir / "node.p12"

    @property
    def keystore_password(self) -> Path:
        return self.dir / "node.p12.pass"

    def password_file(self, user: str) -> Path:
        return self.dir / "users" / user

    def password(self, user: str) -> str:
        path = self.password_file(user)
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            raise SecurityError(
                f"no password for Kafka user {user!r} in {path}: the secured cluster's users "
                f"are {', '.join(USERS)}, made by `riverbed kafka start --secure`"
            ) from None


def secrets_of(settings: Settings) -> Secrets:
    return Secrets(settings.kafka_dir / "secrets")


# --- clients -----------------------------------------------------------------------------


def client_config(settings: Settings, user: str) -> dict[str, str]:
    """librdkafka's security settings for ``user`` on the secured local cluster."""
    found = secrets_of(settings)
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": MECHANISM,
        "sasl.username": user,
        "sasl.password": found.password(user),
        "ssl.ca.location": str(found.ca_cert),
    }


# --- the nodes ---------------------------------------------------------------------------


def ensure_secrets(settings: Settings) -> Secrets:
    """Make whatever of the CA, the nodes' keystore and the passwords is missing."""
    found = secrets_of(settings)
    _private_dir(found.dir)
    _private_dir(found.dir / "users")
    if not (found.ca_cert.is_file() and found.ca_key.is_file()):
        _make_ca(found)
        found.keystore.unlink(missing_ok=True)  # signed by the CA it replaces
    if not (found.keystore.is_file() and found.keystore_password.is_file()):
        _make_node_keystore(found)
    for user in USERS:
        if not found.password_file(user).is_file():
            write_atomically(
                found.password_file(user), secrets.token_urlsafe(24) + "\n", private=True
            )
    return found


def server_properties(settings: Settings, client_port: int, controller_port: int) -> dict[str, str]:
    """What a node of the secured cluster adds to (and overrides in) its configuration."""
    found = secrets_of(settings)
    keystore_password = found.keystore_password.read_text().strip()
    admin = found.password("admin").replace("\\", "\\\\").replace('"', '\\"')
    return {
        "listeners": f"SASL_SSL://127.0.0.1:{client_port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{client_port}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="admin" password="{admin}";'
        ),
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(found.keystore),
        "ssl.keystore.password": keystore_password,
        "ssl.key.password": keystore_password,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(found.ca_cert),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:admin;{NODE_PRINCIPAL}",
    }


def format_arguments(settings: Settings) -> list[str]:
    """``kafka-storage format`` arguments that write the admin user into the metadata."""
    password = secrets_of(settings).password("admin")
    return ["--add-scram", f"{MECHANISM}=[name=admin,password={password}]"]


# --- users and ACLs ----------------------------------------------------------------------


def acl_bindings(settings: Settings) -> list[AclBinding]:
    """What each user may do (admin is a super user and needs none)."""

    def allow(
        user: str,
        kind: ResourceType,
        name: str,
        *operations: AclOperation,
        pattern: ResourcePatternType = ResourcePatternType.LITERAL,
    ) -> list[AclBinding]:
        return [
            AclBinding(kind, name, pattern, f"User:{user}", "*", op, AclPermissionType.ALLOW)
            for op in operations
        ]

    read, write, describe = AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE
    topic, group = ResourceType.TOPIC, ResourceType.GROUP
    return [
        *allow("producer", topic, PAYMENTS_TRANSACTIONS, write, describe),
        *allow("producer", topic, IOT_READINGS, write, describe),
        *allow("producer", topic, PAYMENTS_DLQ, write, describe),
        *allow("producer", topic, IOT_DLQ, write, describe),
        *allow("flows", topic, PAYMENTS_TRANSACTIONS, read, describe),
        *allow("flows", topic, PAYMENTS_CARD_PROFILES, read, describe),
        *allow("flows", topic, PAYMENTS_ALERTS, write, describe),
        *allow("flows", topic, PAYMENTS_DLQ, write, describe),
        *allow("flows", topic, IOT_READINGS, read, describe),
        *allow("flows", topic, IOT_DEVICE_BASELINES, read, describe),
        *allow("flows", topic, IOT_ANOMALIES, write, describe),
        *allow("flows", topic, IOT_DLQ, write, describe),
        *allow("flows", group, settings.consumer_group, read, describe),
        # flows.kit.kafka_outputs.transactional_id: "<group>/<topic>/<partition>"
        *allow(
            "flows",
            ResourceType.TRANSACTIONAL_ID,
            f"{settings.consumer_group}/",
            write,
            describe,
            pattern=ResourcePatternType.PREFIXED,
        ),
    ]


def ensure_users_and_acls(settings: Settings) -> None:
    """Give every user other than admin its password and every user its ACLs (idempotent)."""
    from riverbed.kafka_admin import quiet_admin

    found = secrets_of(settings)
    admin = quiet_admin(settings)
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, _SCRAM_ITERATIONS)
    upserts = [
        UserScramCredentialUpsertion(user, info, found.password(user).encode())
        for user in USERS
        if user != "admin"
    ]
    try:
        for future in admin.alter_user_scram_credentials(
            upserts, request_timeout=_TIMEOUT_S
        ).values():
            future.result()
        for future in admin.create_acls(
            acl_bindings(settings), request_timeout=_TIMEOUT_S
        ).values():
            future.result()
    except KafkaException as exc:
        raise SecurityError(f"could not set the secured cluster's users and ACLs: {exc}") from None


# --- making the CA and the certificate ---------------------------------------------------


def _make_ca(found: Secrets) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Riverbed local CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomically(found.ca_key, key_pem.decode(), private=True)
    write_atomically(
        found.ca_cert, cert.public_bytes(serialization.Encoding.PEM).decode(), private=True
    )


def _make_node_keystore(found: Secrets) -> None:
    ca_key = serialization.load_pem_private_key(found.ca_key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(found.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "riverbed-node")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            # Both: a node is a server to clients and a client of the other controllers.
            x509.ExtendedKeyUsage(
                [x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    password = secrets.token_urlsafe(24)
    keystore = pkcs12.serialize_key_and_certificates(
        b"riverbed-node",
        key,
        cert,
        [ca_cert],
        serialization.BestAvailableEncryption(password.encode()),
    )
    write_atomically(found.keystore_password, password + "\n", private=True)
    write_atomically(found.keystore, keystore, private=True)


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
