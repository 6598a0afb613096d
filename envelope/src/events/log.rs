//! What an event adds to the log and the metrics: one line per event (its
//! type as the message, its fields as fields, so `--log-format json` carries
//! them too), and the counters that stand for it.

use time::format_description::well_known::Rfc3339;

use super::{Counted, Event, Record};
use crate::metrics::Metrics;

/// The access endpoint's path, as the Go original's token counter labels it.
const ACCESS_PATH: &str = "/v0/envelope/access";

pub(super) fn count(metrics: &Metrics, event: &Event) {
    metrics.count_event(event.kind());
    match event {
        Event::AccessRefused { counted, token, .. } | Event::GrantOpened { counted, token, .. } => {
            count_checks(metrics, *counted, token.kid.as_deref())
        }
        Event::GrantClosed { held_ms, .. } => {
            metrics.grant_duration.observe(*held_ms as f64 / 1000.0)
        }
        Event::KeysReloaded {
            trigger, result, ..
        } => metrics.count_reload("keys", trigger, *result == "success"),
        Event::CertificateReloaded {
            trigger, result, ..
        } => metrics.count_reload("certificate", trigger, *result == "success"),
        _ => {}
    }
}

fn count_checks(metrics: &Metrics, counted: Counted, kid: Option<&str>) {
    if let Some(label) = counted.token {
        let accepted = label == "valid";
        metrics.count_token(ACCESS_PATH, accepted, label);
        if let (true, Some(kid)) = (accepted, kid) {
            metrics.count_token_accepted(kid);
        }
    }
    if let Some(accepted) = counted.tx {
        metrics.count_tx(accepted, counted.tls);
    }
}

fn or_dash(text: &Option<String>) -> &str {
    text.as_deref().unwrap_or("-")
}

pub(super) fn write(record: &Record) {
    let seq = record.seq;
    match &record.event {
        Event::AccessRefused {
            reason,
            status,
            peer,
            subnet,
            token,
            ..
        } => tracing::info!(
            seq,
            %peer,
            %subnet,
            reason,
            status,
            kid = or_dash(&token.kid),
            jti = or_dash(&token.jti),
            sub = or_dash(&token.sub),
            "access.refused"
        ),
        Event::GrantOpened {
            grant,
            peer,
            subnet,
            subject,
            monitoring,
            token,
            deadline,
            ..
        } => tracing::info!(
            seq,
            grant,
            %peer,
            %subnet,
            subject = %subject,
            monitoring,
            kid = or_dash(&token.kid),
            jti = or_dash(&token.jti),
            deadline = %deadline.format(&Rfc3339).unwrap_or_default(),
            "grant.opened"
        ),
        Event::GrantClosed {
            grant,
            peer,
            subnet,
            reason,
            held_ms,
        } => tracing::info!(seq, grant, %peer, %subnet, reason, held_ms, "grant.closed"),
        Event::GrantRevoked {
            grants,
            target,
            subnets,
            by_uid,
            by_pid,
        } => tracing::info!(
            seq,
            grants = ?grants,
            target = %target,
            subnets = ?subnets,
            by_uid = *by_uid,
            by_pid = *by_pid,
            "grant.revoked"
        ),
        Event::FirewallFailed {
            operation,
            subnets,
            error,
        } => tracing::error!(seq, operation, subnets = ?subnets, error = %error, "firewall.failed"),
        Event::FirewallRecovered { operation, subnets } => {
            tracing::info!(seq, operation, subnets = ?subnets, "firewall.recovered")
        }
        Event::KeysReloaded {
            trigger,
            result,
            kids,
            added,
            removed,
            error,
        } => match error {
            None => tracing::info!(
                trigger,
                seq,
                kids = ?kids,
                added = ?added,
                removed = ?removed,
                "keys.reloaded: verify keys reloaded"
            ),
            Some(error) => tracing::warn!(
                trigger,
                seq,
                result,
                error = %error,
                "keys.reloaded: verify keys reload refused; the old keys stay in force"
            ),
        },
        Event::CertificateReloaded {
            trigger,
            subject,
            serial,
            not_after,
            error,
            ..
        } => match error {
            None => tracing::info!(
                trigger,
                seq,
                subject = or_dash(subject),
                serial = or_dash(serial),
                not_after = %not_after.and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default(),
                "certificate.reloaded: certificate reloaded"
            ),
            Some(error) => tracing::warn!(
                trigger,
                seq,
                error = %error,
                "certificate.reloaded: certificate reload refused; the old certificate stays in force"
            ),
        },
        Event::DrainStarted {
            by,
            timeout_s,
            held,
        } => {
            tracing::info!(seq, by, timeout_s = *timeout_s, held, "drain.started")
        }
        Event::DrainEnded { how, held } => tracing::info!(seq, how, held, "drain.ended"),
        Event::AdminRequest {
            uid,
            pid,
            method,
            path,
            status,
        } => tracing::info!(
            seq,
            uid = *uid,
            pid = *pid,
            method = %method,
            path = %path,
            status,
            "admin.request"
        ),
    }
}
