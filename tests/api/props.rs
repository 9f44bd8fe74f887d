//! Generated-input tests of the hub's own parsers, with fixed case counts (no database, no
//! socket): the socket's client-frame parser (CONTRACT section 4) and the file routes' URL
//! path decoding (section 3: each segment percent-encoded).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use snapshot_builder::paths::validate_path;
use synchub::extract::PathArgs;
use synchub::realtime::protocol::{ClientFrame, Ref, SafeU64};
use tower::ServiceExt;

/// The largest integer JavaScript represents exactly: the contract's upper bound.
const MAX_SAFE: i64 = (1 << 53) - 1;

/// What the socket does with a frame: only text frames (UTF-8) reach the parser.
fn parse_frame(bytes: &[u8]) -> Result<ClientFrame, synchub::ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|_| synchub::ApiError::InvalidRequest("not UTF-8".into()))?;
    synchub::realtime::protocol::parse_frame(text).map_err(|refused| refused.error)
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,10}", inner, 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

const FRAME_TYPES: [&str; 9] = ["auth", "join", "leave", "ping", "applied", "upsert", "delete", "bulk", "presence"];
const FRAME_FIELDS: [&str; 14] = [
    "ref",
    "channel",
    "since",
    "token",
    "seq",
    "path",
    "content",
    "file_type",
    "expected_version",
    "op_id",
    "upserts",
    "deletes",
    "meta",
    "type",
];

/// Objects that look like frames: a known (or unknown) type and known field names with
/// values of any type.
fn frame_like() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![4 => proptest::sample::select(&FRAME_TYPES[..]).prop_map(String::from), 1 => "\\PC{0,8}"];
    let field = proptest::sample::select(&FRAME_FIELDS[..]);
    (kind, proptest::collection::vec((field, json_value()), 0..8)).prop_map(|(kind, fields)| {
        let mut object = Map::new();
        object.insert("type".into(), Value::String(kind));
        for (name, value) in fields {
            object.insert(name.into(), value);
        }
        Value::Object(object)
    })
}

fn reference() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        "[0-9]{1,4}".prop_map(|s| Some(Value::String(s))),
        (0u32..10_000).prop_map(|n| Some(Value::from(n))),
    ]
}

fn channel() -> impl Strategy<Value = String> {
    any::<u128>().prop_map(|id| format!("realtime:project:{}", uuid::Uuid::from_u128(id)))
}

fn safe_integer() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0), Just(MAX_SAFE), 0..=MAX_SAFE]
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,40}"
}

fn op_id() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(any::<u128>().prop_map(|id| uuid::Uuid::from_u128(id).to_string()))
}

/// Builds a frame object from its fields, leaving out absent optional ones.
fn frame(kind: &str, fields: Vec<(&str, Option<Value>)>) -> Value {
    let mut object = Map::new();
    object.insert("type".into(), json!(kind));
    for (name, value) in fields {
        if let Some(value) = value {
            object.insert(name.into(), value);
        }
    }
    Value::Object(object)
}

