//! A fake Perstack registry on 127.0.0.1:0 speaking the API v1 shapes of Perstack's API client
//! (`packages/api-client/src/registry/{experts,types}.ts`): get by version and by tag
//! (`GET /api/registry/v1/experts/{key}`, one encoded segment), the versions list, publish
//! (`POST /api/registry/v1/experts/`), tags and status (`POST .../{key}`), delete, and bearer
//! auth; errors as `{code, error, reason}`. Real HTTP/1.1 over TCP, one thread, one request
//! per connection; it records every request and can be told to answer with a fixed failure.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

/// One request as received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) authorization: Option<String>,
    pub(crate) body: String,
}

/// A forced answer to every request.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// This status with Perstack's error body.
    Status(u16),
    /// 200 with a body that is not JSON.
    Malformed,
    /// Close every connection without an answer: the registry is down.
    Down,
}

#[derive(Default)]
struct State {
    /// name -> version -> the `registryExpert` object.
    experts: BTreeMap<String, BTreeMap<String, Value>>,
    /// name -> tag -> version.
    tags: BTreeMap<String, BTreeMap<String, String>>,
    api_key: Option<String>,
    failure: Option<Failure>,
    seen: Vec<Seen>,
}

/// The running fake registry; stops when dropped.
pub(crate) struct FakeRegistry {
    url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A `registryExpert` object as the registry sends it, with only `@perstack/base`.
pub(crate) fn definition(
    name: &str,
    version: &str,
    instruction: &str,
    delegates: &[&str],
) -> Value {
    json!({
        "type": "registryExpert",
        "id": format!("id-{name}-{version}"),
        "key": format!("{name}@{version}"),
        "name": name,
        "minRuntimeVersion": "v1.0",
        "description": format!("{name} from the registry"),
        "owner": {"name": "org", "organizationId": "org-1", "createdAt": "2026-01-01T00:00:00Z"},
        "createdAt": "2026-01-01T00:00:00Z",
        "updatedAt": "2026-01-01T00:00:00Z",
        "version": version,
        "status": "available",
        "instruction": instruction,
        "skills": {
            "@perstack/base": {
                "type": "mcpStdioSkill",
                "description": "@perstack/base skill",
                "command": "npx",
                "packageName": "@perstack/base"
            }
        },
        "delegates": delegates,
        "tags": []
    })
}

impl FakeRegistry {
    /// Starts the server; `api_key`, when set, is the bearer every request must carry.
    pub(crate) fn start(api_key: Option<&str>) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            api_key: api_key.map(str::to_owned),
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let down = matches!(state.lock().unwrap().failure, Some(Failure::Down));
                    if let Ok(stream) = stream
                        && !down
                    {
                        serve(stream, &state);
                    }
                }
            })
        };
        FakeRegistry {
            url,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Stores a version (as published), moving `latest` to it.
    pub(crate) fn add(&self, expert: Value) {
        let mut s = self.state.lock().unwrap();
        let name = expert["name"].as_str().unwrap().to_owned();
        let version = expert["version"].as_str().unwrap().to_owned();
        s.experts
            .entry(name.clone())
            .or_default()
            .insert(version.clone(), expert);
        s.tags
            .entry(name)
            .or_default()
            .insert("latest".into(), version);
    }

    /// Replaces what the registry sends for `name@version` (a registry fault, or a hostile
    /// registry: `expert` may say anything).
    pub(crate) fn replace(&self, name: &str, version: &str, expert: Value) {
        let mut s = self.state.lock().unwrap();
        s.experts
            .entry(name.into())
            .or_default()
            .insert(version.into(), expert);
    }

    /// Points `tag` of `name` at `version`.
    pub(crate) fn tag(&self, name: &str, tag: &str, version: &str) {
        let mut s = self.state.lock().unwrap();
        s.tags
            .entry(name.into())
            .or_default()
            .insert(tag.into(), version.into());
    }

    /// Answers every request with `failure` (or normally again with `None`).
    pub(crate) fn fail(&self, failure: Option<Failure>) {
        self.state.lock().unwrap().failure = failure;
    }

    /// Every request so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// The stored version, if any.
    pub(crate) fn get(&self, name: &str, version: &str) -> Option<Value> {
        let s = self.state.lock().unwrap();
        s.experts.get(name)?.get(version).cloned()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag; the listener closes with the thread.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    let body = String::from_utf8_lossy(&body).into_owned();
    let authorization = headers.get("authorization").cloned();
    let (status, text) = {
        let mut s = state.lock().unwrap();
        s.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            authorization: authorization.clone(),
            body: body.clone(),
        });
        answer(&mut s, &method, &path, authorization.as_deref(), &body)
    };
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.flush();
}

fn error(status: u16, error: &str, reason: &str) -> (u16, String) {
    (
        status,
        json!({"code": status, "error": error, "reason": reason}).to_string(),
    )
}

fn ok(expert: &Value) -> (u16, String) {
    (200, json!({"data": {"expert": expert}}).to_string())
}

fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&segment[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `@org/name@sel` -> (name, sel); `latest` when there is no selector.
fn split_key(key: &str) -> (String, String) {
    match key[1.min(key.len())..].find('@') {
        Some(at) => (key[..at + 1].to_owned(), key[at + 2..].to_owned()),
        None => (key.to_owned(), "latest".to_owned()),
    }
}

fn is_version(s: &str) -> bool {
    s.split('.').count() == 3 && s.chars().next().is_some_and(|c| c.is_ascii_digit())
}

fn answer(
    s: &mut State,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, String) {
    if let Some(key) = &s.api_key
        && auth != Some(&format!("Bearer {key}"))
    {
        return error(401, "Unauthorized", "Invalid or missing API key");
    }
    match &s.failure {
        Some(Failure::Status(code)) => return error(*code, "Failure", "forced by the test"),
        Some(Failure::Malformed) => return (200, "{\"data\": <html>".into()),
        Some(Failure::Down) | None => {}
    }
    let Some(rest) = path.strip_prefix("/api/registry/v1/experts/") else {
        return error(404, "Not Found", "no such route");
    };
    if rest.is_empty() || rest.starts_with('?') {
        return match method {
            "POST" => create(s, body),
            "GET" => {
                let all: Vec<Value> = s
                    .experts
                    .values()
                    .flat_map(|v| v.values().cloned())
                    .collect();
                let n = all.len();
                (
                    200,
                    json!({"data": {"experts": all}, "meta": {"total": n, "take": 100, "skip": 0}})
                        .to_string(),
                )
            }
            _ => error(405, "Method Not Allowed", ""),
        };
    }
    if rest.contains('/') && !rest.ends_with("/versions") {
        return error(400, "Bad Request", "the key must be one path segment");
    }
    if let Some(seg) = rest.strip_suffix("/versions") {
        let name = decode(seg);
        let Some(versions) = s.experts.get(&name) else {
            return error(404, "Not Found", "expert not found");
        };
        let latest = s
            .tags
            .get(&name)
            .and_then(|t| t.get("latest"))
            .cloned()
            .unwrap_or_default();
        let digests: Vec<Value> = versions
            .values()
            .map(|e| {
                let mut d = e.clone();
                d["type"] = json!("expertDigest");
                for f in ["instruction", "skills", "delegates", "status"] {
                    d.as_object_mut().unwrap().remove(f);
                }
                d
            })
            .collect();
        let n = digests.len();
        return (
            200,
            json!({"data": {"versions": digests, "latest": latest}, "meta": {"total": n}})
                .to_string(),
        );
    }
    let key = decode(rest);
    let (name, sel) = split_key(&key);
    let version = if is_version(&sel) {
        sel
    } else {
        match s.tags.get(&name).and_then(|t| t.get(&sel)) {
            Some(v) => v.clone(),
            None => return error(404, "Not Found", &format!("expert {key} not found")),
        }
    };
    let Some(expert) = s.experts.get(&name).and_then(|v| v.get(&version)).cloned() else {
        return error(404, "Not Found", &format!("expert {key} not found"));
    };
    match method {
        "GET" => {
            let mut e = expert;
            e["tags"] = json!(tags_of(s, &name, &version));
            ok(&e)
        }
        "DELETE" => {
            s.experts.get_mut(&name).unwrap().remove(&version);
            s.tags.get_mut(&name).unwrap().retain(|_, v| *v != version);
            (200, "{}".into())
        }
        "POST" => {
            let input: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            let mut e = expert;
            if let Some(status) = input["status"].as_str() {
                e["status"] = json!(status);
            }
            if let Some(tags) = input["tags"].as_array() {
                let t = s.tags.entry(name.clone()).or_default();
                t.retain(|k, v| k == "latest" || *v != version);
                for tag in tags.iter().filter_map(Value::as_str) {
                    t.insert(tag.into(), version.clone());
                }
            }
            s.experts
                .get_mut(&name)
                .unwrap()
                .insert(version.clone(), e.clone());
            e["tags"] = json!(tags_of(s, &name, &version));
            ok(&e)
        }
        _ => error(405, "Method Not Allowed", ""),
    }
}

fn tags_of(s: &State, name: &str, version: &str) -> Vec<String> {
    s.tags
        .get(name)
        .map(|t| {
            t.iter()
                .filter(|(_, v)| *v == version)
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn create(s: &mut State, body: &str) -> (u16, String) {
    let Ok(input) = serde_json::from_str::<Value>(body) else {
        return error(400, "Bad Request", "invalid JSON");
    };
    let (Some(name), Some(version)) = (input["name"].as_str(), input["version"].as_str()) else {
        return error(400, "Bad Request", "name and version are required");
    };
    if input["skills"].get("@perstack/base").is_none() {
        return error(400, "Bad Request", "@perstack/base skill is required");
    }
    for d in input["delegates"].as_array().into_iter().flatten() {
        let (dn, _) = split_key(d.as_str().unwrap_or(""));
        if !s.experts.contains_key(&dn) {
            return error(400, "Bad Request", &format!("delegate {dn} not found"));
        }
    }
    if s.experts.get(name).is_some_and(|v| v.contains_key(version)) {
        return error(409, "Conflict", "version already exists");
    }
    let mut e = definition(
        name,
        version,
        input["instruction"].as_str().unwrap_or(""),
        &[],
    );
    e["description"] = input["description"].clone();
    e["skills"] = input["skills"].clone();
    e["delegates"] = input["delegates"].clone();
    let name = name.to_owned();
    let version = version.to_owned();
    s.experts
        .entry(name.clone())
        .or_default()
        .insert(version.clone(), e.clone());
    s.tags
        .entry(name.clone())
        .or_default()
        .insert("latest".into(), version.clone());
    e["tags"] = json!(tags_of(s, &name, &version));
    ok(&e)
}
