//! `/v1/grants`: list (`GET`), revoke all (`DELETE`), revoke by address
//! (`DELETE ?ip=ADDR`, every grant whose subnet contains it) or by id
//! (`DELETE /v1/grants/{id}`). A revoke answers only once the rules are gone.

use std::net::IpAddr;

use common::admin::{ApiError, Grant, Revoked};
use hyper::{Method, StatusCode};
use time::OffsetDateTime;

use super::{error, json, method_not_allowed, query_pairs, AdminResponse, AdminState};
use crate::grants::{GrantInfo, Selector};

pub async fn handle(
    state: &AdminState,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> AdminResponse {
    let id = path.strip_prefix("/v1/grants/");
    match (method, id) {
        (&Method::GET, None) => match query_pairs(query, &[]) {
            Ok(_) => list(state).await,
            Err(message) => error(StatusCode::BAD_REQUEST, message),
        },
        (&Method::DELETE, None) => {
            let pairs = match query_pairs(query, &["ip"]) {
                Ok(pairs) => pairs,
                Err(message) => return error(StatusCode::BAD_REQUEST, message),
            };
            match pairs.as_slice() {
                [] => revoke(state, Selector::All, "every grant".into()).await,
                [("ip", text)] => match text.parse::<IpAddr>() {
                    Ok(ip) => {
                        revoke(state, Selector::Ip(ip), format!("no grant covers {ip}")).await
                    }
                    Err(_) => error(
                        StatusCode::BAD_REQUEST,
                        format!("ip={text:?} is not an IP address"),
                    ),
                },
                _ => error(StatusCode::BAD_REQUEST, "give ip at most once"),
            }
        }
        (&Method::DELETE, Some(text)) => {
            if let Err(message) = query_pairs(query, &[]) {
                return error(StatusCode::BAD_REQUEST, message);
            }
            match text.parse::<u64>() {
                Ok(id) => revoke(state, Selector::Id(id), format!("no grant with id {id}")).await,
                Err(_) => error(StatusCode::NOT_FOUND, format!("no grant with id {text:?}")),
            }
        }
        (_, None) => method_not_allowed("GET, DELETE"),
        (_, Some(_)) => method_not_allowed("DELETE"),
    }
}

async fn list(state: &AdminState) -> AdminResponse {
    let (grants, _) = state.grants.list().await;
    let wire: Vec<Grant> = grants.iter().map(to_wire).collect();
    json(StatusCode::OK, &wire)
}

async fn revoke(state: &AdminState, selector: Selector, none_matched: String) -> AdminResponse {
    match state.grants.revoke(selector).await {
        Ok(ids) if ids.is_empty() && selector != Selector::All => {
            error(StatusCode::NOT_FOUND, none_matched)
        }
        Ok(ids) => json(StatusCode::OK, &Revoked { revoked: ids }),
        Err(e) => {
            let mut body = ApiError::from_chain(&e);
            body.errors.insert(0, "revoke failed".into());
            json(StatusCode::INTERNAL_SERVER_ERROR, &body)
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
