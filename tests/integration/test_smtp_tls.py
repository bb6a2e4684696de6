"""The SMTP notifier over STARTTLS and implicit TLS, with login, against aiosmtpd."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authsvc.notify.base import TokenMessage
from authsvc.notify.smtp import SmtpNotifier
from tests.servers import free_port

pytestmark = [
    pytest.mark.integration,
    # aiosmtpd warns about AUTH without STARTTLS on the implicit-TLS server, which is all TLS.
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

USER, SECRET = "mailer", "smtp-secret-123"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: its own CA, as a private mail relay might use."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "authsvc test relay")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Inbox:
    def __init__(self) -> None:
        self.received: list[tuple[bool, str, str]] = []  # (tls?, login, recipient)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        login = session.auth_data.login.decode() if session.auth_data else ""
        tls = session.ssl is not None
        self.received.append((tls, login, envelope.rcpt_tos[0]))
        return "250 OK"


def authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        SECRET.encode(),
    )
    # handled=False: aiosmtpd answers a failure with its own 535 reply.
    return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture(scope="module")
def starttls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_context(certificate),
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def tls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        ssl_context=server_context(certificate),
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=False,  # the whole connection is TLS; aiosmtpd only knows STARTTLS
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def message(to: str) -> TokenMessage:
    return TokenMessage(to, "verify", "token-value", None)


def notifier(
    port: int, security: str, ca_file: Path | None, password: str = SECRET, timeout: float = 5
) -> SmtpNotifier:
    return SmtpNotifier(
        host="127.0.0.1",
        port=port,
        sender="authsvc <auth@example.com>",
        security=security,  # type: ignore[arg-type]
        username=USER,
        password=password,
        timeout=timeout,
        ca_file=ca_file,
    )


async def test_starttls_with_login(
    starttls_server: tuple[Inbox, int], certificate: tuple[Path, Path]
) -> None:
    inbox, port = starttls_server
    await notifier(port, "starttls", certificate[0]).send(message("a@example.com"))
    assert inbox.received[-1] == (True, USER, "a@example.com")


async def test_implicit_tls_with_login(
    tls_server: tuple[Inbox, int], certificate: tuple[Path, Path]
) -> None:
    inbox, port = tls_server
    await notifier(port, "tls", certificate[0]).send(message("b@example.com"))
    assert inbox.received[-1][1:] == (USER, "b@example.com")


async def test_an_untrusted_certificate_is_refused(starttls_server: tuple[Inbox, int]) -> None:
    inbox, port = starttls_server
    before = len(inbox.received)
    with pytest.raises(ssl.SSLCertVerificationError):
        await notifier(port, "starttls", None).send(message("c@example.com"))
    assert len(inbox.received) == before  # nothing went out in clear


async def test_a_wrong_smtp_password_is_an_error(
    starttls_server: tuple[Inbox, int], certificate: tuple[Path, Path]
) -> None:
    import smtplib

    inbox, port = starttls_server
    before = len(inbox.received)
    wrong = notifier(port, "starttls", certificate[0], password="wrong", timeout=30)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await wrong.send(message("d@example.com"))
    assert len(inbox.received) == before


def test_credentials_over_plain_smtp_are_refused_by_settings() -> None:
    from pydantic import ValidationError

    from authsvc.config import Settings

    with pytest.raises(ValidationError, match="in clear"):
        Settings(_env_file=None, smtp_security="none", smtp_username="mailer")
