//! The operations surface: `/metrics` labels come from fixed sets (no request can add a
//! series), and `/openapi.json` describes the answers the routes really give.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::TestApp;

/// The `method` label values a scrape may carry.
const KNOWN_METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"];

async fn scrape(app: &TestApp) -> String {
    app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap()
}

/// Each sample's name and labels (the line without its value).
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.rsplit_once(' ').map(|(key, _)| key.to_string()))
        .collect()
}

fn label_values<'a>(text: &'a str, label: &str) -> BTreeSet<&'a str> {
    let needle = format!("{label}=\"");
    text.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &text[at + needle.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

async fn send(app: &TestApp, method: &[u8], path: &str) {
    let method = Method::from_bytes(method).unwrap();
    app.http.request(method, format!("{}{path}", app.base)).send().await.unwrap();
}

#[tokio::test]
async fn made_up_methods_and_paths_add_no_metric_series() {
    let app = TestApp::spawn().await;
    // One request of each kind first, so the series they may legitimately create exist.
    send(&app, b"XMETHOD", "/nope").await;
    send(&app, b"XMETHOD", "/healthz").await;
    send(&app, b"GET", "/nope").await;
    scrape(&app).await;
    let before = scrape(&app).await;

    for i in 0..40 {
        send(&app, format!("XMETHOD{i}").as_bytes(), &format!("/nope/{i}/{}", uuid::Uuid::new_v4())).await;
        send(&app, format!("PROPFIND{i}").as_bytes(), "/healthz").await;
        send(&app, b"GET", &format!("/made/up/{i}")).await;
    }
    // One 8 KiB method: a single request must not add its name to every scrape.
    send(&app, format!("X{}", "M".repeat(8 * 1024)).as_bytes(), "/nope").await;
    scrape(&app).await;
    let after = scrape(&app).await;

    let methods = label_values(&after, "method");
    assert!(methods.iter().all(|m| KNOWN_METHODS.contains(m)), "method labels {methods:?}");
    let routes = label_values(&after, "route");
    assert!(routes.iter().all(|r| r.starts_with('/') || *r == "unmatched"), "route labels {routes:?}");
    assert!(!after.contains("/made/up") && !after.contains("/nope/"), "raw paths leaked into labels");
    let (old, new) = (series(&before), series(&after));
    let added: Vec<_> = new.difference(&old).collect();
    assert!(added.is_empty(), "new series: {added:?}");
    // Only counts changed: a few more digits at most.
    assert!(after.len() < before.len() + 1024, "metrics grew from {} to {} bytes", before.len(), after.len());
}

/// The media types and schemas the document gives for a route's success answer.
fn documented(spec: &Value, path: &str, method: &str) -> Vec<(String, Value)> {
    let operation = &spec["paths"][path][method];
    let responses = operation["responses"].as_object().unwrap_or_else(|| panic!("{method} {path} undocumented"));
    let (_, success) = responses
        .iter()
        .find(|(status, _)| status.starts_with('2'))
        .unwrap_or_else(|| panic!("{method} {path}: no success answer"));
    let content = success["content"].as_object().unwrap_or_else(|| panic!("{method} {path}: no content"));
    content.iter().map(|(media, body)| (media.clone(), body["schema"].clone())).collect()
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "boolean",
        Value::Null => "null",
    }
}

