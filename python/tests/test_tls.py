"""TLS to the real broker: a given CA, client certificates, and plain/TLS mismatches named as such.

The certificates are made for each test run with the ``cryptography`` package (a test extra): a CA,
a server certificate for 127.0.0.1 and a client certificate, both signed by that CA.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import pytest

import switchboard
from conftest import Broker, run, within
from switchboard import Client, Message, tls_context

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: "x509.Certificate") -> None:
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _certificate(name: str, key: ec.EllipticCurvePrivateKey, issuer: "Optional[x509.Certificate]",
                 issuer_key: Optional[ec.EllipticCurvePrivateKey], usage: str) -> "x509.Certificate":
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer.subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=1)))
    if usage == "ca":
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), True)
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        oid = ExtendedKeyUsageOID.SERVER_AUTH if usage == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([oid]), False)
        if usage == "server":
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture
def pki(tmp_path: Path) -> Dict[str, str]:
    """Paths of ca.pem, server.pem/.key and client.pem/.key."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("switchboard test CA", ca_key, None, None, "ca")
    _write(tmp_path / "ca", ca_key, ca)
    for usage in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(tmp_path / usage, key, _certificate(usage, key, ca, ca_key, usage))
    return {name: str(tmp_path / name) for name in
            ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def tls_broker(start: Callable[..., Broker], pki: Dict[str, str], client_ca: bool) -> Broker:
    settings = {"TLS__CERT_FILE": pki["server.pem"], "TLS__KEY_FILE": pki["server.key"]}
    if client_ca:
        settings["TLS__CLIENT_CA_FILE"] = pki["ca.pem"]
    return start(settings)


async def round_trip(addr: str, sender_tls: object, receiver_tls: object) -> Tuple[int, Message]:
    alice = await Client.connect(addr, "alice", tls=sender_tls)  # type: ignore[arg-type]
    bob = await Client.connect(addr, "bob", tls=receiver_tls)  # type: ignore[arg-type]
    message_id = await within("accepted", alice.send("bob", b"over tls"))
    message = await within("the message", bob.next_event())
    assert isinstance(message, Message)
    await bob.ack(message.message_id)
    await alice.close()
    await bob.close()
    return message_id, message


def test_a_round_trip_over_tls_trusting_a_given_ca(start_broker: Callable[..., Broker],
                                                    pki: Dict[str, str]) -> None:
    broker = tls_broker(start_broker, pki, client_ca=False)
    context = tls_context(ca_file=pki["ca.pem"])
    message_id, message = run(round_trip(broker.addr, context, context))
    assert (message.message_id, message.body) == (message_id, b"over tls")


def test_the_system_cas_do_not_trust_a_private_ca(start_broker: Callable[..., Broker],
                                                  pki: Dict[str, str]) -> None:
    broker = tls_broker(start_broker, pki, client_ca=False)
    with pytest.raises(switchboard.TlsError):
        run(Client.connect(broker.addr, "alice", tls=True))


def test_client_certificates_when_the_broker_asks_for_them(start_broker: Callable[..., Broker],
                                                           pki: Dict[str, str]) -> None:
    broker = tls_broker(start_broker, pki, client_ca=True)
    with_cert = tls_context(pki["ca.pem"], pki["client.pem"], pki["client.key"])
    message_id, message = run(round_trip(broker.addr, with_cert, with_cert))
    assert message.message_id == message_id
    with pytest.raises(switchboard.TlsError):
        run(Client.connect(broker.addr, "alice", tls=tls_context(pki["ca.pem"])))


def test_plain_and_tls_mismatches_are_named(start_broker: Callable[..., Broker],
                                            pki: Dict[str, str]) -> None:
    tls = tls_broker(start_broker, pki, client_ca=False)
    with pytest.raises(switchboard.TlsError, match="answered in TLS"):
        run(Client.connect(tls.addr, "alice"))
    plain = start_broker()
    with pytest.raises(switchboard.TlsError):
        run(Client.connect(plain.addr, "alice", tls=tls_context(pki["ca.pem"])))


def test_unreadable_certificates_are_a_tls_error(tmp_path: Path) -> None:
    with pytest.raises(switchboard.TlsError):
        tls_context(ca_file=str(tmp_path / "missing.pem"))
