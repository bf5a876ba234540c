//! T5 (a), `skill/*`: `healthCheck`, `todo` (one item) through a [`SkillActor`] of the
//! in-process base skill (`ask(CallTool)`), `todo` on [`InProcessBase::call`] without the actor,
//! and connecting a fresh in-process base skill.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use kameo::prelude::*;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

use perstack::actor::context::JobContext;
use perstack::actor::skill::{CallTool, SKILL_MAILBOX, SkillActor, SkillArgs, SkillKind};
use perstack::engine::Settings;
use perstack::llm::scripted::{Script, ScriptedModel};
use perstack::schema::BASE_SKILL;
use perstack::schema::id::new_id;
use perstack::skill::BaseSkill;
use perstack::skill::base::{InProcessBase, connect_in_process};
use perstack::storage::{MemoryStorage, Storage};

use crate::{percentiles, spawn_bus, stop_bus};

pub(crate) fn bench_skill(c: &mut Criterion, rt: &Runtime, report: &mut Vec<String>) {
    let settings = Arc::new(Settings::new(BTreeMap::new()));
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let (bus, skill, direct) = rt.block_on(async {
        let bus = spawn_bus(None, storage.clone());
        let ctx = Arc::new(JobContext {
            job_id: new_id(),
            settings: settings.clone(),
            model: Arc::new(ScriptedModel::new(Script::default())),
            bus: bus.clone(),
            cancel: CancellationToken::new(),
            failure: Default::default(),
            storage,
        });
        let skill = SkillActor::spawn_with_mailbox(
            SkillArgs {
                ctx,
                run_id: new_id(),
                name: BASE_SKILL.into(),
                kind: SkillKind::Base,
                omit: Vec::new(),
                pick: Vec::new(),
                locked_tools: None,
            },
            kameo::mailbox::bounded(SKILL_MAILBOX),
        );
        skill
            .wait_for_startup_with_result(|r| r.map_err(|e| e.to_string()))
            .await
            .expect("the base skill starts");
        let direct = connect_in_process(BaseSkill::new(settings.workspace.clone()))
            .await
            .expect("the base skill connects");
        // One todo item in each, so every timed `todo` call returns the same one-item list.
        let add = json!({ "newTodos": ["measure"] });
        call_actor(&skill, "todo", add.clone()).await;
        direct.call("todo", add).await.expect("todo answers");
        (bus, skill, direct)
    });
    let todo_args = json!({ "completedTodos": [0] });

    let mut actor_todo = Vec::new();
    let mut actor_health = Vec::new();
    let mut direct_todo = Vec::new();
    let mut connect = Vec::new();
    let mut group = c.benchmark_group("skill");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("call_todo_actor", |b| {
        b.iter_custom(|iters| {
            rt.block_on(timed(iters, &mut actor_todo, || {
                call_actor(&skill, "todo", todo_args.clone())
            }))
        });
    });
    group.bench_function("call_health_check_actor", |b| {
        b.iter_custom(|iters| {
            rt.block_on(timed(iters, &mut actor_health, || {
                call_actor(&skill, "healthCheck", json!({}))
            }))
        });
    });
    group.bench_function("call_todo_in_process_base", |b| {
        b.iter_custom(|iters| {
            rt.block_on(timed(iters, &mut direct_todo, || async {
                direct
                    .call("todo", todo_args.clone())
                    .await
                    .expect("todo answers");
            }))
        });
    });
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    group.bench_function("connect_base", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let skill = BaseSkill::new(settings.workspace.clone());
                    let t0 = Instant::now();
                    let conn: InProcessBase = connect_in_process(skill)
                        .await
                        .expect("the base skill connects");
                    let d = t0.elapsed();
                    total += d;
                    connect.push(d);
                    conn.close().await;
                }
                total
            })
        });
    });
    group.finish();
    rt.block_on(async {
        direct.close().await;
        let _ = skill.stop_gracefully().await;
        skill.wait_for_shutdown().await;
        stop_bus(bus).await;
    });

    for (label, samples) in [
        (
            "T5 base tool call, todo via SkillActor ask(CallTool)",
            actor_todo,
        ),
        (
            "T5 base tool call, healthCheck via SkillActor ask(CallTool)",
            actor_health,
        ),
        (
            "T5 base tool call, todo via InProcessBase::call (no actor)",
            direct_todo,
        ),
        (
            "T5 in-process base skill connect (connect_in_process)",
            connect,
        ),
    ] {
        if let Some(line) = percentiles(label, samples) {
            println!("{line}");
            report.push(line);
        }
    }
}

async fn call_actor(skill: &ActorRef<SkillActor>, tool: &str, args: Value) {
    let outcome = skill
        .ask(CallTool {
            name: tool.into(),
            args,
        })
        .await
        .expect("the skill actor answers");
    assert!(!outcome.is_error, "{tool} failed: {:?}", outcome.parts);
}

/// Run `op` `iters` times, one at a time, recording each duration; the total.
async fn timed<F, Fut>(iters: u64, samples: &mut Vec<Duration>, mut op: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let t0 = Instant::now();
        op().await;
        let d = t0.elapsed();
        total += d;
        samples.push(d);
    }
    total
}
