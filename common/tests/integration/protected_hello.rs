//! Drives `examples/protected_hello.rs` — a warp hello-world behind
//! `common::filters::access_token` — over real HTTP on 127.0.0.1 with valid,
//! forged, expired, wrong-audience, wrong-subject, monitoring and custom-claim
//! tokens.

#[allow(dead_code)]
#[path = "../../examples/protected_hello.rs"]
mod example;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::filters::AccessPolicy;
use common::{Algorithm, PrivateKey, Verifier};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

const MACHINE: &str = "mlab1-lga0t";
const SUBJECT: &str = "ndt";

struct Keys {
    genuine: ed25519_dalek::SigningKey,
    other: ed25519_dalek::SigningKey,
}

fn signing_key(key: &PrivateKey) -> ed25519_dalek::SigningKey {
    let jwk: Value = serde_json::from_str(&key.to_jwk_json()).unwrap();
    let seed = URL_SAFE_NO_PAD.decode(jwk["d"].as_str().unwrap()).unwrap();
    ed25519_dalek::SigningKey::from_bytes(&seed.try_into().unwrap())
}

/// A compact JWS over any payload, with the kid the server knows.
fn sign(key: &ed25519_dalek::SigningKey, payload: &Value) -> String {
    use ed25519_dalek::Signer as _;
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"k1","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(payload.to_string());
    let input = format!("{header}.{body}");
    let signature = URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()).to_bytes());
    format!("{input}.{signature}")
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(sub: &str, aud: &str, exp_in: i64) -> Value {
    json!({"iss": "locate", "sub": sub, "aud": aud, "exp": now() + exp_in})
}

async fn start() -> (SocketAddr, Keys) {
    let genuine = PrivateKey::generate(Algorithm::EdDSA, "k1").unwrap();
    let other = PrivateKey::generate(Algorithm::EdDSA, "k1").unwrap();
    let verifier = Arc::new(Verifier::new(vec![genuine.public_key()], "locate", MACHINE).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = example::routes(AccessPolicy::new(verifier, SUBJECT));
    tokio::spawn(example::serve(listener, routes));
    let keys = Keys {
        genuine: signing_key(&genuine),
        other: signing_key(&other),
    };
    (addr, keys)
}

async fn get(addr: SocketAddr, path_and_query: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get(path_and_query)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn hello(addr: SocketAddr, token: &str) -> (u16, String) {
    get(addr, &format!("/hello?access_token={token}")).await
}

#[tokio::test]
async fn a_valid_token_reaches_the_handler() {
    let (addr, keys) = start().await;
    let (status, body) = hello(addr, &sign(&keys.genuine, &claims(SUBJECT, MACHINE, 60))).await;
    assert_eq!((status, body.as_str()), (200, "hello, ndt\n"));
    let monitoring = sign(&keys.genuine, &claims("monitoring", MACHINE, 60));
    assert_eq!(hello(addr, &monitoring).await.0, 200);
}

#[tokio::test]
async fn forged_expired_wrong_audience_and_missing_tokens_are_401() {
    let (addr, keys) = start().await;
    for (what, token) in [
        ("forged", sign(&keys.other, &claims(SUBJECT, MACHINE, 60))),
        (
            "expired",
            sign(&keys.genuine, &claims(SUBJECT, MACHINE, -1)),
        ),
        (
            "wrong audience",
            sign(&keys.genuine, &claims(SUBJECT, "mlab2-lga0t", 60)),
        ),
        ("garbage", "a.b.c".to_owned()),
    ] {
        let (status, body) = hello(addr, &token).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(body.starts_with("invalid access token"), "{what}: {body}");
    }
    let (status, body) = get(addr, "/hello").await;
    assert_eq!((status, body.as_str()), (401, "access token required\n"));
}

#[tokio::test]
async fn wrong_subject_and_a_repeated_token_are_400() {
    let (addr, keys) = start().await;
    let (status, body) = hello(addr, &sign(&keys.genuine, &claims("neubot", MACHINE, 60))).await;
    assert_eq!(status, 400, "{body}");
    let token = sign(&keys.genuine, &claims(SUBJECT, MACHINE, 60));
    let (status, body) = get(
        addr,
        &format!("/hello?access_token={token}&access_token={token}"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn custom_claims_reach_the_handler_and_never_override_standard_ones() {
    let (addr, keys) = start().await;
    let mut payload = claims(SUBJECT, MACHINE, 60);
    payload["int_id"] = json!("wehe-7");
    payload["key_id"] = json!("k-2026");
    let (status, body) = hello(addr, &sign(&keys.genuine, &payload)).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "hello, ndt via integration wehe-7\n")
    );

    // A custom claim of the wrong type is refused, not ignored.
    payload["int_id"] = json!(7);
    let (status, body) = hello(addr, &sign(&keys.genuine, &payload)).await;
    assert_eq!(status, 401, "{body}");

    // A duplicate standard claim cannot smuggle another subject past the verifier.
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"k1","typ":"JWT"}"#);
    let exp = now() + 60;
    let text = format!(
        r#"{{"iss":"locate","sub":"neubot","aud":"{MACHINE}","exp":{exp},"int_id":"x","sub":"{SUBJECT}"}}"#
    );
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(text));
    let signature = {
        use ed25519_dalek::Signer as _;
        URL_SAFE_NO_PAD.encode(keys.genuine.sign(input.as_bytes()).to_bytes())
    };
    let (status, body) = hello(addr, &format!("{input}.{signature}")).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn other_paths_and_methods_get_warps_own_answers() {
    let (addr, _) = start().await;
    assert_eq!(get(addr, "/nope").await.0, 404);
}
