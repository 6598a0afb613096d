//! `POST /v1/reload`: reloads the verify keys, all or nothing; a refused set is a
//! 422 naming the reason, and the old keys stay in force.

use std::sync::Arc;

use common::admin::{ApiError, Reloaded};
use time::OffsetDateTime;
use warp::http::StatusCode;
use warp::{Filter, Rejection};

use super::{error, method_not_allowed, query, AdminResponse, AdminState};
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
    let Some(reloaded) = state.reloader.reload(Trigger::Admin) else {
        return error(
            StatusCode::CONFLICT,
            "no --verify-key is configured: there are no keys to reload",
        );
    };
    match reloaded {
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
