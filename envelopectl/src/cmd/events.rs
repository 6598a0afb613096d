//! `envelopectl events [-f] [--since SEQ] [--type T,…] [--subnet CIDR] [--json]`:
//! the audit events, as a table for people or NDJSON for scripts. With `-f`
//! it follows until interrupted; when the stream ends it waits for the
//! envelope and resumes after the last seq it saw if the same envelope is
//! back (same boot), or says the history was lost if it restarted.

use std::io::Write;
use std::ops::ControlFlow;
use std::time::Duration;

use envelopectl::{Client, CtlError};
use serde_json::Value;

/// How often a follower looks for the envelope again once the stream ended.
const RETRY: Duration = Duration::from_secs(1);

/// What the operator asked for.
#[derive(Debug)]
pub struct Ask {
    pub follow: bool,
    pub since: Option<u64>,
    pub kinds: Option<String>,
    pub subnet: Option<String>,
    pub json: bool,
}

impl Ask {
    fn query(&self, since: Option<u64>) -> String {
        let mut parts = Vec::new();
        if let Some(since) = since {
            parts.push(format!("since={since}"));
        }
        if self.follow {
            parts.push("follow=1".into());
        }
        if let Some(kinds) = &self.kinds {
            parts.push(format!("type={kinds}"));
        }
        if let Some(subnet) = &self.subnet {
            parts.push(format!("subnet={}", subnet.replace('/', "%2F")));
        }
        parts.join("&")
    }
}

pub async fn run(client: &Client, ask: Ask) -> Result<(), CtlError> {
    if !ask.json {
        println!("{}", header());
    }
    let mut since = ask.since;
    let mut boot = match ask.follow {
        true => Some(client.status().await?.boot),
        false => None,
    };
    loop {
        let mut last = None;
        let mut reader_gone = false;
        let result = client
            .events(&ask.query(since), |lines| {
                // One write for what arrived together (the envelope sends a
                // follower what gathered in a few milliseconds at once).
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                for line in lines {
                    show(&mut out, line, ask.json, &mut last);
                }
                match out.flush() {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => {
                        reader_gone = true;
                        ControlFlow::Break(())
                    }
                }
            })
            .await;
        // Whoever read our output is gone (a closed pipe, as with `| head`):
        // nothing is left to do.
        if reader_gone {
            return Ok(());
        }
        if let Some(seq) = last {
            since = Some(seq);
        }
        if !ask.follow {
            return result;
        }
        if let Err(e) = result {
            if !matches!(e, CtlError::Unreachable { .. }) {
                return Err(e);
            }
        }
        // The stream ended: wait for the envelope, then pick up where we were.
        let status = loop {
            match client.status().await {
                Ok(status) => break status,
                Err(CtlError::Unreachable { .. }) => tokio::time::sleep(RETRY).await,
                Err(e) => return Err(e),
            }
        };
        if boot.as_deref() != Some(status.boot.as_str()) {
            eprintln!(
                "envelopectl: the envelope restarted (boot {} → {}); the events in between are lost",
                boot.as_deref().unwrap_or("?"),
                status.boot
            );
            since = Some(0);
            boot = Some(status.boot);
        }
    }
}

/// Writes one NDJSON line as asked and remembers its seq.
fn show(out: &mut impl Write, line: &str, json: bool, last: &mut Option<u64>) {
    let event: Value = match serde_json::from_str(line) {
        Ok(event) => event,
        Err(_) => return,
    };
    if let Some(seq) = event["seq"].as_u64() {
        *last = Some(seq);
    }
    // A failed write shows at the flush.
    if json {
        let _ = writeln!(out, "{line}");
    } else if event["type"] == "stream.lost" {
        eprintln!(
            "envelopectl: fell behind the envelope's event buffer; resuming at seq {}",
            event["next"]
        );
    } else {
        let _ = writeln!(out, "{}", row(&event));
    }
}

fn header() -> String {
    format!(
        "{:<6} {:<24} {:<20} {:<20} {:<10} {:<16} {:<6} REASON",
        "SEQ", "TIME", "TYPE", "SUBNET", "SUBJECT", "KID", "GRANT"
    )
}

/// One event as a table row: seq, time, type, subnet, subject, kid, grant, reason.
pub fn row(event: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Array(items) => items.iter().map(text_of).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    };
    let time = event["time"]
        .as_str()
        .map_or_else(|| "-".to_owned(), |t| t.chars().take(23).collect());
    let subnet = match &event["subnet"] {
        Value::Null => text(&event["subnets"]),
        one => text(one),
    };
    let subject = match &event["subject"] {
        Value::Null => text(&event["sub"]),
        s => text(s),
    };
    let grant = match &event["grant"] {
        Value::Null => text(&event["grants"]),
        g => text(g),
    };
    let reason = ["reason", "how", "result", "target", "operation", "by"]
        .iter()
        .map(|k| &event[*k])
        .find(|v| !v.is_null())
        .map_or_else(|| "-".into(), text);
    // Who asked, for an operator's revoke (and any admin request).
    let caller = match (&event["by_uid"], &event["uid"]) {
        (Value::Null, Value::Null) => String::new(),
        (Value::Null, uid) | (uid, _) => {
            let pid = match (&event["by_pid"], &event["pid"]) {
                (Value::Null, pid) | (pid, _) => pid,
            };
            format!(" by uid {} (pid {})", text(uid), text(pid))
        }
    };
    let reason = reason + &caller;
    format!(
        "{:<6} {:<24} {:<20} {:<20} {:<10} {:<16} {:<6} {}",
        text(&event["seq"]),
        time,
        text(&event["type"]),
        non_empty(subnet),
        non_empty(subject),
        text(&event["kid"]),
        non_empty(grant),
        reason
    )
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn non_empty(text: String) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_reads_as_one_row_with_its_kid_and_subnet() {
        let event: Value = serde_json::from_str(
            r#"{"seq":7,"boot":"b","time":"2026-12-06T10:00:00.123456789Z","type":"grant.opened","grant":3,"peer":"198.18.7.2","subnet":"198.18.7.0/24","subject":"ndt","monitoring":false,"kid":"locate-2026","jti":"j-1","deadline":"2026-12-06T10:01:00Z"}"#,
        )
        .unwrap();
        let row = row(&event);
        for part in [
            "7 ",
            "2026-12-06T10:00:00.123",
            "grant.opened",
            "198.18.7.0/24",
            "ndt",
            "locate-2026",
            "3",
        ] {
            assert!(row.contains(part), "{part} in {row}");
        }
        let revoked: Value = serde_json::from_str(
            r#"{"seq":9,"time":"2026-12-06T10:00:05Z","type":"grant.revoked","grants":[3,4],"target":"ip=198.18.7.9","subnets":["198.18.7.0/24"],"by_uid":0,"by_pid":12}"#,
        )
        .unwrap();
        let row = super::row(&revoked);
        assert!(
            row.contains("3,4") && row.ends_with("ip=198.18.7.9 by uid 0 (pid 12)"),
            "{row}"
        );
    }

    #[test]
    fn the_query_carries_every_filter() {
        let ask = Ask {
            follow: true,
            since: None,
            kinds: Some("grant.opened,access.refused".into()),
            subnet: Some("198.18.7.0/24".into()),
            json: true,
        };
        assert_eq!(
            ask.query(Some(41)),
            "since=41&follow=1&type=grant.opened,access.refused&subnet=198.18.7.0%2F24"
        );
    }
}