#[tokio::test]
async fn openapi_documents_the_answers_the_routes_give() {
    let app = TestApp::spawn().await;
    let alice = app.user_token("alice");
    let p = app.create_project("alice", "doc").await;
    app.write("alice", &p, "a.txt", "a").await;
    let (status, spec) = app.get("/openapi.json", &alice).await;
    assert_eq!(status, StatusCode::OK);

    // JSON routes: the real body validates against the documented schema (the protocol
    // crate's type: `$ref`s into components, required fields, types, enums, ranges).
    let calls = [
        ("/healthz", "/healthz".to_string()),
        ("/readyz", "/readyz".to_string()),
        ("/openapi.json", "/openapi.json".to_string()),
        ("/v1/projects", "/v1/projects".to_string()),
        ("/v1/projects/{id}", format!("/v1/projects/{p}")),
        ("/v1/projects/{id}/members", format!("/v1/projects/{p}/members")),
        ("/v1/projects/{id}/files", format!("/v1/projects/{p}/files")),
        ("/v1/projects/{id}/files/{path}", format!("/v1/projects/{p}/files/a.txt")),
        ("/v1/projects/{id}/events", format!("/v1/projects/{p}/events?since=0")),
        ("/v1/projects/{id}/editor-state", format!("/v1/projects/{p}/editor-state")),
    ];
    for (template, path) in calls {
        let (status, body) = app.get(&path, &alice).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let answers = documented(&spec, template, "get");
        // A file may also be read as its bytes (CONTRACT section 13); JSON is the default.
        let expected = if template.ends_with("{path}") { 2 } else { 1 };
        assert_eq!(answers.len(), expected, "GET {template}: {answers:?}");
        let (media, schema) = &answers[0];
        assert_eq!(media, "application/json", "GET {template}");
        if let Err(why) = validate(&spec, schema, &body) {
            panic!("GET {template}: the real body does not fit its schema: {why}\nbody: {body}\nschema: {schema}");
        }
    }
    // Every typed answer is a component schema, and the error answer is the error type.
    let files = documented(&spec, "/v1/projects/{id}/files", "get");
    assert_eq!(files[0].1["$ref"], "#/components/schemas/FileListResponse");
    let error = &spec["paths"]["/v1/projects/{id}/files"]["get"]["responses"]["default"]["content"]["application/json"];
    assert_eq!(error["schema"]["$ref"], "#/components/schemas/ErrorResponse");
    assert_eq!(spec["openapi"], "3.1.0");
    // Request bodies are documented with their types, and a real body fits its schema.
    let put = &spec["paths"]["/v1/projects/{id}/files/{path}"]["put"]["requestBody"];
    assert_eq!(put["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/PutFileBody");
    let sent =
        serde_json::json!({"content": "x", "expected_version": 1, "op_id": "5c3e4b4e-8f9a-4d2b-9c1a-0e6f7a8b9c0d"});
    validate(&spec, &put["content"]["application/json"]["schema"], &sent).unwrap();
    // Binary files: a held blob as JSON, or the bytes themselves (CONTRACT section 13).
    let blob = serde_json::json!({"blob": {"sha256": "ab".repeat(32), "size": 3}, "expected_version": 0});
    validate(&spec, &put["content"]["application/json"]["schema"], &blob).unwrap();
    assert!(put["content"]["application/octet-stream"].is_object(), "{put}");
    let too_big = serde_json::json!({"content": "x", "expected_version": 9_007_199_254_740_992_u64});
    assert!(validate(&spec, &put["content"]["application/json"]["schema"], &too_big).is_err());
    // Query parameters are documented with their schemas.
    let parameters = spec["paths"]["/v1/projects/{id}/events"]["get"]["parameters"].as_array().unwrap();
    let since = parameters.iter().find(|p| p["name"] == "since" && p["in"] == "query").expect("since documented");
    assert_eq!(since["required"], true);
    let (_, body) = app.get(&format!("/v1/projects/{p}/events?since=0"), &alice).await;
    assert!(!body["events"].as_array().unwrap().is_empty(), "the events page was checked with an event in it");

    // /metrics is text in the exposition format, as the hub sends it.
    let response = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
    let sent = response.headers()["content-type"].to_str().unwrap().to_string();
    let answers = documented(&spec, "/metrics", "get");
    assert!(
        answers.iter().all(|(media, schema)| media != "application/json" && schema["type"] == "string"),
        "{answers:?}"
    );
    let sent_type = sent.split(';').next().unwrap().trim();
    assert!(answers.iter().any(|(media, _)| media == sent_type), "documented {answers:?}, sent {sent}");

    // The socket answers 101, not a JSON body.
    let realtime = spec["paths"]["/v1/realtime"]["get"]["responses"].as_object().unwrap();
    assert!(realtime.contains_key("101"), "{realtime:?}");
    assert!(!realtime.keys().any(|status| status.starts_with('2')), "{realtime:?}");
}

/// A small JSON Schema check, enough for the schemas schemars writes: `$ref`, `type`,
/// `required`, `properties`, `additionalProperties: false`, `items`, `anyOf`/`oneOf`,
/// `allOf`, `const`, `enum`, `minimum`/`maximum`.
fn validate(spec: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = spec.pointer(reference.trim_start_matches('#')).ok_or(format!("dangling {reference}"))?;
        validate(spec, target, value).map_err(|why| format!("{reference}: {why}"))?;
    }
    if let Some(types) = schema.get("type") {
        let actual = json_type(value);
        let integer = value.as_i64().is_some() || value.as_u64().is_some();
        let fits = |t: &Value| t == actual || (t == "integer" && integer);
        let ok = match types {
            Value::Array(types) => types.iter().any(fits),
            one => fits(one),
        };
        if !ok {
            return Err(format!("{value} is not of type {types}"));
        }
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        return Err(format!("{value} is not {constant}"));
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        return Err(format!("{value} is not one of {options:?}"));
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), value.as_f64())
        && n < min
    {
        return Err(format!("{n} < {min}"));
    }
    if let (Some(max), Some(n)) = (schema.get("maximum").and_then(Value::as_f64), value.as_f64())
        && n > max
    {
        return Err(format!("{n} > {max}"));
    }
    if let Some(object) = value.as_object() {
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                return Err(format!("missing required field {name}"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(field_schema) => validate(spec, field_schema, field).map_err(|why| format!("{name}: {why}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("unexpected field {name}"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            validate(spec, items, item).map_err(|why| format!("[{index}]: {why}"))?;
        }
    }
    for all in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        validate(spec, all, value)?;
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alternatives) = schema.get(key).and_then(Value::as_array) {
            let errors: Vec<String> = alternatives.iter().filter_map(|a| validate(spec, a, value).err()).collect();
            if errors.len() == alternatives.len() {
                return Err(format!("fits no alternative of {key}: {errors:?}"));
            }
        }
    }
    Ok(())
}

