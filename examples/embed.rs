//! Embedding the engine in your own program.
//!
//! Runs the reference workload of `experts/fanout` (a coordinator that delegates to two
//! children in one turn) offline on the scripted provider, prints each event from the job's
//! typed stream as it arrives, then the job's final status and result text.
//!
//! ```text
//! cargo run --example embed
//! ```
//!
//! The steps are the same with a real provider: only the `model` given to the builder changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use perstack::engine::{Engine, JobRequest, Settings};
use perstack::llm::scripted::ScriptedModel;
use perstack::schema::{EventPayload, JobStatus};
use perstack::storage::MemoryStorage;

/// `experts/fanout/perstack.toml`, found from the crate root (when built by cargo) or from the
/// working directory.
fn config_path() -> PathBuf {
    let relative = Path::new("experts/fanout/perstack.toml");
    let from_crate = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    if from_crate.is_file() {
        from_crate
    } else {
        relative.to_path_buf()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Configuration: the Experts, in their runtime form, with Perstack's defaults applied.
    let config = perstack::config::load(&config_path())?;

    // 2. The model. This workload's perstack.toml names the scripted provider and its script
    //    (`[provider.setting] script`), resolved against the configuration's directory. Any
    //    `Arc<dyn LanguageModel>` works here.
    let script = config
        .provider
        .as_ref()
        .and_then(|p| p.setting_str("script"))
        .unwrap_or("script.toml");
    let model = ScriptedModel::load(&config.resolve_relative(script))?;

    // 3. Settings: Perstack's defaults (100 steps, 5 retries, ...) for these Experts; the model
    //    id and provider name only label the run settings and events.
    let mut settings = Settings::new(config.experts.clone());
    settings.provider_name = "scripted".into();
    if let Some(id) = &config.model {
        settings.model = id.clone();
    }

    // 4. The engine: one event bus, one store, one provider, shared by every job started on it.
    //    `build` must run inside a tokio runtime. Without `.sink(..)` nothing goes to stdout;
    //    `.on_event(..)` would add a synchronous callback for the events of every job.
    let engine = Engine::builder()
        .settings(settings)
        .model(Arc::new(model))
        .storage(Arc::new(MemoryStorage::new()))
        .build();

    // 5. Start a job subscribed to its events. The stream must be read: when its buffer is
    //    full the engine waits for the reader (events are never dropped).
    let mut job = engine
        .start(JobRequest::new("coordinator", "Write a two-part summary").subscribe())
        .await?;
    println!("job {}", job.job_id);
    let mut events = job
        .take_events()
        .ok_or("the request subscribed, so the handle has a stream")?;

    // 6. Events arrive in the engine's global order; the stream closes when the job ends.
    while let Some(sequenced) = events.recv().await {
        let event = &sequenced.event;
        let expert = event.expert_key.as_deref().unwrap_or("-");
        let step = event
            .step_number
            .map_or_else(|| "-".to_string(), |s| s.to_string());
        let detail = match &event.payload {
            EventPayload::CallTools(p) => {
                let names: Vec<&str> = p.tool_calls.iter().map(|c| c.tool_name.as_str()).collect();
                format!("  tools: {}", names.join(", "))
            }
            EventPayload::CompleteRun(p) => format!("  text: {:?}", p.text),
            _ => String::new(),
        };
        println!(
            "{:>3}  {:<28} expert={expert:<12} step={step}{detail}",
            sequenced.seq,
            event.kind(),
        );
    }

    // 7. The outcome: the job record (as in job.json), the coordinator's last checkpoint and
    //    its result text.
    let outcome = job.wait().await?;
    println!(
        "status: {:?}, steps: {}, result: {}",
        outcome.job.status,
        outcome.job.total_steps,
        outcome.text.as_deref().unwrap_or("(none)")
    );

    // 8. Flush and stop the event bus.
    engine.shutdown().await;

    if outcome.job.status == JobStatus::Completed {
        Ok(())
    } else {
        Err(format!("the job ended {:?}", outcome.job.status).into())
    }
}
