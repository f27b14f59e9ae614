"""Object storage for exports: a local folder by default, any S3-compatible
store in production.

Every object key starts with the id of the workspace it belongs to
(`<workspace id>/exports/<export id>/<attempt>/export.json`), and every
download link names that workspace: a link is only served when the key sits
under the workspace it was signed for, so a link for one workspace's export
never serves another's.

Download links always point at the app (`/exports/download`, signed with
HMAC), whatever the backend: the app checks on every use that the workspace
is active and the export live. With S3 it then redirects to a presigned GET
that lives only a minute (PRESIGNED_TTL), so a link handed out before the
workspace was deleted stops working with the deletion, not a day later.

Publishing is atomic in both backends: the bytes go to a temporary name
first, are verified against the SHA-256 computed while writing, and only
then take their final name (a rename on disk; copy and delete in S3). A
crash at any point leaves no object under a published key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import time
import urllib.parse
import uuid
from pathlib import Path

from cajex import log

_logger = log.get("cajex.storage")

#: Download links live this long unless asked otherwise.
LINK_TTL = 24 * 3600
#: The presigned GET the download endpoint redirects to: long enough for the
#: browser to follow the redirect, too short to be kept and shared.
PRESIGNED_TTL = 60
_CHUNK = 1 << 20


class LinkError(Exception):
    """A download link that must not be served; `status` is the HTTP answer."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code


def check_key(workspace_id: str, key: str) -> str:
    """`key` if it is a clean key under `workspace_id`, else ValueError."""
    prefix = f"{uuid.UUID(str(workspace_id))}/"
    parts = key.split("/")
    if (
        not key.startswith(prefix)
        or any(p in ("", ".", "..") for p in parts)
        or "\\" in key
    ):
        raise ValueError("an object key must sit under its workspace")
    return key


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def link_signature(secret: str, workspace_id: str, key: str, expires: int) -> str:
    """HMAC-SHA256 over the workspace, the key and the expiry."""
    body = f"v1\n{workspace_id}\n{key}\n{expires}".encode()
    return hmac.new(_link_key(secret), body, hashlib.sha256).hexdigest()


def _link_key(secret: str) -> bytes:
    # A key of its own, derived from the app secret: a download signature is
    # useless as any other signature and the other way round.
    return hmac.new(
        secret.encode(), b"cajex export download links", hashlib.sha256
    ).digest()


def verify_link(
    secret: str,
    workspace_id: str,
    key: str,
    expires: str,
    signature: str,
    now: float | None = None,
) -> str:
    """The key a download link may serve, or LinkError (403 forged/misplaced, 410 expired)."""
    try:
        workspace_id = str(uuid.UUID(workspace_id))
        check_key(workspace_id, key)
        exp = int(expires)
    except (ValueError, TypeError):
        raise LinkError(403, "bad_link", "this download link is not valid") from None
    want = link_signature(secret, workspace_id, key, exp)
    if not hmac.compare_digest(want, signature or ""):
        raise LinkError(403, "bad_link", "this download link is not valid")
    if exp <= (time.time() if now is None else now):
        raise LinkError(
            410, "expired", "this download link has expired; ask for a new one"
        )
    return key


def app_link(
    secret: str,
    public_url: str,
    workspace_id: str,
    key: str,
    ttl: int = LINK_TTL,
    now: float | None = None,
) -> str:
    """A signed link to the app's download endpoint, good for `ttl` seconds."""
    workspace_id = str(uuid.UUID(str(workspace_id)))
    check_key(workspace_id, key)
    if not secret:
        raise ValueError("download links need the app's secret key")
    exp = int((time.time() if now is None else now) + ttl)
    query = urllib.parse.urlencode(
        {
            "w": workspace_id,
            "k": key,
            "e": exp,
            "s": link_signature(secret, workspace_id, key, exp),
        }
    )
    return f"{public_url.rstrip('/')}/exports/download?{query}"


