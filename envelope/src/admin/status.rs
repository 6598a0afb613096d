//! `GET /v1/status`: what this envelope is and how full it is.

use std::sync::Arc;

use warp::http::StatusCode;
use warp::{Filter, Rejection};

use super::{method_not_allowed, query, AdminResponse, AdminState};
use crate::http::{exact_path, json, Reply};
use crate::tls::LoadedCert;

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
        certificate: state
            .reloader
            .certs()
            .map(|certs| certificate(&certs.current())),
        lifecycle: super::lifecycle::wire(&state).await,
        boot: state.events.boot().to_owned(),
    };
    if let Some(keys) = state.reloader.keys() {
        let set = keys.current();
        status.keys = set
            .keys
            .iter()
            .map(|key| common::admin::LoadedKey {
                kid: key.kid.clone(),
                file: key.file.display().to_string(),
            })
            .collect();
        status.keys_loaded_at = Some(time::OffsetDateTime::from(set.loaded_at));
    }
    json(StatusCode::OK, &status)
}

/// The leaf certificate in force, as the admin API shows it.
pub fn certificate(loaded: &LoadedCert) -> common::admin::Certificate {
    common::admin::Certificate {
        subject: loaded.leaf.subject.clone(),
        serial: loaded.leaf.serial.clone(),
        not_after: loaded.leaf.not_after,
        loaded_at: time::OffsetDateTime::from(loaded.loaded_at),
    }
}
