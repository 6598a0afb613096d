//! `POST /v1/drain` and `POST /v1/resume`: stop taking new clients (lame duck:
//! `/health` answers 503, held sessions go on) and take them again. A drain
//! that a SIGTERM began cannot be resumed (409).

use std::sync::Arc;

use tokio::time::Instant;
use warp::http::StatusCode;
use warp::{Filter, Rejection};

use super::{error, method_not_allowed, query, AdminResponse, AdminState};
use crate::events::Event;
use crate::http::{exact_path, json, Reply};
use crate::lifecycle::Mode;

pub fn routes(
    state: Arc<AdminState>,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    let (drain_state, resume_state) = (state.clone(), state);
    let drain = exact_path(common::admin::DRAIN_PATH).and(
        warp::post()
            .and(query(&[]))
            .then(move |_| drain(drain_state.clone()))
            .or(method_not_allowed("POST"))
            .unify(),
    );
    let resume = exact_path(common::admin::RESUME_PATH).and(
        warp::post()
            .and(query(&[]))
            .then(move |_| resume(resume_state.clone()))
            .or(method_not_allowed("POST"))
            .unify(),
    );
    drain.or(resume).unify()
}

async fn drain(state: Arc<AdminState>) -> AdminResponse {
    let changed = state.lifecycle.drain();
    let now = wire(&state).await;
    if changed {
        state.events.emit(Event::DrainStarted {
            by: "operator",
            timeout_s: None,
            held: now.active_grants,
        });
    }
    json(StatusCode::OK, &now)
}

async fn resume(state: Arc<AdminState>) -> AdminResponse {
    match state.lifecycle.resume() {
        Ok(changed) => {
            let now = wire(&state).await;
            if changed {
                state.events.emit(Event::DrainEnded {
                    how: "resumed",
                    held: now.active_grants,
                });
            }
            json(StatusCode::OK, &now)
        }
        Err(e) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

/// The lifecycle as the admin API shows it.
pub async fn wire(state: &AdminState) -> common::admin::Lifecycle {
    let (_, occupancy) = state.grants.list().await;
    let mode = state.lifecycle.mode();
    common::admin::Lifecycle {
        state: mode.name().to_owned(),
        active_grants: occupancy.sessions,
        stop_in_seconds: match mode {
            Mode::Stopping { deadline, .. } => {
                Some(deadline.saturating_duration_since(Instant::now()).as_secs())
            }
            _ => None,
        },
    }
}
