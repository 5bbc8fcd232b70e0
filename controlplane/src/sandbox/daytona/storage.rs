//! Build contexts travel as Daytona's SDKs send them: `GET /object-storage/push-access`
//! gives temporary S3 credentials, the context archive goes to
//! `<bucket>/<organizationId>/<hash>/context.tar` (path-style, AWS Signature Version 4 with
//! the session token), and the snapshot names the hash in `buildInfo.contextHashes`; the
//! runner unpacks it beside the Dockerfile. An archive already there is not sent again.

use std::path::Path;
use std::time::Duration;

use aws_lc_rs::{digest, hmac};
use reqwest::StatusCode;

use super::api::StorageAccess;
use super::client::{ApiError, DaytonaClient, read_capped};

/// How long one upload may take (the context carries the OpenCode binary and packages).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Where an archive goes, and how to sign for it.
pub(crate) struct Upload<'a> {
    pub access: &'a StorageAccess,
    pub hash: &'a str,
}

impl Upload<'_> {
    fn endpoint(&self) -> String {
        let url = self.access.storage_url.trim_end_matches('/');
        if url.starts_with("http://") || url.starts_with("https://") {
            url.to_owned()
        } else {
            format!("https://{url}")
        }
    }

    /// `/<bucket>/<org>/<hash>/context.tar`
    fn path(&self) -> String {
        format!(
            "/{}/{}/{}/context.tar",
            self.access.bucket, self.access.organization_id, self.hash
        )
    }

    /// The region an S3 endpoint names (`s3.<region>.amazonaws.com`), else `us-east-1`, as
    /// Daytona's SDKs take it.
    fn region(&self) -> String {
        let url = &self.access.storage_url;
        if url.contains("amazonaws.com") {
            let parts: Vec<&str> = url.split(['.', '/']).collect();
            if let Some(i) = parts.iter().position(|p| *p == "s3")
                && let Some(region) = parts.get(i + 1)
                && *region != "amazonaws"
            {
                return (*region).to_owned();
            }
        }
        "us-east-1".into()
    }

    fn signed(
        &self,
        client: &DaytonaClient,
        method: reqwest::Method,
        payload_sha256: &str,
    ) -> Result<reqwest::RequestBuilder, String> {
        let endpoint = self.endpoint();
        let url = reqwest::Url::parse(&format!("{endpoint}{}", self.path()))
            .map_err(|e| format!("object storage URL {endpoint:?}: {e}"))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err(format!("object storage URL {endpoint:?} has no host")),
        };
        let now = chrono::Utc::now();
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let headers = [
            ("x-amz-content-sha256", payload_sha256),
            ("x-amz-date", amz_date.as_str()),
            ("x-amz-security-token", self.access.session_token.as_str()),
        ];
        let authorization = sign(&Signing {
            method: method.as_str(),
            host: &host,
            path: url.path(),
            headers: &headers,
            payload_sha256,
            amz_date: &amz_date,
            region: &self.region(),
            access_key: &self.access.access_key,
            secret: &self.access.secret,
        });
        let mut req = client
            .http()
            .request(method, url)
            .header("authorization", authorization);
        for (name, value) in headers {
            req = req.header(name, value);
        }
        Ok(req)
    }

    /// Whether the archive is already stored (HEAD on its key).
    pub async fn exists(&self, client: &DaytonaClient) -> Result<bool, ApiError> {
        let call = format!("HEAD {}", self.path());
        let empty = hex::encode(digest::digest(&digest::SHA256, b"").as_ref());
        client
            .retry()
            .run(|| {
                let req = self.signed(client, reqwest::Method::HEAD, &empty);
                let call = call.clone();
                async move {
                    let req = req.map_err(|reason| transport(&call, reason))?;
                    let resp = req
                        .timeout(HEAD_TIMEOUT)
                        .send()
                        .await
                        .map_err(|e| transport(&call, e.to_string()))?;
                    match resp.status() {
                        s if s.is_success() => Ok(true),
                        StatusCode::NOT_FOUND => Ok(false),
                        s => Err((storage_error(&call, s, resp).await, None)),
                    }
                }
            })
            .await
    }

    /// Sends the archive at `file` (whose SHA-256 is `payload_sha256`).
    pub async fn put(
        &self,
        client: &DaytonaClient,
        file: &Path,
        payload_sha256: &str,
    ) -> Result<(), ApiError> {
        let call = format!("PUT {}", self.path());
        client
            .retry()
            .run(|| {
                let req = self.signed(client, reqwest::Method::PUT, payload_sha256);
                let call = call.clone();
                async move {
                    let req = req.map_err(|reason| transport(&call, reason))?;
                    let opened = tokio::fs::File::open(file)
                        .await
                        .map_err(|e| transport(&call, format!("opening the archive: {e}")))?;
                    let len = opened
                        .metadata()
                        .await
                        .map_err(|e| transport(&call, format!("reading the archive: {e}")))?
                        .len();
                    let resp = req
                        .timeout(UPLOAD_TIMEOUT)
                        .header("content-type", "application/x-tar")
                        .header("content-length", len)
                        .body(reqwest::Body::from(opened))
                        .send()
                        .await
                        .map_err(|e| transport(&call, e.to_string()))?;
                    if resp.status().is_success() {
                        Ok(())
                    } else {
                        Err((storage_error(&call, resp.status(), resp).await, None))
                    }
                }
            })
            .await
    }
}

