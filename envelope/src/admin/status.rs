//! `GET /v1/status`: what this envelope is and how full it is.

use hyper::{Method, StatusCode};

use super::{error, json, method_not_allowed, query_pairs, AdminResponse, AdminState};

pub async fn handle(state: &AdminState, method: &Method, query: Option<&str>) -> AdminResponse {
    if method != Method::GET {
        return method_not_allowed("GET");
    }
    if let Err(message) = query_pairs(query, &[]) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let (_, occupancy) = state.grants.list().await;
    let mut status = common::admin::Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        machine: state.machine.clone(),
        subject: state.subject.clone(),
        firewall: state.firewall.clone(),
        max_clients: state.max_clients,
        active_grants: occupancy.sessions,
        pending_revokes: occupancy.stuck_revokes,
        uptime_seconds: state.started.elapsed().as_secs(),
        keys: Vec::new(),
        keys_loaded_at: None,
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