class LocalStorage:
    """Objects as files under `<data dir>/objects`, served by the app's
    download endpoint through signed links."""

    kind = "local"

    def __init__(self, root: Path, secret: str, public_url: str = ""):
        self.root = Path(root)
        self.secret = secret
        self.public_url = public_url.rstrip("/")

    def _path(self, key: str) -> Path:
        return self.root / "objects" / key

    def temp_path(self, workspace_id: str) -> Path:
        """A private scratch file for an object being written (never served)."""
        folder = self.root / "tmp" / str(uuid.UUID(str(workspace_id)))
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{uuid.uuid4().hex}.partial"

    def publish(self, workspace_id: str, temp: Path, key: str, sha256: str) -> dict:
        """Verify `temp` against `sha256`, then give it its key atomically."""
        check_key(workspace_id, key)
        if sha256_file(temp) != sha256:
            raise OSError("the written file does not match its checksum")
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        # Same file system (both under the data folder), so a rename is atomic:
        # a reader sees the whole file or none.
        os.replace(temp, final)
        return {"key": key, "sha256": sha256, "bytes": final.stat().st_size}

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def open(self, key: str):
        return open(self._path(key), "rb")

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix` (a workspace or an export); returns the count."""
        folder = self._path(prefix.rstrip("/"))
        count = 0
        if folder.is_dir():
            count = sum(1 for p in folder.rglob("*") if p.is_file())
            shutil.rmtree(folder, ignore_errors=True)
        scratch = self.root / "tmp" / prefix.split("/", 1)[0]
        if prefix.count("/") <= 1 and scratch.is_dir():
            shutil.rmtree(scratch, ignore_errors=True)
        return count

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
            return True
        except FileNotFoundError:
            return False

    def link(
        self, workspace_id: str, key: str, ttl: int = LINK_TTL, now: float | None = None
    ) -> str:
        """A signed download link, good for `ttl` seconds."""
        return app_link(self.secret, self.public_url, workspace_id, key, ttl, now)


class S3Storage:
    """Objects in an S3-compatible bucket. Links point at the app, which
    checks them and redirects to a short-lived presigned GET."""

    kind = "s3"

    def __init__(
        self,
        endpoint_url: str,
        bucket: str,
        scratch: Path,
        client=None,
        secret: str = "",
        public_url: str = "",
    ):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.scratch = Path(scratch)
        self.secret = secret
        self.public_url = public_url.rstrip("/")
        # SigV4 everywhere: its presigned links carry their own expiry
        # (X-Amz-Expires), which every S3-compatible store enforces.
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            config=Config(signature_version="s3v4"),
        )

    def temp_path(self, workspace_id: str) -> Path:
        folder = self.scratch / "tmp" / str(uuid.UUID(str(workspace_id)))
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{uuid.uuid4().hex}.partial"

    def publish(self, workspace_id: str, temp: Path, key: str, sha256: str) -> dict:
        """Upload under a temporary key, check it, copy to `key`, delete the temporary one."""
        check_key(workspace_id, key)
        if sha256_file(temp) != sha256:
            raise OSError("the written file does not match its checksum")
        size = temp.stat().st_size
        temp_key = f"{workspace_id}/uploading/{uuid.uuid4().hex}"
        try:
            self.client.upload_file(
                str(temp),
                self.bucket,
                temp_key,
                ExtraArgs={"Metadata": {"sha256": sha256}},
            )
            head = self.client.head_object(Bucket=self.bucket, Key=temp_key)
            if (
                head["ContentLength"] != size
                or head.get("Metadata", {}).get("sha256") != sha256
            ):
                raise OSError("the uploaded object does not match what was written")
            self.client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": temp_key},
                MetadataDirective="COPY",
            )
        finally:
            self.client.delete_object(Bucket=self.bucket, Key=temp_key)
        temp.unlink(missing_ok=True)
        return {"key": key, "sha256": sha256, "bytes": size}

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except self.client.exceptions.ClientError:
            return False

    def delete_prefix(self, prefix: str) -> int:
        count = 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                )
                count += len(keys)
        return count

    def delete(self, key: str) -> bool:
        self.client.delete_object(Bucket=self.bucket, Key=key)
        return True

    def link(
        self, workspace_id: str, key: str, ttl: int = LINK_TTL, now: float | None = None
    ) -> str:
        """A signed link to the app's download endpoint (never the bucket:
        a presigned GET would outlive a deletion by its whole life)."""
        return app_link(self.secret, self.public_url, workspace_id, key, ttl, now)

    def presigned(self, workspace_id: str, key: str, ttl: int = PRESIGNED_TTL) -> str:
        """A presigned GET for the download endpoint to redirect to, once it
        has checked the link and the export; SigV4 carries `ttl` as
        X-Amz-Expires, which the store enforces."""
        check_key(str(uuid.UUID(str(workspace_id))), key)
        name = key.rsplit("/", 1)[-1]
        return self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentDisposition": f'attachment; filename="{name}"',
                "ResponseCacheControl": "no-store",
            },
            ExpiresIn=int(ttl),
        )


def from_settings(settings) -> LocalStorage | S3Storage:
    """S3 when a bucket is configured, the local folder otherwise."""
    if settings.s3_bucket:
        return S3Storage(
            settings.s3_endpoint_url,
            settings.s3_bucket,
            Path(settings.data_dir) / "exports",
            secret=settings.secret_key,
            public_url=settings.public_url,
        )
    return LocalStorage(
        Path(settings.data_dir) / "exports", settings.secret_key, settings.public_url
    )
