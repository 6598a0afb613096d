//! `GET /v1/events`: the audit events as NDJSON, one JSON object a line.
//! `since=SEQ` starts after that event (410 with the oldest seq held when the
//! buffer no longer has what follows it); `type=T,…` and `subnet=CIDR`
//! filter; `follow=1` keeps the response open (chunked) and streams events as
//! they come. A follower that falls behind the buffer reads
//! `{"type":"stream.lost","next":SEQ}` and is let go; it never slows anything.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use common::admin::ApiError;
use tokio::sync::mpsc;
use warp::http::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply as _};

use super::{error, method_not_allowed, query, AdminResponse, AdminState};
use crate::events::{Cidr, Event, Follower, Gone};
use crate::http::{exact_path, json, Reply};

const NDJSON: &str = "application/x-ndjson";
/// Batches queued for a follower's connection before it must read them.
const QUEUE: usize = 4;
/// Most bytes of lines one batch carries (a single longer line goes alone).
const BATCH_BYTES: usize = 16 << 10;
/// How long a follower lets events gather after the first one arrives: at
/// most one write per follower per window however fast events come (an
/// invalid-token flood makes tens of thousands a second), and none in the
/// middle of the grant that caused it.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(5);

pub fn routes(
    state: Arc<AdminState>,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    exact_path(common::admin::EVENTS_PATH).and(
        warp::get()
            .and(query(&["since", "follow", "type", "subnet"]))
            .map(move |pairs| get(&state, pairs))
            .or(method_not_allowed("GET"))
            .unify(),
    )
}

/// What a request asks for.
#[derive(Debug, Default, PartialEq)]
struct Ask {
    since: Option<u64>,
    follow: bool,
    kinds: Option<Vec<String>>,
    within: Option<Cidr>,
}

fn ask(pairs: &[(String, String)]) -> Result<Ask, String> {
    let mut ask = Ask::default();
    for (name, value) in pairs {
        match name.as_str() {
            "since" => {
                ask.since = Some(
                    value
                        .parse()
                        .map_err(|_| format!("since={value:?} is not an event seq"))?,
                )
            }
            "follow" => {
                ask.follow = match value.as_str() {
                    "" | "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(format!("follow={value:?}: use 1 or 0")),
                }
            }
            "type" => {
                let kinds: Vec<String> = value.split(',').map(str::to_owned).collect();
                if let Some(bad) = kinds.iter().find(|k| !Event::KINDS.contains(&k.as_str())) {
                    return Err(format!(
                        "type={bad:?} is not an event type ({})",
                        Event::KINDS.join(", ")
                    ));
                }
                ask.kinds = Some(kinds);
            }
            "subnet" => {
                let decoded = value.replace("%2F", "/").replace("%2f", "/");
                ask.within = Some(decoded.parse()?);
            }
            _ => unreachable!("query() admits only the names above"),
        }
    }
    Ok(ask)
}

fn get(state: &AdminState, pairs: Vec<(String, String)>) -> AdminResponse {
    let ask = match ask(&pairs) {
        Ok(ask) => ask,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let mut follower = match state.events.follow(ask.since, ask.follow) {
        Ok(follower) => follower,
        Err(gone) => return gone_response(gone),
    };
    if let Some(kinds) = ask.kinds {
        follower = follower.kinds(kinds);
    }
    if let Some(cidr) = ask.within {
        follower = follower.within(cidr);
    }
    let mut response = if ask.follow {
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        tokio::spawn(follow(follower, tx, state.stop.clone()));
        let stream = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx).map(|line| line.map(Ok::<_, Infallible>))
        });
        warp::reply::stream(stream).into_response()
    } else {
        let lines = match follower.read() {
            Ok(lines) => lines,
            Err(lost) => vec![lost.line()],
        };
        Reply::new(lines.concat().into())
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    if ask.follow {
        // A follower's stream ends only when it is let go: then so does the
        // connection.
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn gone_response(gone: Gone) -> AdminResponse {
    let mut body = ApiError::new(gone.to_string());
    body.oldest_seq = Some(gone.oldest);
    json(StatusCode::GONE, &body)
}

/// Feeds one follower's connection until it goes away, falls behind, or the
/// daemon stops, in batches of what gathered over [`BATCH_WINDOW`], taken
/// from the buffer one at a time: a follower that stopped reading holds its
/// queue and one batch, and loses the stream once the buffer passes it. One
/// place in its queue is kept for the `stream.lost` line, so a follower that
/// stopped reading still gets it when it reads again.
async fn follow(
    mut follower: Follower,
    tx: mpsc::Sender<Bytes>,
    stop: tokio_util::sync::CancellationToken,
) {
    let Ok(last_line) = tx.clone().reserve_owned().await else {
        return;
    };
    loop {
        loop {
            let batch = match follower.read_batch(BATCH_BYTES) {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(lost) => {
                    last_line.send(lost.line());
                    return;
                }
            };
            tokio::select! {
                sent = tx.send(batch) => if sent.is_err() { return },
                lost = follower.fell_behind() => {
                    last_line.send(lost.line());
                    return;
                }
                () = stop.cancelled() => return,
            }
        }
        tokio::select! {
            () = follower.arrived() => {}
            () = tx.closed() => return,
            () = stop.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(BATCH_WINDOW) => {}
            () = tx.closed() => return,
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn queries_read_into_what_they_ask_and_bad_ones_say_why() {
        let asked = ask(&pairs(&[
            ("since", "41"),
            ("follow", "1"),
            ("type", "grant.opened,access.refused"),
            ("subnet", "198.18.7.0%2F24"),
        ]))
        .unwrap();
        assert_eq!(asked.since, Some(41));
        assert!(asked.follow);
        assert_eq!(
            asked.kinds.as_deref(),
            Some(&["grant.opened".to_owned(), "access.refused".to_owned()][..])
        );
        assert_eq!(asked.within, Some("198.18.7.0/24".parse().unwrap()));
        assert_eq!(ask(&[]).unwrap(), Ask::default());
        for (bad, says) in [
            (("since", "x"), "not an event seq"),
            (("follow", "yes"), "use 1 or 0"),
            (
                ("type", "grant.opened,grant.stolen"),
                "\"grant.stolen\" is not an event type",
            ),
            (("subnet", "198.18.7.0/40"), "is not a CIDR"),
        ] {
            let err = ask(&pairs(&[bad])).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }
}
