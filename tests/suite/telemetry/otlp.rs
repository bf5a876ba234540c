//! The `otel` feature: `perstack run` with `OTEL_EXPORTER_OTLP_ENDPOINT` set sends its spans to
//! an OTLP/HTTP collector, here an in-process handler on 127.0.0.1 that records each request.
//! Checked on the decoded OTLP/JSON body: span names, the parent of each span, one trace for
//! the job, and the ids as attributes; and that the default encoding is protobuf.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::suite::common;
use crate::suite::fake_server::{FakeServer, Recorded, Reply};

/// One exported span, as OTLP/JSON spells it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    /// Empty for a root span.
    parent_span_id: String,
    attributes: BTreeMap<String, String>,
}

/// `perstack run` of `experts/fanout` exporting to `collector` with `extra_env`; the job id
/// from its events. Bounded: the run is killed after 60 s.
async fn run_fanout(collector: &FakeServer, extra_env: &[(&str, &str)]) -> String {
    let workspace = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(common::bin());
    cmd.args(["run", "--config"])
        .arg(common::experts("fanout"))
        .args(["coordinator", "hello"])
        .current_dir(workspace.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url())
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_SERVICE_NAME")
        .kill_on_drop(true);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("perstack run did not finish within 60 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    first["jobId"].as_str().unwrap().to_owned()
}

/// The `/v1/traces` requests the collector received (the binary flushes before it exits).
async fn trace_requests(collector: &FakeServer) -> Vec<Recorded> {
    let requests: Vec<Recorded> = collector.requests().await;
    assert!(!requests.is_empty(), "the collector received nothing");
    for r in &requests {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/traces"));
    }
    requests
}

fn collector_replies() -> Vec<Reply> {
    (0..16)
        .map(|_| Reply::status(200).json(json!({})))
        .collect()
}

/// Every span of every OTLP/JSON request body.
fn spans(requests: &[Recorded]) -> Vec<Span> {
    let mut out = Vec::new();
    for r in requests {
        for rs in r.body["resourceSpans"].as_array().unwrap() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "service.name")
                .map(|a| a["value"]["stringValue"].clone());
            assert_eq!(service, Some(json!("perstack")));
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    let attributes = s["attributes"]
                        .as_array()
                        .map(|a| a.as_slice())
                        .unwrap_or_default()
                        .iter()
                        .map(|a| {
                            let v = &a["value"];
                            let text = v["stringValue"]
                                .as_str()
                                .map(str::to_owned)
                                .or_else(|| v["intValue"].as_str().map(str::to_owned))
                                .or_else(|| v["intValue"].as_i64().map(|i| i.to_string()))
                                .unwrap_or_else(|| v.to_string());
                            (a["key"].as_str().unwrap().to_owned(), text)
                        })
                        .collect();
                    out.push(Span {
                        name: s["name"].as_str().unwrap().to_owned(),
                        trace_id: s["traceId"].as_str().unwrap().to_owned(),
                        span_id: s["spanId"].as_str().unwrap().to_owned(),
                        parent_span_id: s["parentSpanId"].as_str().unwrap_or("").to_owned(),
                        attributes,
                    });
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_run_exports_its_span_tree_over_otlp_http_json() {
    let collector = FakeServer::start(collector_replies()).await;
    let job_id = run_fanout(&collector, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).await;
    let requests = trace_requests(&collector).await;
    for r in &requests {
        assert_eq!(r.headers["content-type"], "application/json", "{r:?}");
    }
    let spans = spans(&requests);
    let by_id: BTreeMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let parent_of = |s: &Span| by_id.get(s.parent_span_id.as_str()).copied();
    let named = |name: &'static str| spans.iter().filter(move |s| s.name == name);

    // One job span, the root of one trace, with the job id and the coordinator.
    let jobs: Vec<&Span> = named("job").collect();
    assert_eq!(jobs.len(), 1, "{spans:#?}");
    let job = jobs[0];
    assert_eq!(job.parent_span_id, "", "{job:?}");
    assert_eq!(job.attributes["jobId"], job_id);
    assert_eq!(job.attributes["expertKey"], "coordinator");
    assert!(
        spans.iter().all(|s| s.trace_id == job.trace_id),
        "{spans:#?}"
    );

    // Runs: the coordinator's under the job, each child's under the coordinator's run.
    let runs: Vec<&Span> = named("run").collect();
    let mut experts: Vec<&str> = runs
        .iter()
        .map(|r| r.attributes["expertKey"].as_str())
        .collect();
    experts.sort_unstable();
    assert_eq!(experts, ["child-a", "child-b", "coordinator"], "{runs:#?}");
    for run in &runs {
        assert_eq!(run.attributes["jobId"], job_id);
        assert!(!run.attributes["runId"].is_empty());
        let parent = parent_of(run).expect("a run span's parent was exported");
        if run.attributes["expertKey"] == "coordinator" {
            assert_eq!(parent.span_id, job.span_id);
        } else {
            assert_eq!(parent.name, "run");
            assert_eq!(parent.attributes["expertKey"], "coordinator");
        }
    }

    // Generations under the run of their Expert, one per scripted turn.
    let mut per_expert: BTreeMap<String, usize> = BTreeMap::new();
    for g in named("generation") {
        let parent = parent_of(g).expect("a generation span's parent was exported");
        assert_eq!(parent.name, "run", "{g:?}");
        assert_eq!(parent.attributes["expertKey"], g.attributes["expertKey"]);
        assert_eq!(parent.attributes["jobId"], job_id);
        assert!(g.attributes["stepNumber"].parse::<u32>().unwrap() >= 1);
        *per_expert
            .entry(g.attributes["expertKey"].clone())
            .or_default() += 1;
    }
    let expected = BTreeMap::from([
        ("child-a".to_string(), 2),
        ("child-b".to_string(), 2),
        ("coordinator".to_string(), 3),
    ]);
    assert_eq!(per_expert, expected);

    // Tool calls under their run, with the tool's name and the call id.
    let mut call_ids: Vec<&str> = named("tool_call")
        .map(|t| {
            assert_eq!(parent_of(t).map(|p| p.name.as_str()), Some("run"), "{t:?}");
            assert_eq!(t.attributes["toolName"], "attemptCompletion");
            t.attributes["toolCallId"].as_str()
        })
        .collect();
    call_ids.sort_unstable();
    assert_eq!(call_ids, ["call_a_done", "call_b_done", "call_coord_done"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_otlp_encoding_is_protobuf() {
    let collector = FakeServer::start(collector_replies()).await;
    let job_id = run_fanout(&collector, &[]).await;
    let requests = trace_requests(&collector).await;
    let body: String = requests.iter().map(|r| r.raw_body.as_str()).collect();
    for r in &requests {
        assert_eq!(r.headers["content-type"], "application/x-protobuf", "{r:?}");
    }
    // Protobuf carries strings as they are: the span names and the job id are in the body.
    for needle in ["generation", "tool_call", "jobId", job_id.as_str()] {
        assert!(body.contains(needle), "{needle} not in the exported spans");
    }
}