/// Reads a Prometheus text 0.0.4 exposition the way the classic parser does (prometheus
/// `expfmt`): a `# TYPE` line opens a family, and a sample belongs to it only under the
/// name its type allows (counter and gauge: the family name itself; histogram: `_bucket`,
/// `_sum`, `_count`). Anything else would be read as a separate untyped family: an error
/// here. Returns each family's type and every sample name.
fn parse_classic(text: &str) -> Result<(std::collections::BTreeMap<String, String>, BTreeSet<String>), String> {
    let mut families = std::collections::BTreeMap::new();
    let mut samples = BTreeSet::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines().filter(|line| !line.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE line: {line}"))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("type unknown to the classic format: {line}"));
            }
            if families.insert(name.to_owned(), kind.to_owned()).is_some() {
                return Err(format!("family declared twice: {name}"));
            }
            current = Some((name.to_owned(), kind.to_owned()));
        } else if line.starts_with('#') {
            if !line.starts_with("# HELP ") {
                return Err(format!("not a classic comment: {line}"));
            }
        } else {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let (family, kind) = current.as_ref().ok_or(format!("sample before any TYPE: {line}"))?;
            let allowed: Vec<String> = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"].iter().map(|s| format!("{family}{s}")).collect(),
                "summary" => vec![family.clone(), format!("{family}_sum"), format!("{family}_count")],
                _ => vec![family.clone()],
            };
            if !allowed.iter().any(|allowed| allowed == name) {
                return Err(format!("sample {name} outside its family {family} ({kind}): read as untyped"));
            }
            let value = line.rsplit(' ').next().unwrap_or_default();
            if value.parse::<f64>().is_err() && !["+Inf", "-Inf", "NaN"].contains(&value) {
                return Err(format!("bad value: {line}"));
            }
            samples.insert(name.to_owned());
        }
    }
    Ok((families, samples))
}

/// A hub after some traffic (a write delivered to a socket), so the labelled families
/// have samples.
async fn busy_hub() -> TestApp {
    let app = TestApp::spawn().await;
    let p = app.create_project("alice", "metrics").await;
    let mut ws = app.ws(&app.user_token("alice")).await;
    ws.join(&p, Some(0)).await;
    app.write("alice", &p, "a.txt", "a").await;
    ws.events(1).await;
    app
}

