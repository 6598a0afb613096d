//! `POST /v1/reload`: reloads the verify keys and the TLS certificate, each all
//! or nothing; a refused one is a 422 naming the reason, and what was in force
//! stays in force.

use std::sync::Arc;

use common::admin::{ApiError, Reloaded};
use time::OffsetDateTime;
use warp::http::StatusCode;
use warp::{Filter, Rejection};

use super::{error, method_not_allowed, query, status::certificate, AdminResponse, AdminState};
use crate::http::{exact_path, json, Reply};
use crate::reload::Trigger;

pub fn routes(
    state: Arc<AdminState>,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    exact_path(common::admin::RELOAD_PATH).and(
        warp::post()
            .and(query(&[]))
            .then(move |_| post(state.clone()))
            .or(method_not_allowed("POST"))
            .unify(),
    )
}

async fn post(state: Arc<AdminState>) -> AdminResponse {
    let reloaded = state.reloader.reload(Trigger::Admin).await;
    if reloaded.is_empty() {
        return error(
            StatusCode::CONFLICT,
            "no --verify-key or --cert is configured: there is nothing to reload",
        );
    }
    let mut refused = ApiError {
        errors: Vec::new(),
        oldest_seq: None,
    };
    let mut answer = Reloaded {
        kids: Vec::new(),
        loaded_at: OffsetDateTime::now_utc(),
        certificate: None,
    };
    match reloaded.keys {
        Some(Ok(set)) => {
            answer.kids = set.kids().into_iter().map(str::to_owned).collect();
            answer.loaded_at = OffsetDateTime::from(set.loaded_at);
        }
        Some(Err(e)) => {
            refused
                .errors
                .push("reload refused; the old keys stay in force".to_owned());
            refused
                .errors
                .extend(ApiError::from_chain(e.as_ref()).errors);
        }
        None => {}
    }
    match reloaded.certificate {
        Some(Ok(loaded)) => answer.certificate = Some(certificate(&loaded)),
        Some(Err(e)) => {
            refused
                .errors
                .push("certificate reload refused; the old certificate stays in force".to_owned());
            refused
                .errors
                .extend(ApiError::from_chain(e.as_ref()).errors);
        }
        None => {}
    }
    if refused.errors.is_empty() {
        json(StatusCode::OK, &answer)
    } else {
        json(StatusCode::UNPROCESSABLE_ENTITY, &refused)
    }
}
