//! `tracing` spans through the embedding API: a user's subscriber sees the job, its runs (a
//! delegated run under the run that delegated it), and each run's generations and tool calls,
//! with their ids as fields.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use perstack::engine::{Engine, JobRequest, Settings};
use perstack::llm::scripted::ScriptedModel;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[cfg(feature = "otel")]
mod otlp;

/// One span as a subscriber saw it open.
#[derive(Debug, Clone)]
struct Seen {
    id: u64,
    name: String,
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
}

/// A layer that records every new span with its fields and its parent.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.id().into_u64());
        self.0.lock().unwrap().push(Seen {
            id: id.into_u64(),
            name: attrs.metadata().name().into(),
            parent,
            fields,
        });
    }
}

fn experts(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("experts")
        .join(name)
}

/// One thread: the subscriber is the thread's default, and every actor and task of the job
/// runs on this thread.
#[tokio::test(flavor = "current_thread")]
async fn a_fanout_job_shows_its_span_tree_to_a_subscriber() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let config = perstack::config::load(&experts("fanout").join("perstack.toml")).unwrap();
    let model = ScriptedModel::load(&experts("fanout").join("script.toml")).unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(config.experts.clone());
    settings.workspace = workspace.path().to_path_buf();
    let engine = Engine::builder()
        .settings(settings)
        .model(Arc::new(model))
        .build();
    let handle = engine
        .start(JobRequest::new("coordinator", "hello"))
        .await
        .unwrap();
    let job_id = handle.job_id.clone();
    let outcome = tokio::time::timeout(Duration::from_secs(60), handle.wait())
        .await
        .expect("the job did not finish within 60 s")
        .unwrap();
    assert_eq!(
        outcome.text.as_deref(),
        Some("Both halves are done: first half done, second half done.")
    );
    engine.shutdown().await;

    let spans = capture.0.lock().unwrap().clone();
    let by_id: BTreeMap<u64, &Seen> = spans.iter().map(|s| (s.id, s)).collect();
    let parent_of = |s: &Seen| s.parent.and_then(|p| by_id.get(&p).copied());
    let named = |name: &'static str| spans.iter().filter(move |s| s.name == name);

    // One job span, a root, carrying the job id and the coordinator.
    let jobs: Vec<&Seen> = named("job").collect();
    assert_eq!(jobs.len(), 1, "{spans:#?}");
    let job = jobs[0];
    assert_eq!(job.parent, None);
    assert_eq!(job.fields["jobId"], job_id);
    assert_eq!(job.fields["expertKey"], "coordinator");

    // Runs: the coordinator's under the job, each child's under the coordinator's run.
    let runs: Vec<&Seen> = named("run").collect();
    let expert_of = |s: &Seen| s.fields["expertKey"].clone();
    let mut run_experts: Vec<String> = runs.iter().map(|r| expert_of(r)).collect();
    run_experts.sort();
    assert_eq!(
        run_experts,
        ["child-a", "child-b", "coordinator"],
        "{runs:#?}"
    );
    for run in &runs {
        assert_eq!(run.fields["jobId"], job_id);
        assert!(!run.fields["runId"].is_empty());
        let parent = parent_of(run).expect("a run span has a parent");
        if expert_of(run) == "coordinator" {
            assert_eq!(parent.id, job.id);
        } else {
            assert_eq!(parent.name, "run");
            assert_eq!(expert_of(parent), "coordinator");
        }
    }

    // Generations: each under the run of its Expert, with the step number, one per scripted
    // turn (the coordinator: delegate, attemptCompletion, its result; each child: two).
    let mut per_expert: BTreeMap<String, usize> = BTreeMap::new();
    for g in named("generation") {
        let parent = parent_of(g).expect("a generation span has a parent");
        assert_eq!(parent.name, "run", "{g:?}");
        assert_eq!(expert_of(parent), g.fields["expertKey"]);
        assert_eq!(g.fields["jobId"], job_id);
        assert!(g.fields["stepNumber"].parse::<u32>().unwrap() >= 1);
        *per_expert.entry(g.fields["expertKey"].clone()).or_default() += 1;
    }
    assert_eq!(
        per_expert,
        BTreeMap::from([
            ("child-a".to_string(), 2),
            ("child-b".to_string(), 2),
            ("coordinator".to_string(), 3),
        ])
    );

    // Tool calls: each under a run, with the tool's name and call id; never a message list.
    let calls: Vec<&Seen> = named("tool_call").collect();
    let mut call_ids: Vec<&str> = calls
        .iter()
        .map(|t| t.fields["toolCallId"].as_str())
        .collect();
    call_ids.sort_unstable();
    assert_eq!(
        call_ids,
        ["call_a_done", "call_b_done", "call_coord_done"],
        "{calls:#?}"
    );
    for t in calls {
        let parent = parent_of(t).expect("a tool-call span has a parent");
        assert_eq!(parent.name, "run", "{t:?}");
        assert!(!t.fields["toolName"].is_empty() && !t.fields["toolCallId"].is_empty());
    }
    for s in &spans {
        assert!(
            !s.fields
                .keys()
                .any(|k| k == "messages" || k.contains("key") && k != "expertKey"),
            "{s:?}"
        );
    }
}
