"""The secured cluster's secrets and configuration, without a cluster (the cluster
itself: tests/integration/test_secure.py)."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from riverbed.broker import cluster_nodes, server_properties
from riverbed.kafka_security import USERS, ensure_secrets
from riverbed.settings import load_settings


def test_secrets_are_private_signed_by_the_ca_and_kept(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, kafka_secure=True)
    found = ensure_secrets(settings)
    files = [found.ca_cert, found.ca_key, found.keystore, found.keystore_password]
    files += [found.password_file(u) for u in USERS]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert stat.S_IMODE(found.dir.stat().st_mode) == 0o700

    ca = x509.load_pem_x509_certificate(found.ca_cert.read_bytes())
    keystore = pkcs12.load_pkcs12(
        found.keystore.read_bytes(), found.keystore_password.read_text().strip().encode()
    )
    assert keystore.cert is not None
    node = keystore.cert.certificate
    node.verify_directly_issued_by(ca)
    names = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert len({found.password(u) for u in USERS}) == len(USERS)

    before = {f: f.read_bytes() for f in files}
    ensure_secrets(settings)  # a second start keeps them: the cluster knows these users
    assert {f: f.read_bytes() for f in files} == before


def test_a_secured_node_listens_only_with_tls(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, kafka_secure=True, kafka_port=19500)
    ensure_secrets(settings)
    node = cluster_nodes(settings)[0]
    props = server_properties(settings, node)
    assert props["listeners"] == "SASL_SSL://127.0.0.1:19500,CONTROLLER://127.0.0.1:19503"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SSL"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert "PLAINTEXT" not in props["listeners"]
