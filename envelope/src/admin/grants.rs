//! `/v1/grants`: list (`GET`), revoke all (`DELETE`), revoke by address
//! (`DELETE ?ip=ADDR`, every grant whose subnet contains it) or by id
//! (`DELETE /v1/grants/{id}`). A revoke answers only once the rules are gone.

use std::net::IpAddr;
use std::sync::Arc;

use common::admin::{ApiError, Grant, Revoked};
use time::OffsetDateTime;
use warp::http::StatusCode;
use warp::path::FullPath;
use warp::{Filter, Rejection};

use super::{error, method_not_allowed, query, AdminResponse, AdminState};
use crate::events::Event;
use crate::grants::{GrantInfo, RevokeError, Selector};
use crate::http::{exact_path, json, PeerCred, Reply};

const ONE_PREFIX: &str = "/v1/grants/";

pub fn routes(
    state: Arc<AdminState>,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    let (list_state, revoke_state, one_state) = (state.clone(), state.clone(), state);
    let all = exact_path(common::admin::GRANTS_PATH).and(
        warp::get()
            .and(query(&[]))
            .then(move |_| list(list_state.clone()))
            .or(warp::delete()
                .and(query(&["ip"]))
                .and(caller())
                .then(move |pairs, caller| revoke_matching(revoke_state.clone(), pairs, caller)))
            .unify()
            .or(method_not_allowed("GET, DELETE"))
            .unify(),
    );
    let one = one_grant()
        .and(warp::delete())
        .and(query(&[]))
        .and(caller())
        .then(move |id: String, _, caller| revoke_one(one_state.clone(), id, caller))
        .or(one_grant()
            .and(method_not_allowed("DELETE"))
            .map(|_, reply: Reply| reply))
        .unify();
    all.or(one).unify()
}

/// Who is asking: the connection's kernel credentials.
fn caller() -> impl Filter<Extract = (Option<PeerCred>,), Error = std::convert::Infallible> + Copy {
    warp::ext::optional::<PeerCred>()
}

/// `/v1/grants/{id}`: extracts the (still encoded) id text.
fn one_grant() -> impl Filter<Extract = (String,), Error = Rejection> + Copy {
    warp::path::full().and_then(|path: FullPath| {
        std::future::ready(match path.as_str().strip_prefix(ONE_PREFIX) {
            Some(id) => Ok(id.to_owned()),
            None => Err(warp::reject::not_found()),
        })
    })
}

async fn list(state: Arc<AdminState>) -> AdminResponse {
    let (grants, _) = state.grants.list().await;
    let wire: Vec<Grant> = grants.iter().map(to_wire).collect();
    json(StatusCode::OK, &wire)
}

async fn revoke_matching(
    state: Arc<AdminState>,
    pairs: Vec<(String, String)>,
    caller: Option<PeerCred>,
) -> AdminResponse {
    match pairs.as_slice() {
        [] => revoke(&state, Selector::All, "every grant".into(), caller).await,
        [(_, text)] => match text.parse::<IpAddr>() {
            Ok(ip) => {
                let none = format!("no grant covers {ip}");
                revoke(&state, Selector::Ip(ip), none, caller).await
            }
            Err(_) => error(
                StatusCode::BAD_REQUEST,
                format!("ip={text:?} is not an IP address"),
            ),
        },
        _ => error(StatusCode::BAD_REQUEST, "give ip at most once"),
    }
}

async fn revoke_one(
    state: Arc<AdminState>,
    text: String,
    caller: Option<PeerCred>,
) -> AdminResponse {
    match text.parse::<u64>() {
        Ok(id) => {
            let none = format!("no grant with id {id}");
            revoke(&state, Selector::Id(id), none, caller).await
        }
        Err(_) => error(StatusCode::NOT_FOUND, format!("no grant with id {text:?}")),
    }
}

async fn revoke(
    state: &AdminState,
    selector: Selector,
    none_matched: String,
    caller: Option<PeerCred>,
) -> AdminResponse {
    match state.grants.revoke(selector).await {
        Ok(revoked) if revoked.is_empty() && selector != Selector::All => {
            error(StatusCode::NOT_FOUND, none_matched)
        }
        Ok(revoked) => {
            let ids: Vec<u64> = revoked.iter().map(|(id, _)| *id).collect();
            if !ids.is_empty() {
                // Several grants may share a subnet, in any order.
                let mut subnets: Vec<_> = revoked.iter().map(|(_, s)| *s).collect();
                subnets.sort();
                subnets.dedup();
                let subnets: Vec<String> = subnets.iter().map(ToString::to_string).collect();
                state.events.emit(Event::GrantRevoked {
                    grants: ids.clone(),
                    target: match selector {
                        Selector::All => "all".to_owned(),
                        Selector::Id(id) => format!("id={id}"),
                        Selector::Ip(ip) => format!("ip={ip}"),
                    },
                    subnets,
                    by_uid: caller.map(|c| c.uid),
                    by_pid: caller.and_then(|c| c.pid),
                });
            }
            json(StatusCode::OK, &Revoked { revoked: ids })
        }
        Err(e) => {
            let status = match e {
                RevokeError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
                RevokeError::Stuck { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            };
            // The whole chain, down to the firewall's own words.
            let mut body = ApiError::from_chain(&e);
            body.errors.insert(0, "revoke failed".into());
            json(status, &body)
        }
    }
}

pub fn to_wire(info: &GrantInfo) -> Grant {
    Grant {
        id: info.id,
        ip: info.ip,
        subnet: info.subnet.to_string(),
        subject: info.subject.clone(),
        monitoring: info.monitoring,
        started: OffsetDateTime::from(info.started),
        deadline: OffsetDateTime::from(info.deadline),
        kernel_remaining_seconds: info.kernel_remaining.map(|d| d.as_secs()),
    }
}
