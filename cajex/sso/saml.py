"""SAML 2.0 service provider: metadata, AuthnRequest, Response and Single Logout.

Contract: `verify_response()` returns a `SignedAssertion` only when every
check of SAML 2.0 core/profiles (and the usual attack list) has passed, and
raises `SAMLError` with a stable `reason` otherwise. It reads identity and
attributes ONLY from the element that signxml returns as signed, verified
against the certificates pinned from the connection's metadata (never a
certificate carried in the message). Database checks (InResponseTo consumed
once, assertion id not seen before) are the caller's (cajex.sso.service),
because they must hold across processes and restarts.

Threats handled here, each with a test in tests/py/test_sso_saml.py:

- XML signature wrapping: exactly one Assertion in the whole document, a
  direct child of the Response; no EncryptedAssertion; no duplicate ID
  attributes; the signature must be a direct child of the element it signs
  and its one reference must name that element; data comes from signxml's
  signed copy, so an unsigned sibling or a moved assertion is never read.
- Entity tricks: DOCTYPE refused outright (billion laughs, XXE), parser with
  resolve_entities=False and no_network, bounded size.
- Comment truncation (CVE-2017-11427 family): any comment in the signed
  assertion is refused, and text is read with itertext() regardless.
- SHA-1 signatures and digests refused unless the connection allows them.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import secrets
import urllib.parse
import zlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree
from signxml import (
    DigestAlgorithm,
    SignatureConfiguration,
    SignatureMethod,
    XMLVerifier,
)
from signxml.exceptions import (
    InvalidCertificate,
    InvalidDigest,
    InvalidInput,
    InvalidSignature,
)

MAX_XML_BYTES = 256 * 1024
MAX_METADATA_BYTES = 1024 * 1024

NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "md": "urn:oasis:names:tc:SAML:2.0:metadata",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
}
SAMLP = "{" + NS["samlp"] + "}"
SAML = "{" + NS["saml"] + "}"
MD = "{" + NS["md"] + "}"
DS = "{" + NS["ds"] + "}"

BINDING_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
NAMEID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"

# Attribute names IdPs use for the address and the groups (Entra, Okta,
# ADFS, LDAP-style).
EMAIL_ATTRIBUTES = (
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    "email",
    "mail",
    "Email",
    "urn:oid:0.9.2342.19200300.100.1.3",
)
NAME_ATTRIBUTES = (
    "http://schemas.microsoft.com/identity/claims/displayname",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
    "displayName",
    "name",
)
GROUP_ATTRIBUTES = (
    "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
    "groups",
    "memberOf",
)
# Entra ID sends this instead of the groups when a user is in more groups
# than a token holds (150 in SAML): the groups are then unknown, not empty.
ENTRA_GROUPS_OVERAGE = "http://schemas.microsoft.com/claims/groups.link"


class SAMLError(Exception):
    """A refused message. `reason` is stable (logs, tests); the text is for people."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class MetadataError(SAMLError):
    """The IdP metadata cannot be used; the message tells the admin what to fix."""


# ---------------------------------------------------------------------------
# Parsing


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=True,
        collect_ids=False,
    )


