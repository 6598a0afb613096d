//! The Locate API v2 `nearest` request and its answer (`m-lab/locate` `api/v2`).

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::net::{Connector, Endpoint};
use crate::one_line;

/// Larger answers are refused: a real one for a handful of targets is a few KiB.
const MAX_BODY: usize = 1 << 20;

/// `v2.NearestResult`.
#[derive(Debug, Deserialize)]
pub struct NearestResult {
    #[serde(default)]
    pub error: Option<LocateError>,
    #[serde(default)]
    pub results: Option<Vec<Target>>,
}

/// `v2.Error`, an RFC 7807-style problem.
#[derive(Debug, Deserialize)]
pub struct LocateError {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: i64,
    #[serde(default)]
    pub detail: String,
}

impl std::fmt::Display for LocateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let title = if self.title.is_empty() {
            &self.kind
        } else {
            &self.title
        };
        write!(f, "{} (status {})", one_line(title), self.status)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", one_line(&self.detail))?;
        }
        Ok(())
    }
}

/// `v2.Target`: one machine and its service URLs, keyed by scheme, port and path.
#[derive(Debug, Deserialize)]
pub struct Target {
    #[serde(default)]
    pub machine: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub urls: BTreeMap<String, String>,
}

/// `<prefix><service>`, joined like Go's `path.Join` on the prefix's path; the
/// prefix's query (an API key, say) is kept.
pub fn request_url(prefix: &str, service: &str) -> Result<Uri, String> {
    let bad = |why: &str| format!("--locate-url {:?}: {why}", one_line(prefix));
    let uri: Uri = prefix.parse().map_err(|_| bad("not a URL"))?;
    Endpoint::of(&uri, "http", "https").map_err(|e| bad(&e))?;
    let base = uri.path().trim_end_matches('/');
    let service = service.trim_matches('/');
    let mut path_and_query = format!("{base}/{service}");
    if let Some(query) = uri.query() {
        path_and_query = format!("{path_and_query}?{query}");
    }
    let mut parts = uri.into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| bad("the service name does not fit in a URL path"))?,
    );
    Uri::from_parts(parts).map_err(|e| bad(&e.to_string()))
}

/// What may be printed of a Locate URL: scheme, host and path, never its query.
pub fn printable(uri: &Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or(""),
        uri.authority().map_or("", |a| a.as_str()),
        uri.path()
    )
}

/// GETs `uri` and parses the answer, whatever its HTTP status: Locate reports its
/// errors as a JSON error object with a 4xx/5xx status.
pub async fn nearest(connector: &Connector, uri: &Uri) -> Result<NearestResult, String> {
    let endpoint = Endpoint::of(uri, "http", "https")?;
    let where_ = printable(uri);
    let stream = connector
        .connect(&endpoint)
        .await
        .map_err(|e| format!("cannot reach Locate at {where_}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("cannot talk to Locate at {where_}: {e}"))?;
    tokio::spawn(connection);
    let request = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            hyper::header::HOST,
            uri.authority().map_or("", |a| a.as_str()),
        )
        .header(hyper::header::ACCEPT, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("envelope-exec/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the Locate request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("Locate at {where_} did not answer: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("cannot read Locate's answer from {where_}: {e}"))?
        .to_bytes();
    match serde_json::from_slice::<NearestResult>(&body) {
        Ok(result) if status.is_success() || result.error.is_some() => Ok(result),
        Ok(_) => Err(format!("Locate at {where_} answered {status}")),
        Err(e) if status.is_success() => Err(format!(
            "Locate at {where_} answered something that is not a v2 result: {e}"
        )),
        Err(_) => Err(format!("Locate at {where_} answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_is_appended_to_the_prefix_path() {
        for (prefix, service, want) in [
            (
                "https://locate.measurementlab.net/v2/nearest/",
                "wehe/replay",
                "https://locate.measurementlab.net/v2/nearest/wehe/replay",
            ),
            (
                "http://127.0.0.1:8080/v2/nearest",
                "/ndt/ndt7",
                "http://127.0.0.1:8080/v2/nearest/ndt/ndt7",
            ),
            (
                "https://example.org/v2/nearest/?key=abc",
                "wehe/replay",
                "https://example.org/v2/nearest/wehe/replay?key=abc",
            ),
        ] {
            assert_eq!(request_url(prefix, service).unwrap().to_string(), want);
        }
        assert!(request_url("ftp://example.org/", "x").is_err());
        assert!(request_url("not a url", "x").is_err());
        assert!(request_url("https://example.org/", "a b").is_err());
    }

    #[test]
    fn a_printable_url_has_no_query() {
        let uri = request_url("https://example.org/v2/nearest/?key=secret", "wehe/replay").unwrap();
        assert_eq!(
            printable(&uri),
            "https://example.org/v2/nearest/wehe/replay"
        );
    }

    #[test]
    fn answers_parse_like_the_go_types() {
        let ok: NearestResult = serde_json::from_str(
            r#"{"results":[{"machine":"mlab1-lga03.mlab-oti.measurement-lab.org","location":{"city":"New York"},
                "urls":{"wss://:4443/v0/envelope/access":"wss://x:4443/v0/envelope/access?access_token=t"}}]}"#,
        )
        .unwrap();
        let targets = ok.results.unwrap();
        assert_eq!(
            targets[0].machine,
            "mlab1-lga03.mlab-oti.measurement-lab.org"
        );
        assert!(targets[0]
            .urls
            .contains_key("wss://:4443/v0/envelope/access"));
        let err: NearestResult = serde_json::from_str(
            r#"{"error":{"type":"?nearest=failed","title":"no healthy servers","status":503,"detail":"line\nbreak"},"results":null}"#,
        )
        .unwrap();
        assert_eq!(
            err.error.unwrap().to_string(),
            "no healthy servers (status 503): line break"
        );
        assert!(err.results.is_none());
    }
}
