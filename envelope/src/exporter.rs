//! What the metrics listener serves: `/metrics` (the registry in the
//! OpenMetrics text format, any method, as before) for Prometheus, and
//! `/health` for Locate's heartbeat and Kubernetes probes: 200 `ok` while
//! serving, 503 and a one-line reason while draining or stopping, or while a
//! firewall change is failing. Every other path is 404.

use std::convert::Infallible;
use std::sync::Arc;

use warp::http::header::{HeaderValue, CONTENT_TYPE};
use warp::http::StatusCode;
use warp::Filter;

use crate::http::{exact_path, plain, Reply};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;

pub fn routes(
    metrics: Arc<Metrics>,
    lifecycle: Lifecycle,
) -> impl Filter<Extract = (Reply,), Error = Infallible> + Clone {
    let scrape = exact_path("/metrics").map(move || {
        let mut response = Reply::new(metrics.encode().into());
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        response
    });
    let health = exact_path("/health").map(move || match lifecycle.unhealthy() {
        None => plain(StatusCode::OK, "ok"),
        Some(reason) => plain(StatusCode::SERVICE_UNAVAILABLE, &reason),
    });
    scrape
        .or(health)
        .unify()
        .or(warp::any().map(|| plain(StatusCode::NOT_FOUND, "not found")))
        .unify()
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;
    use hyper::service::Service as _;

    use super::*;

    async fn get(lifecycle: &Lifecycle, path: &str) -> (u16, String) {
        let metrics = Arc::new(Metrics::new());
        let service = hyper_util::service::TowerToHyperService::new(warp::service(routes(
            metrics,
            lifecycle.clone(),
        )));
        let request = warp::http::Request::get(path)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = service.call(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn health_is_ok_while_serving_and_503_with_the_reason_otherwise() {
        let lifecycle = Lifecycle::new(Arc::new(Metrics::new()));
        assert_eq!(get(&lifecycle, "/health").await, (200, "ok\n".into()));
        lifecycle.drain();
        assert_eq!(get(&lifecycle, "/health").await, (503, "draining\n".into()));
        lifecycle.resume().unwrap();
        lifecycle.set_firewall_failing(Some("revoke 192.0.2.0/24".into()));
        assert_eq!(
            get(&lifecycle, "/health").await,
            (503, "firewall change failing: revoke 192.0.2.0/24\n".into())
        );
        assert_eq!(get(&lifecycle, "/healthz").await.0, 404);
        let (status, text) = get(&lifecycle, "/metrics").await;
        assert_eq!(status, 200);
        assert!(text.contains("lame_duck_experiment"), "{text}");
    }
}