/// Every client frame of CONTRACT section 4, with every optional field present or absent.
fn valid_frame() -> impl Strategy<Value = Value> {
    let auth = "[A-Za-z0-9._-]{1,60}".prop_map(|token| frame("auth", vec![("token", Some(json!(token)))]));
    let join = (reference(), channel(), proptest::option::of(proptest::option::of(safe_integer()))).prop_map(
        |(reference, channel, since)| {
            // since: absent, null, or a seq.
            let since = since.map(|s| s.map_or(Value::Null, Value::from));
            frame("join", vec![("ref", reference), ("channel", Some(json!(channel))), ("since", since)])
        },
    );
    let leave = (reference(), channel())
        .prop_map(|(reference, channel)| frame("leave", vec![("ref", reference), ("channel", Some(json!(channel)))]));
    let ping = reference().prop_map(|reference| frame("ping", vec![("ref", reference)]));
    let applied = (channel(), safe_integer()).prop_map(|(channel, seq)| {
        frame("applied", vec![("channel", Some(json!(channel))), ("seq", Some(json!(seq)))])
    });
    let presence = (reference(), channel(), text()).prop_map(|(reference, channel, file)| {
        frame(
            "presence",
            vec![("ref", reference), ("channel", Some(json!(channel))), ("meta", Some(json!({"file": file})))],
        )
    });
    let upsert = (
        reference(),
        channel(),
        text(),
        text(),
        proptest::option::of("[a-z]{1,10}"),
        proptest::option::of(safe_integer()),
        op_id(),
    )
        .prop_map(|(reference, channel, path, content, file_type, expected_version, op_id)| {
            frame(
                "upsert",
                vec![
                    ("ref", reference),
                    ("channel", Some(json!(channel))),
                    ("path", Some(json!(path))),
                    ("content", Some(json!(content))),
                    ("file_type", file_type.map(Value::from)),
                    ("expected_version", expected_version.map(Value::from)),
                    ("op_id", op_id.map(Value::from)),
                ],
            )
        });
    let delete = (reference(), channel(), text(), proptest::option::of(safe_integer()), op_id()).prop_map(
        |(reference, channel, path, expected_version, op_id)| {
            frame(
                "delete",
                vec![
                    ("ref", reference),
                    ("channel", Some(json!(channel))),
                    ("path", Some(json!(path))),
                    ("expected_version", expected_version.map(Value::from)),
                    ("op_id", op_id.map(Value::from)),
                ],
            )
        },
    );
    let bulk_upsert = (text(), text(), proptest::option::of("[a-z]{1,10}"), proptest::option::of(safe_integer()))
        .prop_map(|(path, content, file_type, expected_version)| {
            let mut value = json!({"path": path, "content": content});
            if let Some(file_type) = file_type {
                value["file_type"] = json!(file_type);
            }
            if let Some(version) = expected_version {
                value["expected_version"] = json!(version);
            }
            value
        });
    let bulk_delete = (text(), proptest::option::of(safe_integer())).prop_map(|(path, expected_version)| {
        let mut value = json!({"path": path});
        if let Some(version) = expected_version {
            value["expected_version"] = json!(version);
        }
        value
    });
    let bulk = (
        reference(),
        channel(),
        proptest::option::of(proptest::collection::vec(bulk_upsert, 0..4)),
        proptest::option::of(proptest::collection::vec(bulk_delete, 0..4)),
        op_id(),
    )
        .prop_map(|(reference, channel, upserts, deletes, op_id)| {
            frame(
                "bulk",
                vec![
                    ("ref", reference),
                    ("channel", Some(json!(channel))),
                    ("upserts", upserts.map(Value::from)),
                    ("deletes", deletes.map(Value::from)),
                    ("op_id", op_id.map(Value::from)),
                ],
            )
        });
    prop_oneof![auth, join, leave, ping, presence, applied, upsert, delete, bulk]
}

/// The parsed frame written back as JSON, absent optional fields left out: a frame that
/// parses to exactly what was sent gives back its own JSON.
fn describe(frame: &ClientFrame) -> Value {
    let opt = |value: Option<SafeU64>| value.map(|v| json!(v));
    let reference = |value: &Option<Ref>| value.as_ref().map(|r| json!(r));
    let uuid = |value: &Option<uuid::Uuid>| value.map(|id| Value::from(id.to_string()));
    match frame {
        ClientFrame::Auth { token } => self::frame("auth", vec![("token", Some(json!(token)))]),
        ClientFrame::Join { reference: r, channel, since } => {
            self::frame("join", vec![("ref", reference(r)), ("channel", Some(json!(channel))), ("since", opt(*since))])
        }
        ClientFrame::Leave { reference: r, channel } => {
            self::frame("leave", vec![("ref", reference(r)), ("channel", Some(json!(channel)))])
        }
        ClientFrame::Ping { reference: r } => self::frame("ping", vec![("ref", reference(r))]),
        ClientFrame::Presence { reference: r, channel, meta } => self::frame(
            "presence",
            vec![("ref", reference(r)), ("channel", Some(json!(channel))), ("meta", Some(meta.clone()))],
        ),
        ClientFrame::Applied { channel, seq } => {
            self::frame("applied", vec![("channel", Some(json!(channel))), ("seq", Some(json!(seq)))])
        }
        ClientFrame::Upsert {
            reference: r,
            channel,
            path,
            content,
            base_version,
            delta,
            file_type,
            expected_version,
            op_id,
        } => self::frame(
            "upsert",
            vec![
                ("ref", reference(r)),
                ("channel", Some(json!(channel))),
                ("path", Some(json!(path))),
                ("content", content.clone().map(Value::from)),
                ("base_version", opt(*base_version)),
                ("delta", delta.clone().map(Value::from)),
                ("file_type", file_type.clone().map(Value::from)),
                ("expected_version", opt(*expected_version)),
                ("op_id", uuid(op_id)),
            ],
        ),
        ClientFrame::Delete { reference: r, channel, path, expected_version, op_id } => self::frame(
            "delete",
            vec![
                ("ref", reference(r)),
                ("channel", Some(json!(channel))),
                ("path", Some(json!(path))),
                ("expected_version", opt(*expected_version)),
                ("op_id", uuid(op_id)),
            ],
        ),
        ClientFrame::Bulk { reference: r, channel, upserts, deletes, op_id } => self::frame(
            "bulk",
            vec![
                ("ref", reference(r)),
                ("channel", Some(json!(channel))),
                ("upserts", Some(serde_json::to_value(upserts).expect("upserts serialize"))),
                ("deletes", Some(serde_json::to_value(deletes).expect("deletes serialize"))),
                ("op_id", uuid(op_id)),
            ],
        ),
    }
}

