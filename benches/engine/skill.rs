//! T5 (a), `skill/*`: base tool calls as a job makes them, through the public API. One job of
//! `experts/single`'s `assistant` makes [`CALLS`] calls of one base tool (`todo` with one item,
//! or `healthCheck`), each in its own step; the [`Probe`] model marks the end of each
//! generation asking for the tool and the start of the next one. Each sample is that gap: the
//! `callTools` event, the call to the in-process base skill (called in place: without a
//! `perstack.lock` or an egress proxy it has no actor of its own), the `resolveToolResults` event
//! and the step's checkpoint. Criterion times whole jobs.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, SamplingMode};
use tokio::runtime::Runtime;

use perstack::engine::{Engine, Settings};
use perstack::llm::scripted::Script;
use perstack::storage::MemoryStorage;

use crate::job::{Mark, Probe, experts_dir, nth_mark, probed_job};
use crate::percentiles;

/// Tool calls per job: enough samples per job that the job's start and end do not dominate.
const CALLS: usize = 50;

/// `calls` steps each calling `tool` with `args` (a TOML inline table), then the completion.
fn script(tool: &str, args: &str) -> Script {
    let mut text = String::new();
    for i in 0..CALLS {
        let _ = write!(
            text,
            "[[turns]]\nexpert = \"assistant\"\n\
             toolCalls = [{{ id = \"call_{i}\", name = \"{tool}\", args = {args} }}]\n\n"
        );
    }
    text.push_str(
        "[[turns]]\nexpert = \"assistant\"\ntoolCalls = [{ id = \"call_done\", name = \"attemptCompletion\" }]\n\n\
         [[turns]]\nexpert = \"assistant\"\ntext = \"Done.\"\n",
    );
    toml::from_str(&text).expect("a valid script")
}

pub(crate) fn bench_skill(c: &mut Criterion, rt: &Runtime, report: &mut Vec<String>) {
    let single = perstack::config::load(&experts_dir("single").join("perstack.toml"))
        .expect("experts/single loads");
    let probe = Arc::new(Probe::new());
    let engine = {
        let _guard = rt.enter();
        Engine::builder()
            .settings(Settings::new(single.experts))
            .model(probe.clone())
            .storage(Arc::new(MemoryStorage::new()))
            .build()
    };
    let cases = [
        (
            "call_todo_in_job",
            "T5 base tool call in a job step, todo (generation end -> next generation)",
            script("todo", "{ newTodos = [\"measure\"], completedTodos = [0] }"),
        ),
        (
            "call_health_check_in_job",
            "T5 base tool call in a job step, healthCheck (generation end -> next generation)",
            script("healthCheck", "{}"),
        ),
    ];

    let mut group = c.benchmark_group("skill");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let mut results = Vec::new();
    for (name, label, script) in cases {
        let mut samples = Vec::new();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (_, wall, marks) =
                        rt.block_on(probed_job(&engine, &probe, &script, "assistant"));
                    total += wall;
                    for i in 0..CALLS {
                        samples.push(
                            nth_mark(&marks, "assistant", Mark::Called, i + 1)
                                - nth_mark(&marks, "assistant", Mark::Finished, i),
                        );
                    }
                }
                total
            });
        });
        results.push((label, samples));
    }
    group.finish();
    rt.block_on(engine.shutdown());

    for (label, samples) in results {
        if let Some(line) = percentiles(label, samples) {
            println!("{line}");
            report.push(line);
        }
    }
}
