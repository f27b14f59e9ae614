"""A SAML identity provider for tests and local development.

It signs with its own key through a different code path from the service
provider: Debian's `xmlsec1` command (libxmlsec1), not signxml. Metadata comes
in the shapes Entra ID and Okta publish.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

SIG_TEMPLATE = """<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
<ds:SignedInfo>
<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
<ds:SignatureMethod Algorithm="{sigalg}"/>
<ds:Reference URI="#{ref}">
<ds:Transforms>
<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
</ds:Transforms>
<ds:DigestMethod Algorithm="{digalg}"/>
<ds:DigestValue></ds:DigestValue>
</ds:Reference>
</ds:SignedInfo>
<ds:SignatureValue></ds:SignatureValue>
<ds:KeyInfo><ds:X509Data><ds:X509Certificate></ds:X509Certificate></ds:X509Data></ds:KeyInfo>
</ds:Signature>"""

SHA256 = (
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmlenc#sha256",
)
SHA1 = (
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
    "http://www.w3.org/2000/09/xmldsig#sha1",
)


def make_key_and_cert(common_name: str = "Test IdP", days: int = 365):
    """(private key, PEM certificate) of a fresh self-signed RSA-2048 key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM).decode()


def _instant(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cert_body(pem: str) -> str:
    return "".join(line for line in pem.splitlines() if "-----" not in line)


class TestIdP:
    """One IdP: an entity id, a key, a certificate (replaceable: rollover)."""

    def __init__(
        self,
        entity_id: str,
        sso_url: str = "https://idp.test/sso",
        slo_url: str = "https://idp.test/slo",
    ):
        if shutil.which("xmlsec1") is None:
            raise RuntimeError("xmlsec1 is missing: apt-get install xmlsec1")
        self.entity_id = entity_id
        self.sso_url = sso_url
        self.slo_url = slo_url
        self.key, self.cert = make_key_and_cert(entity_id[-40:])

    # -- metadata -------------------------------------------------------------

    def okta_metadata(self, extra_certs: tuple[str, ...] = ()) -> bytes:
        keys = "".join(
            '<md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#">'
            f"<ds:X509Data><ds:X509Certificate>{cert_body(c)}</ds:X509Certificate></ds:X509Data>"
            "</ds:KeyInfo></md:KeyDescriptor>"
            for c in (self.cert, *extra_certs)
        )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID={quoteattr(self.entity_id)}>'
            '<md:IDPSSODescriptor WantAuthnRequestsSigned="false" '
            'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
            f"{keys}"
            "<md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>"
            '<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" '
            f"Location={quoteattr(self.sso_url)}/>"
            '<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" '
            f"Location={quoteattr(self.sso_url)}/>"
            '<md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" '
            f"Location={quoteattr(self.slo_url)}/>"
            "</md:IDPSSODescriptor></md:EntityDescriptor>"
        ).encode()

    def entra_metadata(self) -> bytes:
        """Entra ID's shape: a WS-Federation RoleDescriptor before the IDPSSODescriptor."""
        body = cert_body(self.cert)
        return (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<EntityDescriptor ID="_f1" entityID=' + quoteattr(self.entity_id) + " "
            'xmlns="urn:oasis:names:tc:SAML:2.0:metadata">'
            '<RoleDescriptor xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xmlns:fed="http://docs.oasis-open.org/wsfed/federation/200706" '
            'xsi:type="fed:SecurityTokenServiceType" '
            'protocolSupportEnumeration="http://docs.oasis-open.org/wsfed/federation/200706">'
            '<KeyDescriptor use="signing"><KeyInfo xmlns="http://www.w3.org/2000/09/xmldsig#">'
            f"<X509Data><X509Certificate>{body}</X509Certificate></X509Data></KeyInfo></KeyDescriptor>"
            "</RoleDescriptor>"
            '<IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
            '<KeyDescriptor use="signing"><KeyInfo xmlns="http://www.w3.org/2000/09/xmldsig#">'
            f"<X509Data><X509Certificate>{body}</X509Certificate></X509Data></KeyInfo></KeyDescriptor>"
            '<SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" '
            f"Location={quoteattr(self.slo_url)} />"
            '<SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" '
            f"Location={quoteattr(self.sso_url)} />"
            '<SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" '
            f"Location={quoteattr(self.sso_url)} />"
            "</IDPSSODescriptor></EntityDescriptor>"
        ).encode()

    # -- messages --------------------------------------------------------------

    def assertion_xml(
        self,
        *,
        assertion_id: str,
        audience: str,
        recipient: str,
        name_id: str,
        in_response_to: str | None,
        attributes: dict[str, list[str]] | None = None,
        not_before: dt.datetime | None = None,
        not_on_or_after: dt.datetime | None = None,
        issuer: str | None = None,
        session_index: str = "_sess1",
        name_id_format: str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
        signed_template: str = "",
        raw_name_id: str | None = None,
    ) -> str:
        now = dt.datetime.now(dt.UTC)
        nb = not_before or now - dt.timedelta(minutes=1)
        na = not_on_or_after or now + dt.timedelta(minutes=5)
        irt = f" InResponseTo={quoteattr(in_response_to)}" if in_response_to else ""
        attrs = "".join(
            f"<saml:Attribute Name={quoteattr(k)}>"
            + "".join(
                f"<saml:AttributeValue>{escape(v)}</saml:AttributeValue>" for v in vals
            )
            + "</saml:Attribute>"
            for k, vals in (attributes or {}).items()
        )
        nid = raw_name_id if raw_name_id is not None else escape(name_id)
        return (
            f'<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{assertion_id}" '
            f'Version="2.0" IssueInstant="{_instant(now)}">'
            f"<saml:Issuer>{escape(issuer or self.entity_id)}</saml:Issuer>"
            f"{signed_template}"
            f"<saml:Subject><saml:NameID Format={quoteattr(name_id_format)}>{nid}</saml:NameID>"
            '<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">'
            f'<saml:SubjectConfirmationData{irt} NotOnOrAfter="{_instant(na)}" Recipient={quoteattr(recipient)}/>'
            "</saml:SubjectConfirmation></saml:Subject>"
            f'<saml:Conditions NotBefore="{_instant(nb)}" NotOnOrAfter="{_instant(na)}">'
            f"<saml:AudienceRestriction><saml:Audience>{escape(audience)}</saml:Audience></saml:AudienceRestriction>"
            "</saml:Conditions>"
            f'<saml:AuthnStatement AuthnInstant="{_instant(now)}" SessionIndex={quoteattr(session_index)}>'
            "<saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:Password"
            "</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>"
            f"<saml:AttributeStatement>{attrs}</saml:AttributeStatement>"
            "</saml:Assertion>"
        )

    def response_xml(
        self,
        assertion: str,
        *,
        destination: str | None,
        in_response_to: str | None,
        response_id: str = "_resp1",
        status: str = "urn:oasis:names:tc:SAML:2.0:status:Success",
        signed_template: str = "",
        issuer: str | None = None,
        extra: str = "",
    ) -> str:
        now = dt.datetime.now(dt.UTC)
        dest = f" Destination={quoteattr(destination)}" if destination else ""
        irt = f" InResponseTo={quoteattr(in_response_to)}" if in_response_to else ""
        return (
            '<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
            'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
            f'ID="{response_id}" Version="2.0" IssueInstant="{_instant(now)}"{dest}{irt}>'
            f"<saml:Issuer>{escape(issuer or self.entity_id)}</saml:Issuer>"
            f"{signed_template}"
            f'<samlp:Status><samlp:StatusCode Value="{status}"/></samlp:Status>'
            f"{extra}{assertion}"
            "</samlp:Response>"
        )

    def template(self, ref: str, sha1: bool = False) -> str:
        sigalg, digalg = SHA1 if sha1 else SHA256
        return SIG_TEMPLATE.format(sigalg=sigalg, digalg=digalg, ref=ref)

    def sign(
        self, xml: str, node: str = "Assertion", key=None, cert: str | None = None
    ) -> bytes:
        """Sign the element(s) `node` (Assertion, Response, LogoutRequest...) with xmlsec1."""
        key = key or self.key
        cert = cert or self.cert
        ns = (
            "urn:oasis:names:tc:SAML:2.0:assertion"
            if node == "Assertion"
            else "urn:oasis:names:tc:SAML:2.0:protocol"
        )
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            (d / "key.pem").write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            (d / "cert.pem").write_text(cert)
            (d / "in.xml").write_text(xml)
            proc = subprocess.run(
                [
                    "xmlsec1",
                    "--sign",
                    "--privkey-pem",
                    f"{d / 'key.pem'},{d / 'cert.pem'}",
                    "--id-attr:ID",
                    f"{ns}:{node}",
                    "--output",
                    str(d / "out.xml"),
                    str(d / "in.xml"),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError("xmlsec1 failed: " + proc.stderr[-500:])
            return (d / "out.xml").read_bytes()

    def signed_response(
        self,
        *,
        sp_entity_id: str,
        acs_url: str,
        name_id: str,
        in_response_to: str | None,
        attributes=None,
        assertion_id: str = "_a1",
        sign: str = "assertion",
        sha1: bool = False,
        **kw,
    ) -> bytes:
        """A Response with its assertion (or the Response, or both) signed."""
        resp_kw = {
            k: kw.pop(k)
            for k in ("destination", "status", "response_id", "extra")
            if k in kw
        }
        assertion = self.assertion_xml(
            assertion_id=assertion_id,
            audience=sp_entity_id,
            recipient=acs_url,
            name_id=name_id,
            in_response_to=in_response_to,
            attributes=attributes,
            signed_template=self.template(assertion_id, sha1)
            if sign in ("assertion", "both")
            else "",
            **kw,
        )
        if sign in ("assertion", "both"):
            signed = self.sign(assertion, "Assertion").decode()
            assertion = (
                signed.split("?>", 1)[1] if signed.startswith("<?xml") else signed
            )
        resp_id = resp_kw.pop("response_id", "_resp1")
        xml = self.response_xml(
            assertion,
            destination=resp_kw.pop("destination", acs_url),
            in_response_to=in_response_to,
            response_id=resp_id,
            signed_template=self.template(resp_id, sha1)
            if sign in ("response", "both")
            else "",
            **resp_kw,
        )
        if sign in ("response", "both"):
            return self.sign(xml, "Response")
        return xml.encode()

    def logout_request(
        self,
        *,
        destination: str,
        name_id: str,
        session_index: str | None,
        request_id: str = "_lr1",
    ) -> bytes:
        now = dt.datetime.now(dt.UTC)
        si = (
            f"<samlp:SessionIndex>{escape(session_index)}</samlp:SessionIndex>"
            if session_index
            else ""
        )
        xml = (
            '<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
            'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
            f'ID="{request_id}" Version="2.0" IssueInstant="{_instant(now)}" Destination={quoteattr(destination)}>'
            f"<saml:Issuer>{escape(self.entity_id)}</saml:Issuer>{self.template(request_id)}"
            f"<saml:NameID>{escape(name_id)}</saml:NameID>{si}</samlp:LogoutRequest>"
        )
        return self.sign(xml, "LogoutRequest")

    def logout_response(
        self, *, destination: str, in_response_to: str, response_id: str = "_lresp1"
    ) -> bytes:
        now = dt.datetime.now(dt.UTC)
        xml = (
            '<samlp:LogoutResponse xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
            'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
            f'ID="{response_id}" Version="2.0" IssueInstant="{_instant(now)}" '
            f"Destination={quoteattr(destination)} InResponseTo={quoteattr(in_response_to)}>"
            f"<saml:Issuer>{escape(self.entity_id)}</saml:Issuer>{self.template(response_id)}"
            '<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/>'
            "</samlp:Status></samlp:LogoutResponse>"
        )
        return self.sign(xml, "LogoutResponse")
