//! `GET /v1/status`: what this envelope is and how full it is.

use std::sync::Arc;

use warp::http::StatusCode;
use warp::{Filter, Rejection};

use super::{json, method_not_allowed, query, AdminResponse, AdminState};
use crate::access::exact_path;
use crate::server::Reply;

pub fn routes(
    state: Arc<AdminState>,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    exact_path(common::admin::STATUS_PATH).and(
        warp::get()
            .and(query(&[]))
            .then(move |_| get(state.clone()))
            .or(method_not_allowed("GET"))
            .unify(),
    )
}

async fn get(state: Arc<AdminState>) -> AdminResponse {
    let (_, occupancy) = state.grants.list().await;
    let mut status = common::admin::Status {
        version: common::build_info::VERSION.to_owned(),
        revision: common::build_info::REVISION.to_owned(),
        rustc: common::build_info::RUSTC.to_owned(),
        machine: state.machine.clone(),
        subject: state.subject.clone(),
        firewall: state.firewall.clone(),
        max_clients: state.max_clients,
        active_grants: occupancy.sessions,
        pending_revokes: occupancy.stuck_revokes,
        uptime_seconds: state.started.elapsed().as_secs(),
        keys: Vec::new(),
        keys_loaded_at: None,
        listening: state.listening.clone(),
        metrics_listening: state.metrics_listening.clone(),
    };
    if let Some(keys) = &state.keys {
        let set = keys.current();
        status.keys = set
            .kids
            .iter()
            .map(|(kid, file)| common::admin::LoadedKey {
                kid: kid.clone(),
                file: file.display().to_string(),
            })
            .collect();
        status.keys_loaded_at = Some(time::OffsetDateTime::from(set.loaded_at));
    }
    json(StatusCode::OK, &status)
}