def parse_xml(
    data: bytes | str, *, max_bytes: int = MAX_XML_BYTES, what: str = "message"
):
    """Parse untrusted XML: bounded, no DTD at all, no entities, no network."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not data or len(data) > max_bytes:
        raise SAMLError(
            "xml_size", f"the {what} is empty or larger than {max_bytes} bytes"
        )
    # A DOCTYPE has no business in SAML: refuse it before the parser runs, so
    # that no entity (internal or external) is ever declared.
    lowered = data[:max_bytes].lower()
    if b"<!doctype" in lowered or b"<!entity" in lowered:
        raise SAMLError(
            "xml_dtd", f"the {what} declares a DTD or entities, which SAML never needs"
        )
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise SAMLError("xml_malformed", f"the {what} is not well-formed XML") from exc
    if root.getroottree().docinfo.doctype:
        raise SAMLError("xml_dtd", f"the {what} declares a DTD")
    return root


def text_of(element) -> str:
    """All text of an element, comments skipped (never truncated at one)."""
    if element is None:
        return ""
    return "".join(element.itertext()).strip()


def _parse_instant(value: str | None, field: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SAMLError("bad_time", f"{field} is not a timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def _instant(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id() -> str:
    """An xs:ID (must not start with a digit) with 160 random bits."""
    return "_" + secrets.token_hex(20)


# ---------------------------------------------------------------------------
# Certificates and metadata


def normalise_certificate(value: str) -> str:
    """One PEM certificate from PEM or bare base64 (as in metadata); MetadataError if broken."""
    raw = (value or "").strip()
    if "BEGIN CERTIFICATE" not in raw:
        body = "".join(raw.split())
        raw = (
            "-----BEGIN CERTIFICATE-----\n"
            + "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
            + "\n-----END CERTIFICATE-----\n"
        )
    try:
        cert = x509.load_pem_x509_certificate(raw.encode())
    except ValueError:
        raise MetadataError(
            "bad_certificate",
            "a signing certificate is not a valid X.509 certificate: copy it again "
            "from the identity provider (Base64, PEM)",
        ) from None
    if not isinstance(cert.public_key(), rsa.RSAPublicKey) and not hasattr(
        cert.public_key(), "curve"
    ):
        raise MetadataError(
            "bad_certificate",
            "a signing certificate holds neither an RSA nor an EC key",
        )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def certificate_summary(pem: str) -> dict:
    cert = x509.load_pem_x509_certificate(pem.encode())
    return {
        "subject": cert.subject.rfc4514_string()[:200],
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(":"),
        "expired": cert.not_valid_after_utc < dt.datetime.now(dt.UTC),
    }


@dataclasses.dataclass(frozen=True)
class IdPMetadata:
    entity_id: str
    sso_url: str
    slo_url: str | None
    certificates: tuple[str, ...]


def parse_metadata(data: bytes | str, entity_id: str | None = None) -> IdPMetadata:
    """The IdP's entity id, redirect-binding sign-in and logout URLs and signing certificates.

    Accepts an EntityDescriptor or an EntitiesDescriptor (then `entity_id`
    picks one, or it must hold exactly one IdP). Entra ID's metadata also
    carries WS-Federation RoleDescriptors: ignored. The metadata's own
    signature is not checked: trust comes from the admin who uploaded it or
    the https URL it came from.
    """
    try:
        root = parse_xml(data, max_bytes=MAX_METADATA_BYTES, what="metadata")
    except SAMLError as exc:
        raise MetadataError(
            exc.reason,
            exc.message + ": download the IdP's federation metadata XML again",
        ) from exc
    if root.tag == MD + "EntityDescriptor":
        entities = [root]
    elif root.tag == MD + "EntitiesDescriptor":
        entities = root.findall(".//md:EntityDescriptor", NS)
    else:
        raise MetadataError(
            "not_metadata", "this is not SAML metadata (no EntityDescriptor)"
        )
    candidates = [
        e
        for e in entities
        if e.find("md:IDPSSODescriptor", NS) is not None
        and (entity_id is None or e.get("entityID") == entity_id)
    ]
    if len(candidates) != 1:
        raise MetadataError(
            "no_idp",
            "the metadata must describe exactly one identity provider (IDPSSODescriptor)"
            if entity_id is None
            else "the metadata does not describe that entity id",
        )
    entity = candidates[0]
    idp = entity.find("md:IDPSSODescriptor", NS)
    if NS["samlp"] not in (idp.get("protocolSupportEnumeration") or ""):
        raise MetadataError(
            "no_saml2", "the identity provider does not announce SAML 2.0 support"
        )
    eid = (entity.get("entityID") or "").strip()
    if not eid or len(eid) > 2000:
        raise MetadataError("no_entity_id", "the metadata has no entityID")

    def endpoint(tag: str) -> str | None:
        for binding in (BINDING_REDIRECT,):
            for el in idp.findall(f"md:{tag}", NS):
                if el.get("Binding") == binding and (
                    el.get("Location") or ""
                ).startswith(("https://", "http://")):
                    return el.get("Location").strip()
        return None

    sso = endpoint("SingleSignOnService")
    if not sso:
        raise MetadataError(
            "no_sso_url",
            "the metadata has no SingleSignOnService with the HTTP-Redirect binding",
        )
    certs: list[str] = []
    for kd in idp.findall("md:KeyDescriptor", NS):
        if kd.get("use") not in (None, "signing"):
            continue
        for c in kd.findall(".//ds:X509Certificate", NS):
            pem = normalise_certificate(text_of(c))
            if pem not in certs:
                certs.append(pem)
    if not certs:
        raise MetadataError(
            "no_certificate", "the metadata has no signing certificate (KeyDescriptor)"
        )
    if len(certs) > 8:
        raise MetadataError(
            "too_many_certificates", "the metadata has more than 8 signing certificates"
        )
    return IdPMetadata(eid, sso, endpoint("SingleLogoutService"), tuple(certs))


# ---------------------------------------------------------------------------
# Our side


@dataclasses.dataclass(frozen=True)
class SPConfig:
    """The values the IdP needs, per connection (so that one IdP's answer is
    never accepted at another connection's endpoints)."""

    entity_id: str
    acs_url: str
    slo_url: str
    metadata_url: str


@dataclasses.dataclass(frozen=True)
class IdPConfig:
    connection_id: str
    entity_id: str
    sso_url: str
    slo_url: str | None
    certificates: tuple[str, ...]
    allow_sha1: bool = False
    clock_skew: int = 120
    group_attribute: str | None = None


def sp_metadata(sp: SPConfig, signing_cert_pem: str | None = None) -> bytes:
    """Our SP metadata for the IdP admin (what to paste into Entra or Okta)."""
    root = etree.Element(
        MD + "EntityDescriptor", nsmap={"md": NS["md"], "ds": NS["ds"]}
    )
    root.set("entityID", sp.entity_id)
    spsso = etree.SubElement(root, MD + "SPSSODescriptor")
    spsso.set("AuthnRequestsSigned", "true" if signing_cert_pem else "false")
    spsso.set("WantAssertionsSigned", "true")
    spsso.set("protocolSupportEnumeration", NS["samlp"])
    if signing_cert_pem:
        kd = etree.SubElement(spsso, MD + "KeyDescriptor", use="signing")
        ki = etree.SubElement(kd, DS + "KeyInfo")
        xd = etree.SubElement(ki, DS + "X509Data")
        body = "".join(
            line for line in signing_cert_pem.splitlines() if "-----" not in line
        )
        etree.SubElement(xd, DS + "X509Certificate").text = body
    etree.SubElement(
        spsso, MD + "SingleLogoutService", Binding=BINDING_REDIRECT, Location=sp.slo_url
    )
    etree.SubElement(
        spsso, MD + "SingleLogoutService", Binding=BINDING_POST, Location=sp.slo_url
    )
    etree.SubElement(
        spsso, MD + "NameIDFormat"
    ).text = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
    etree.SubElement(spsso, MD + "NameIDFormat").text = NAMEID_EMAIL
    etree.SubElement(
        spsso,
        MD + "AssertionConsumerService",
        Binding=BINDING_POST,
        Location=sp.acs_url,
        index="0",
        isDefault="true",
    )
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _deflate_b64(xml: bytes) -> str:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return base64.b64encode(compressor.compress(xml) + compressor.flush()).decode()


def inflate_b64(value: str, *, max_bytes: int = MAX_XML_BYTES) -> bytes:
    """Undo the redirect binding's encoding, refusing a decompression bomb."""
    try:
        raw = base64.b64decode(value, validate=False)
        inflater = zlib.decompressobj(-15)
        out = inflater.decompress(raw, max_bytes + 1)
    except (ValueError, zlib.error):
        raise SAMLError("bad_encoding", "the message is not deflated base64") from None
    if len(out) > max_bytes:
        raise SAMLError("xml_size", "the message is too large")
    return out


def redirect_url(
    location: str, param: str, xml: bytes, relay_state: str | None, signing_key=None
) -> str:
    """The HTTP-Redirect binding: deflate, base64, and optionally sign the query."""
    parts = [(param, _deflate_b64(xml))]
    if relay_state:
        parts.append(("RelayState", relay_state))
    if signing_key is not None:
        parts.append(("SigAlg", RSA_SHA256))
    query = "&".join(f"{k}={urllib.parse.quote(v, safe='')}" for k, v in parts)
    if signing_key is not None:
        signature = signing_key.sign(
            query.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        query += "&Signature=" + urllib.parse.quote(
            base64.b64encode(signature).decode(), safe=""
        )
    return location + ("&" if "?" in location else "?") + query


def authn_request(
    sp: SPConfig, idp: IdPConfig, request_id: str, now: dt.datetime
) -> bytes:
    root = etree.Element(
        SAMLP + "AuthnRequest", nsmap={"samlp": NS["samlp"], "saml": NS["saml"]}
    )
    root.set("ID", request_id)
    root.set("Version", "2.0")
    root.set("IssueInstant", _instant(now))
    root.set("Destination", idp.sso_url)
    root.set("AssertionConsumerServiceURL", sp.acs_url)
    root.set("ProtocolBinding", BINDING_POST)
    etree.SubElement(root, SAML + "Issuer").text = sp.entity_id
    etree.SubElement(root, SAMLP + "NameIDPolicy", AllowCreate="true")
    return etree.tostring(root)


def logout_request(
    sp: SPConfig,
    idp: IdPConfig,
    request_id: str,
    name_id: str,
    session_index: str | None,
    now: dt.datetime,
) -> bytes:
    root = etree.Element(
        SAMLP + "LogoutRequest", nsmap={"samlp": NS["samlp"], "saml": NS["saml"]}
    )
    root.set("ID", request_id)
    root.set("Version", "2.0")
    root.set("IssueInstant", _instant(now))
    root.set("Destination", idp.slo_url or "")
    etree.SubElement(root, SAML + "Issuer").text = sp.entity_id
    etree.SubElement(root, SAML + "NameID").text = name_id
    if session_index:
        etree.SubElement(root, SAMLP + "SessionIndex").text = session_index
    return etree.tostring(root)


def logout_response(
    sp: SPConfig,
    idp: IdPConfig,
    in_response_to: str,
    now: dt.datetime,
    status: str = STATUS_SUCCESS,
) -> bytes:
    root = etree.Element(
        SAMLP + "LogoutResponse", nsmap={"samlp": NS["samlp"], "saml": NS["saml"]}
    )
    root.set("ID", new_id())
    root.set("Version", "2.0")
    root.set("IssueInstant", _instant(now))
    root.set("Destination", idp.slo_url or "")
    root.set("InResponseTo", in_response_to)
    etree.SubElement(root, SAML + "Issuer").text = sp.entity_id
    st = etree.SubElement(root, SAMLP + "Status")
    etree.SubElement(st, SAMLP + "StatusCode", Value=status)
    return etree.tostring(root)


# ---------------------------------------------------------------------------
# Verifying what the IdP sends


def _config(idp: IdPConfig) -> SignatureConfiguration:
    methods = {
        SignatureMethod.RSA_SHA256,
        SignatureMethod.RSA_SHA384,
        SignatureMethod.RSA_SHA512,
        SignatureMethod.ECDSA_SHA256,
        SignatureMethod.ECDSA_SHA384,
        SignatureMethod.ECDSA_SHA512,
    }
    digests = {DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512}
    if idp.allow_sha1:
        methods.add(SignatureMethod.RSA_SHA1)
        digests.add(DigestAlgorithm.SHA1)
    return SignatureConfiguration(
        location="./",
        expect_references=1,
        signature_methods=frozenset(methods),
        digest_algorithms=frozenset(digests),
        # A KeyValue in the message is the sender's claim, not ours: ignore it
        # and verify with the pinned certificate only.
        ignore_ambiguous_key_info=True,
    )


def _verify_signed(element, idp: IdPConfig):
    """The signed copy of `element` (whose direct child is the Signature), or SAMLError."""
    sig = element.find("ds:Signature", NS)
    if sig is None:
        raise SAMLError("unsigned", "the message is not signed")
    refs = sig.findall("ds:SignedInfo/ds:Reference", NS)
    element_id = element.get("ID")
    if len(refs) != 1 or not element_id or refs[0].get("URI") != "#" + element_id:
        raise SAMLError(
            "signature_reference", "the signature does not cover the element it sits in"
        )
    method = sig.find("ds:SignedInfo/ds:SignatureMethod", NS)
    digest = refs[0].find("ds:DigestMethod", NS)
    if not idp.allow_sha1 and any(
        el is not None and "sha1" in (el.get("Algorithm") or "").lower()
        for el in (method, digest)
    ):
        raise SAMLError(
            "sha1", "the message is signed with SHA-1, which this connection refuses"
        )
    last: Exception | None = None
    for pem in idp.certificates:
        try:
            result = XMLVerifier().verify(
                element, x509_cert=pem, expect_config=_config(idp)
            )
        except InvalidCertificate as exc:
            last = exc
            continue
        except (InvalidSignature, InvalidDigest, InvalidInput) as exc:
            last = exc
            continue
        except Exception as exc:  # noqa: BLE001 - signxml raises plain errors on odd input
            last = exc
            continue
        signed = result.signed_xml
        if (
            signed is None
            or signed.tag != element.tag
            or signed.get("ID") != element_id
        ):
            raise SAMLError(
                "signature_reference", "the signature covers another element"
            )
        return signed
    if isinstance(last, InvalidCertificate):
        raise SAMLError(
            "certificate",
            "the pinned signing certificate is not valid now: upload fresh metadata",
        )
    raise SAMLError(
        "bad_signature",
        "the signature does not verify with the connection's certificates",
    )


def _check_duplicate_ids(root) -> None:
    seen: set[str] = set()
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        for name in ("ID", "Id", "id"):
            value = el.get(name)
            if value is not None:
                if value in seen:
                    raise SAMLError("duplicate_id", "two elements share one ID")
                seen.add(value)


@dataclasses.dataclass(frozen=True)
class SignedAssertion:
    """What a verified Response says, read from the signed element only."""

    assertion_id: str
    in_response_to: str | None
    name_id: str
    name_id_format: str | None
    session_index: str | None
    not_on_or_after: dt.datetime
    attributes: dict[str, list[str]]
    email: str | None
    display_name: str | None
    groups: list[str]
    groups_known: bool


def _first_attr(attributes: dict[str, list[str]], names) -> str | None:
    for name in names:
        values = attributes.get(name)
        if values:
            return values[0]
    return None


def verify_response(
    data: bytes, *, sp: SPConfig, idp: IdPConfig, now: dt.datetime | None = None
) -> SignedAssertion:
    """Verify a Response posted to the ACS; see the module docstring."""
    now = now or dt.datetime.now(dt.UTC)
    skew = dt.timedelta(seconds=idp.clock_skew)
    root = parse_xml(data)
    if root.tag != SAMLP + "Response":
        raise SAMLError("not_response", "this is not a SAML Response")
    if root.get("Version") != "2.0":
        raise SAMLError("version", "only SAML 2.0 is accepted")
    _check_duplicate_ids(root)
    destination = root.get("Destination")
    if destination is not None and destination != sp.acs_url:
        raise SAMLError("destination", "the Response is addressed to another endpoint")

    status = root.find("samlp:Status/samlp:StatusCode", NS)
    if status is None or status.get("Value") != STATUS_SUCCESS:
        raise SAMLError("status", "the identity provider did not sign the person in")
    issuer = root.find("saml:Issuer", NS)
    if issuer is not None and text_of(issuer) != idp.entity_id:
        raise SAMLError("issuer", "the Response comes from another identity provider")

    if root.find(".//saml:EncryptedAssertion", NS) is not None:
        raise SAMLError(
            "encrypted",
            "encrypted assertions are not supported: turn assertion encryption off",
        )
    everywhere = root.findall(".//saml:Assertion", NS)
    direct = root.findall("saml:Assertion", NS)
    if len(everywhere) != 1 or len(direct) != 1:
        raise SAMLError(
            "assertion_count", "the Response must carry exactly one assertion"
        )
    assertion = direct[0]
    if any(isinstance(n, etree._Comment) for n in assertion.iter()):
        # Exclusive c14n drops comments, so they are not covered by the
        # signature; a comment inside NameID is the truncation attack
        # (the signed copy has none, so it is checked here, as received).
        raise SAMLError("comment", "the assertion contains XML comments")

    # Which signatures are there: on the Response, on the Assertion, or both
    # (then both must verify). Data is read from the signed copies only.
    signed_assertion = None
    if root.find("ds:Signature", NS) is not None:
        signed_response = _verify_signed(root, idp)
        inner = signed_response.findall("saml:Assertion", NS)
        if len(inner) != 1 or signed_response.findall(".//saml:Assertion", NS) != inner:
            raise SAMLError(
                "assertion_count",
                "the signed Response must carry exactly one assertion",
            )
        signed_assertion = inner[0]
        if signed_response.get("Destination") is None:
            raise SAMLError(
                "destination", "a signed Response must name its Destination"
            )
        if assertion.find("ds:Signature", NS) is not None:
            signed_assertion = _verify_signed(assertion, idp)
    elif assertion.find("ds:Signature", NS) is not None:
        signed_assertion = _verify_signed(assertion, idp)
    else:
        raise SAMLError("unsigned", "neither the Response nor its assertion is signed")

    a = signed_assertion
    if any(isinstance(n, etree._Comment) for n in a.iter()):
        # Exclusive c14n drops comments, so they are not covered by the
        # signature; a comment inside NameID is the truncation attack.
        raise SAMLError("comment", "the assertion contains XML comments")
    if text_of(a.find("saml:Issuer", NS)) != idp.entity_id:
        raise SAMLError("issuer", "the assertion comes from another identity provider")
    assertion_id = a.get("ID") or ""
    if not assertion_id or len(assertion_id) > 256:
        raise SAMLError("assertion_id", "the assertion has no usable ID")

    subject = a.find("saml:Subject", NS)
    name_id_el = subject.find("saml:NameID", NS) if subject is not None else None
    if name_id_el is None or list(name_id_el):
        raise SAMLError("name_id", "the assertion names no subject")
    name_id = text_of(name_id_el)
    if not name_id or len(name_id) > 1024:
        raise SAMLError("name_id", "the assertion names no subject")

    # Bearer confirmation: addressed to this connection's ACS, still valid.
    in_response_to = None
    confirmed = False
    for sc in subject.findall("saml:SubjectConfirmation", NS):
        if sc.get("Method") != BEARER:
            continue
        scd = sc.find("saml:SubjectConfirmationData", NS)
        if scd is None:
            continue
        if scd.get("Recipient") != sp.acs_url:
            raise SAMLError("recipient", "the assertion is for another recipient")
        limit = _parse_instant(
            scd.get("NotOnOrAfter"), "SubjectConfirmationData NotOnOrAfter"
        )
        if limit is None or now - skew >= limit:
            raise SAMLError("expired", "the assertion has expired")
        start = _parse_instant(
            scd.get("NotBefore"), "SubjectConfirmationData NotBefore"
        )
        if start is not None and now + skew < start:
            raise SAMLError("not_yet_valid", "the assertion is not valid yet")
        in_response_to = scd.get("InResponseTo")
        confirmed = True
        break
    if not confirmed:
        raise SAMLError("confirmation", "the assertion has no bearer confirmation")
    if root.get("InResponseTo") != in_response_to:
        raise SAMLError(
            "in_response_to", "the Response and its assertion answer different requests"
        )

    conditions = a.find("saml:Conditions", NS)
    if conditions is None:
        raise SAMLError("conditions", "the assertion has no conditions")
    start = _parse_instant(conditions.get("NotBefore"), "NotBefore")
    end = _parse_instant(conditions.get("NotOnOrAfter"), "NotOnOrAfter")
    if start is not None and now + skew < start:
        raise SAMLError("not_yet_valid", "the assertion is not valid yet")
    if end is None or now - skew >= end:
        raise SAMLError("expired", "the assertion has expired")
    restrictions = conditions.findall("saml:AudienceRestriction", NS)
    if not restrictions or any(
        sp.entity_id not in [text_of(x) for x in r.findall("saml:Audience", NS)]
        for r in restrictions
    ):
        raise SAMLError("audience", "the assertion is for another audience")

    authn = a.find("saml:AuthnStatement", NS)
    session_index = authn.get("SessionIndex") if authn is not None else None
    if authn is not None:
        session_end = _parse_instant(
            authn.get("SessionNotOnOrAfter"), "SessionNotOnOrAfter"
        )
        if session_end is not None and now - skew >= session_end:
            raise SAMLError("expired", "the identity provider's session has ended")

    attributes: dict[str, list[str]] = {}
    for attr in a.findall("saml:AttributeStatement/saml:Attribute", NS):
        name = attr.get("Name") or ""
        values = attributes.setdefault(name, [])
        for value in attr.findall("saml:AttributeValue", NS):
            if len(value):
                raise SAMLError("attribute", "an attribute value holds markup")
            values.append(text_of(value))
    email = _first_attr(attributes, EMAIL_ATTRIBUTES)
    if email is None and name_id_el.get("Format") == NAMEID_EMAIL:
        email = name_id
    group_names = (idp.group_attribute,) if idp.group_attribute else GROUP_ATTRIBUTES
    groups: list[str] = []
    for name in group_names:
        groups.extend(attributes.get(name) or [])
    groups_known = ENTRA_GROUPS_OVERAGE not in attributes
    return SignedAssertion(
        assertion_id=assertion_id,
        in_response_to=in_response_to,
        name_id=name_id,
        name_id_format=name_id_el.get("Format"),
        session_index=session_index,
        not_on_or_after=end,
        attributes=attributes,
        email=email,
        display_name=_first_attr(attributes, NAME_ATTRIBUTES),
        groups=groups if groups_known else [],
        groups_known=groups_known,
    )


@dataclasses.dataclass(frozen=True)
class LogoutMessage:
    kind: str  # "request" or "response"
    id: str
    in_response_to: str | None
    name_id: str | None
    session_indexes: tuple[str, ...]
    success: bool
    not_on_or_after: dt.datetime | None


#: What the HTTP-Redirect binding puts in a query, and nothing else.
REDIRECT_PARAMETERS = ("SAMLRequest", "SAMLResponse", "RelayState", "SigAlg", "Signature")


def verify_redirect_signature(query_string: bytes, idp: IdPConfig) -> str:
    """Check a HTTP-Redirect binding signature over the raw query, as
    received; the message it covers (deflated XML in base64).

    The query is read here and only here: names are percent-decoded, and a
    name given twice, or one the binding does not define, is refused. So the
    message the caller goes on to read is the one whose signature was
    checked, never a second, differently spelled one riding along
    (`SAML%52equest=<forged>&SAMLResponse=<signed>`).
    """
    pairs: dict[str, bytes] = {}
    for part in query_string.split(b"&"):
        if not part:
            continue
        raw_key, _, value = part.partition(b"=")
        key = urllib.parse.unquote_plus(raw_key.decode("ascii", "replace"))
        if key not in REDIRECT_PARAMETERS or key in pairs:
            raise SAMLError(
                "bad_encoding",
                "the query holds a parameter the redirect binding does not send, or one twice",
            )
        pairs[key] = value
    messages = [k for k in ("SAMLRequest", "SAMLResponse") if k in pairs]
    if len(messages) != 1 or not pairs[messages[0]]:
        raise SAMLError("bad_encoding", "send exactly one SAML message")
    if "Signature" not in pairs or "SigAlg" not in pairs:
        raise SAMLError("unsigned", "the logout message is not signed")
    message = messages[0]
    signed = b"&".join(
        k.encode() + b"=" + pairs[k]
        for k in (message, "RelayState", "SigAlg")
        if k in pairs
    )
    alg = urllib.parse.unquote(pairs["SigAlg"].decode("ascii", "replace"))
    if alg == RSA_SHA256:
        digest = hashes.SHA256()
    elif alg == RSA_SHA1 and idp.allow_sha1:
        digest = hashes.SHA1()  # noqa: S303 - only when the connection explicitly allows it
    else:
        raise SAMLError(
            "sha1" if alg == RSA_SHA1 else "signature_alg",
            "the signature algorithm is refused",
        )
    try:
        signature = base64.b64decode(
            urllib.parse.unquote(pairs["Signature"].decode("ascii", "replace"))
        )
    except ValueError:
        raise SAMLError("bad_signature", "the signature is not base64") from None
    for pem in idp.certificates:
        key = x509.load_pem_x509_certificate(pem.encode()).public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            continue
        try:
            key.verify(signature, signed, padding.PKCS1v15(), digest)
            return urllib.parse.unquote_plus(pairs[message].decode("ascii", "replace"))
        except CryptoInvalidSignature:
            continue
    raise SAMLError(
        "bad_signature",
        "the signature does not verify with the connection's certificates",
    )


def verify_logout(
    data: bytes,
    *,
    sp: SPConfig,
    idp: IdPConfig,
    redirect_signed: bool,
    now: dt.datetime | None = None,
) -> LogoutMessage:
    """Verify a LogoutRequest or LogoutResponse (signed in the XML, or by the redirect binding)."""
    now = now or dt.datetime.now(dt.UTC)
    skew = dt.timedelta(seconds=idp.clock_skew)
    root = parse_xml(data)
    if root.tag not in (SAMLP + "LogoutRequest", SAMLP + "LogoutResponse"):
        raise SAMLError("not_logout", "this is not a SAML logout message")
    _check_duplicate_ids(root)
    if not redirect_signed:
        root = _verify_signed(root, idp)
    if any(isinstance(n, etree._Comment) for n in root.iter()):
        raise SAMLError("comment", "the logout message contains XML comments")
    if root.get("Version") != "2.0" or not root.get("ID"):
        raise SAMLError("version", "only SAML 2.0 is accepted")
    if text_of(root.find("saml:Issuer", NS)) != idp.entity_id:
        raise SAMLError(
            "issuer", "the logout message comes from another identity provider"
        )
    destination = root.get("Destination")
    if destination is not None and destination != sp.slo_url:
        raise SAMLError(
            "destination", "the logout message is addressed to another endpoint"
        )
    issued = _parse_instant(root.get("IssueInstant"), "IssueInstant")
    if (
        issued is None
        or issued > now + skew
        or issued < now - dt.timedelta(minutes=10) - skew
    ):
        raise SAMLError("expired", "the logout message is too old or from the future")
    if root.tag == SAMLP + "LogoutRequest":
        end = _parse_instant(root.get("NotOnOrAfter"), "NotOnOrAfter")
        if end is not None and now - skew >= end:
            raise SAMLError("expired", "the logout request has expired")
        name_id = text_of(root.find("saml:NameID", NS))
        if not name_id:
            raise SAMLError("name_id", "the logout request names no subject")
        return LogoutMessage(
            "request",
            root.get("ID"),
            None,
            name_id,
            tuple(text_of(s) for s in root.findall("samlp:SessionIndex", NS)),
            True,
            end or issued + dt.timedelta(minutes=10),
        )
    status = root.find("samlp:Status/samlp:StatusCode", NS)
    return LogoutMessage(
        "response",
        root.get("ID"),
        root.get("InResponseTo"),
        None,
        (),
        status is not None and status.get("Value") == STATUS_SUCCESS,
        None,
    )


# ---------------------------------------------------------------------------
# Our signing key (AuthnRequests when asked, every logout message)


def sp_signing_key(data_dir) -> tuple[rsa.RSAPrivateKey, str]:
    """The platform's SAML SP key and certificate, created once in the data folder.

    One key for all connections: IdPs pin it from our SP metadata. Rotating
    it means replacing the two files and re-sharing the metadata.
    """
    from pathlib import Path

    from cryptography.x509.oid import NameOID

    folder = Path(data_dir)
    key_path, cert_path = folder / "saml-sp-key.pem", folder / "saml-sp-cert.pem"
    if not key_path.exists() or not cert_path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cajex SAML SP")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .sign(key, hashes.SHA256())
        )
        tmp = key_path.with_suffix(".tmp")
        tmp.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        tmp.chmod(0o600)
        tmp.replace(key_path)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    return key, cert_path.read_text()