#[tokio::test]
async fn metrics_speak_prometheus_text_by_default_and_openmetrics_on_accept() {
    let app = busy_hub().await;
    let response = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let text = response.text().await.unwrap();
    let (families, samples) = parse_classic(&text).unwrap_or_else(|why| panic!("{why}\n{text}"));
    // Counters are typed under the name of their samples, which end in `_total`.
    for (name, kind) in &families {
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{name}");
        }
    }
    let expect = [
        ("synchub_http_requests_total", "counter"),
        ("synchub_http_request_duration_seconds", "histogram"),
        ("synchub_events_published_total", "counter"),
        ("synchub_event_delivery_lag_seconds", "histogram"),
        ("synchub_slow_consumer_drops_total", "counter"),
        ("synchub_open_sockets", "gauge"),
        ("synchub_listen_reconnects_total", "counter"),
        ("synchub_db_pool_max_size", "gauge"),
        ("synchub_db_pool_size", "gauge"),
        ("synchub_db_pool_idle", "gauge"),
        ("synchub_db_pool_waiting", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ];
    for (name, kind) in expect {
        assert_eq!(families.get(name).map(String::as_str), Some(kind), "{name}\n{text}");
    }
    assert!(samples.contains("synchub_http_requests_total"));
    let value = |name: &str| -> f64 {
        text.lines().find_map(|line| line.strip_prefix(&format!("{name} "))?.parse().ok()).unwrap()
    };
    assert_eq!(value("synchub_db_pool_max_size"), 8.0, "the test hub's pool size");
    assert!(value("synchub_db_pool_size") >= 1.0 && value("synchub_db_pool_idle") <= value("synchub_db_pool_size"));
    assert!(value("process_resident_memory_bytes") > 1_000_000.0);
    assert!(value("process_open_fds") > 0.0 && value("process_open_fds") < value("process_max_fds"));
    assert!(value("process_cpu_seconds_total") > 0.0);

    // OpenMetrics when asked: counters are typed under the family name, samples `_total`.
    let response = app
        .http
        .get(format!("{}/metrics", app.base))
        .header("accept", "application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/openmetrics-text; version=1.0.0; charset=utf-8");
    let open = response.text().await.unwrap();
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(open.contains("# TYPE synchub_http_requests counter\n"), "{open}");
    assert!(open.contains("# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total "), "{open}");
    assert!(!open.contains("# TYPE synchub_http_requests_total"), "{open}");
}

/// Every metric name (`synchub_…`, `process_…`) a PromQL expression mentions.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| token.starts_with("synchub_") || token.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// The rules of `deploy/prometheus/alerts.yaml`, read as the small YAML subset that file
/// keeps to (block mappings and lists, `expr: |` block scalars): each rule's fields.
fn alert_rules(yaml: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut rules = Vec::new();
    let lines: Vec<&str> = yaml.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(first) = trimmed.strip_prefix("- alert:") {
            let mut rule = std::collections::BTreeMap::from([("alert".to_owned(), first.trim().to_owned())]);
            i += 1;
            // The rule's other fields are indented past its dash.
            while i < lines.len()
                && (lines[i].trim().is_empty() || lines[i].len() - lines[i].trim_start().len() > indent)
            {
                let field = lines[i].trim();
                let field_indent = lines[i].len() - lines[i].trim_start().len();
                i += 1;
                let Some((key, value)) = field.split_once(':') else { continue };
                let mut value = value.trim().to_owned();
                if value == "|" || value == ">" {
                    let mut block = Vec::new();
                    while i < lines.len()
                        && (lines[i].trim().is_empty() || lines[i].len() - lines[i].trim_start().len() > field_indent)
                    {
                        block.push(lines[i].trim());
                        i += 1;
                    }
                    value = block.join(" ");
                }
                rule.insert(key.trim().to_owned(), value.trim_matches('"').to_owned());
            }
            rules.push(rule);
        } else {
            i += 1;
        }
    }
    rules
}

/// The alert rules and the dashboard in `deploy/` name only metrics the hub exports
/// (promtool is not at hand here: this checks what it would not, the names; the rule
/// file's structure is checked field by field).
#[tokio::test]
async fn alert_rules_and_dashboard_name_only_exported_metrics() {
    let app = busy_hub().await;
    let text = scrape(&app).await;
    let (families, samples) = parse_classic(&text).unwrap();
    let exported = |name: &str| samples.contains(name) || families.contains_key(name);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");

    let yaml = std::fs::read_to_string(root.join("prometheus/alerts.yaml")).unwrap();
    assert!(yaml.starts_with("groups:") || yaml.contains("\ngroups:"), "a Prometheus rule file");
    let rules = alert_rules(&yaml);
    assert!(rules.len() >= 3, "{rules:?}");
    for rule in &rules {
        let name = &rule["alert"];
        for field in ["expr", "for", "severity", "summary"] {
            assert!(rule.get(field).is_some_and(|v| !v.is_empty()), "{name}: no {field}: {rule:?}");
        }
        assert!(["page", "ticket"].contains(&rule["severity"].as_str()), "{name}: severity {}", rule["severity"]);
        let names = metric_names(&rule["expr"]);
        assert!(!names.is_empty(), "{name}: {}", rule["expr"]);
        for metric in names {
            assert!(exported(&metric), "alert {name} names {metric}, which the hub does not export");
        }
    }

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("grafana/synchub.json")).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push((
                panel["title"].as_str().unwrap_or_default().to_owned(),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert!(exprs.len() >= 6, "{exprs:?}");
    for (title, expr) in exprs {
        for metric in metric_names(&expr) {
            assert!(exported(&metric), "panel {title:?} names {metric}, which the hub does not export");
        }
    }
}