/// The sent frame as `describe` writes it: no null fields, and a bulk's lists always there.
fn normalized(sent: &Value) -> Value {
    let mut object: Map<String, Value> = sent
        .as_object()
        .expect("an object")
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if object["type"] == "bulk" {
        object.entry("upserts").or_insert(json!([]));
        object.entry("deletes").or_insert(json!([]));
    }
    Value::Object(object)
}

/// An integer field of a frame with a value outside 0..=2^53-1 (or not an integer).
fn out_of_range() -> impl Strategy<Value = Value> {
    prop_oneof![
        (MAX_SAFE + 1..=i64::MAX).prop_map(Value::from),
        (i64::MIN..0).prop_map(Value::from),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::from),
        Just(json!(1.5)),
        Just(json!(1e300)),
        Just(json!(9007199254740992.0)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_frame_parser(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_frame(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics_the_frame_parser(value in prop_oneof![json_value(), frame_like()]) {
        let _ = parse_frame(value.to_string().as_bytes());
    }

    #[test]
    fn every_valid_frame_parses_to_exactly_what_was_sent(sent in valid_frame()) {
        let text = sent.to_string();
        let parsed = match parse_frame(text.as_bytes()) {
            Ok(frame) => frame,
            Err(err) => return Err(TestCaseError::fail(format!("{text} refused: {}", err.body()))),
        };
        prop_assert_eq!(describe(&parsed), normalized(&sent));
    }

    #[test]
    fn integers_outside_the_safe_range_are_refused(
        sent in valid_frame().prop_filter("has an integer field", |f| {
            ["since", "expected_version"].iter().any(|k| f.get(k).is_some_and(Value::is_i64))
        }),
        bad in out_of_range(),
    ) {
        let mut sent = sent;
        for key in ["since", "expected_version"] {
            if sent.get(key).is_some_and(Value::is_i64) {
                sent[key] = bad.clone();
            }
        }
        prop_assert!(parse_frame(sent.to_string().as_bytes()).is_err(), "{} was accepted", sent);
    }
}

/// Percent-encodes one path segment as browsers' `encodeURIComponent` does.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

fn encode_path(path: &str) -> String {
    path.split('/').map(|segment| utf8_percent_encode(segment, COMPONENT).to_string()).collect::<Vec<_>>().join("/")
}

/// The file routes' template and path extractor, answering with the path they decoded.
fn file_route() -> axum::Router {
    axum::Router::new().route(
        "/v1/projects/{id}/files/{*path}",
        axum::routing::get(|PathArgs((_id, path)): PathArgs<(String, String)>| async move { path }),
    )
}

/// GET of `/v1/projects/p/files/{tail}` through the route: status and decoded path.
fn decode_through_route(runtime: &tokio::runtime::Runtime, tail: &str) -> Option<(StatusCode, String)> {
    let request = Request::get(format!("/v1/projects/p/files/{tail}")).body(Body::empty()).ok()?;
    runtime.block_on(async {
        let response = file_route().oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        Some((status, String::from_utf8(body.to_vec()).expect("the route answers text")))
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime")
}

/// Characters a URL path may carry, with `%` escapes (valid and broken) among them.
fn url_tail() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[A-Za-z0-9._~!$&'()*+,;=:@-]{1,4}",
        Just("/".to_string()),
        "%[0-9A-Fa-f]{2}",
        "%[0-9A-Za-z]{0,1}",
        Just("%2F".to_string()),
        Just("%2E%2E".to_string()),
        Just("%00".to_string()),
        Just("%C3%BC".to_string()),
        Just("%FF".to_string()),
    ];
    proptest::collection::vec(piece, 1..12).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn accepted_paths_round_trip_through_the_file_routes(path in "[a-z0-9 ._ü€%#?&+=-]{1,12}(/[a-z0-9 ._ü€%#?&+=-]{1,12}){0,6}") {
        prop_assume!(validate_path(&path).is_ok());
        let runtime = runtime();
        let (status, decoded) = decode_through_route(&runtime, &encode_path(&path)).expect("an encoded path is a valid URI");
        prop_assert_eq!(status, StatusCode::OK);
        prop_assert_eq!(decoded, path);
    }

    #[test]
    fn whatever_the_route_decodes_and_the_hub_accepts_round_trips(tail in url_tail()) {
        let runtime = runtime();
        let Some((status, decoded)) = decode_through_route(&runtime, &tail) else {
            return Ok(()); // not a URI the HTTP layer would deliver
        };
        // Undecodable escapes are a client error (400 invalid_path), never a panic or a 5xx.
        prop_assert!(status == StatusCode::OK || status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND, "{}", status);
        if status == StatusCode::OK && validate_path(&decoded).is_ok() {
            let (again, round_tripped) = decode_through_route(&runtime, &encode_path(&decoded)).expect("valid URI");
            prop_assert_eq!(again, StatusCode::OK);
            prop_assert_eq!(round_tripped, decoded);
        }
    }
}
