//! What the metrics listener serves: `/metrics` (the registry in the
//! OpenMetrics text format, any method, as before); every other path is 404.

use std::convert::Infallible;
use std::sync::Arc;

use warp::http::header::{HeaderValue, CONTENT_TYPE};
use warp::http::StatusCode;
use warp::Filter;

use crate::http::{exact_path, plain, Reply};
use crate::metrics::Metrics;

pub fn routes(
    metrics: Arc<Metrics>,
) -> impl Filter<Extract = (Reply,), Error = Infallible> + Clone {
    exact_path("/metrics")
        .map(move || {
            let mut response = Reply::new(metrics.encode().into());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        })
        .or(warp::any().map(|| plain(StatusCode::NOT_FOUND, "not found")))
        .unify()
}