fn transport(call: &str, reason: String) -> (ApiError, Option<Duration>) {
    (
        ApiError::Transport {
            call: format!("object storage {call}"),
            reason,
        },
        None,
    )
}

async fn storage_error(call: &str, status: StatusCode, resp: reqwest::Response) -> ApiError {
    let body = read_capped(resp, 64 << 10).await.unwrap_or_default();
    ApiError::Status {
        call: format!("object storage {call}"),
        status: status.as_u16(),
        error: status.canonical_reason().unwrap_or("").to_owned(),
        message: String::from_utf8_lossy(&body).trim().to_owned(),
    }
}

/// One request to sign with AWS Signature Version 4 (header form, service `s3`).
pub(crate) struct Signing<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// Already URI-encoded, as sent.
    pub path: &'a str,
    /// Lower-case names, besides `host`.
    pub headers: &'a [(&'a str, &'a str)],
    pub payload_sha256: &'a str,
    /// `YYYYMMDDTHHMMSSZ`
    pub amz_date: &'a str,
    pub region: &'a str,
    pub access_key: &'a str,
    pub secret: &'a str,
}

/// The `Authorization` header of a request (no query string).
pub(crate) fn sign(s: &Signing<'_>) -> String {
    let mut headers: Vec<(&str, &str)> = s.headers.to_vec();
    headers.push(("host", s.host));
    headers.sort_by_key(|(name, _)| *name);
    let canonical_headers: String = headers
        .iter()
        .map(|(n, v)| format!("{n}:{}\n", v.trim()))
        .collect();
    let signed_headers = headers
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{}\n{}\n\n{canonical_headers}\n{signed_headers}\n{}",
        s.method, s.path, s.payload_sha256
    );
    let day = &s.amz_date[..8.min(s.amz_date.len())];
    let scope = format!("{day}/{}/s3/aws4_request", s.region);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        s.amz_date,
        hex::encode(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let mac = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
            .as_ref()
            .to_vec()
    };
    let mut key = mac(format!("AWS4{}", s.secret).as_bytes(), day);
    for part in [s.region, "s3", "aws4_request"] {
        key = mac(&key, part);
    }
    let signature = hex::encode(mac(&key, &to_sign));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope},SignedHeaders={signed_headers},Signature={signature}",
        s.access_key
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The "GET Object" example of AWS's Signature Version 4 documentation for S3.
    #[test]
    fn signs_as_aws_documents() {
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let auth = sign(&Signing {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            headers: &[
                ("range", "bytes=0-9"),
                ("x-amz-content-sha256", empty),
                ("x-amz-date", "20130524T000000Z"),
            ],
            payload_sha256: empty,
            amz_date: "20130524T000000Z",
            region: "us-east-1",
            access_key: "AKIAIOSFODNN7EXAMPLE",
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        });
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn keys_and_regions_follow_daytonas_sdks() {
        let access = StorageAccess {
            access_key: "a".into(),
            secret: "s".into(),
            session_token: "t".into(),
            storage_url: "s3.eu-west-1.amazonaws.com".into(),
            organization_id: "org".into(),
            bucket: "daytona".into(),
        };
        let upload = Upload {
            access: &access,
            hash: "h",
        };
        assert_eq!(upload.path(), "/daytona/org/h/context.tar");
        assert_eq!(upload.endpoint(), "https://s3.eu-west-1.amazonaws.com");
        assert_eq!(upload.region(), "eu-west-1");
        let access = StorageAccess {
            storage_url: "http://127.0.0.1:9000/".into(),
            ..access
        };
        let upload = Upload {
            access: &access,
            hash: "h",
        };
        assert_eq!(upload.endpoint(), "http://127.0.0.1:9000");
        assert_eq!(upload.region(), "us-east-1");
    }
}
