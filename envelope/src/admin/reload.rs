//! `POST /v1/reload`: reloads the verify keys, all or nothing; a refused set is a
//! 422 naming the reason, and the old keys stay in force.

use common::admin::{ApiError, Reloaded};
use hyper::{Method, StatusCode};
use time::OffsetDateTime;

use super::{error, json, method_not_allowed, query_pairs, AdminResponse, AdminState};

pub async fn handle(state: &AdminState, method: &Method, query: Option<&str>) -> AdminResponse {
    if method != Method::POST {
        return method_not_allowed("POST");
    }
    if let Err(message) = query_pairs(query, &[]) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let Some(keys) = &state.keys else {
        return error(
            StatusCode::CONFLICT,
            "no --verify-key is configured: there are no keys to reload",
        );
    };
    match keys.reload_counted(&state.metrics, "admin") {
        Ok(set) => json(
            StatusCode::OK,
            &Reloaded {
                kids: set.kids.iter().map(|(kid, _)| kid.clone()).collect(),
                loaded_at: OffsetDateTime::from(set.loaded_at),
            },
        ),
        Err(e) => {
            let mut body = ApiError::from_chain(&e);
            body.errors
                .insert(0, "reload refused; the old keys stay in force".to_owned());
            json(StatusCode::UNPROCESSABLE_ENTITY, &body)
        }
    }
}
