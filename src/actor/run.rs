//! The run actor: one per Expert execution.
//!
//! It owns the run's [`Machine`] (checkpoint and history) and executes its effects: model calls
//! and tool calls run in spawned tasks that report back with a tell, so the actor stays
//! responsive; delegations spawn child run actors **linked to this one** (the actor tree
//! mirrors the Expert tree), at most `max_parallel_delegates` at a time. A child's outcome,
//! success or failure, becomes that delegate call's tool result; a child failure never stops
//! the parent or its siblings, and a parent that stops before its children (a panic) stops
//! them. Children report upward with a tell, never an ask.
//!
//! # Lifetime
//!
//! No run is supervised: nothing restarts a run in place, and kameo keeps a supervised child's
//! spawn arguments and mailbox in its supervisor's links for as long as the supervisor exists
//! (to rebuild the child on a restart), so a parent would hold every finished child's (3 KiB of
//! mailbox each) until its own end. The coordinator is spawned by its job's task; delegated runs
//! are linked to their parent (`delegation`), which carries the death notices both ways. A
//! finished child is freed when it stops. An `ActorRef` (weak or strong) owns the links of the
//! actor it points to, so [`RunArgs`] still carry nothing that points back up the tree;
//! whoever spawns a run sends it [`Begin`] right after, with the [`Parent`] to report to.
//! Everything of a job is freed when its coordinator stops (`tests/suite/lifecycle.rs`).
//!
//! # Handing back
//!
//! A cluster worker that shuts down hands its jobs back ([`JobContext::request_hand_back`]):
//! a run reaching a step boundary (its next model call) shows and stores what committed the
//! step, drops the next step's opening events and parks; model and tool calls under way, runs
//! told to begin and reports to a parent are counted in [`JobContext::in_flight`], and when
//! that count reaches 0 the job fails with [`RunFailure::HandedBack`]: parked runs end
//! without any event or write, parents do not resume, and the job record stays `running`
//! for the next holder.
//!
//! # Layout
//!
//! This file holds the actor, its messages and the loop that drives the machine's effects; the
//! rest lives beside it:
//!
//! | module | owns |
//! | --- | --- |
//! | `skills` | set-up: the run's skills (SkillActors, or the inline base skill), its tool index and the tools the model sees |
//! | `tasks` | the model call and the tool calls, run off the mailbox |
//! | `delegation` | one turn's child actors, spawned and forwarded into [`Delegation`] |
//! | `publish` | what the run shows: each segment's `initializeRuntime`, a machine output's events in one publish, the terminal event of a run that can no longer publish |
//! | `report` | the end: close the skills, then report to the parent once |

mod delegation;
mod publish;
mod report;
mod skills;
mod tasks;

use std::collections::HashMap;
use std::sync::Arc;

use kameo::prelude::*;

use self::delegation::Children;
use super::context::{JobContext, now_ms, unbox};
use super::skill::SkillRef;
use crate::agent::RunFailure;
use crate::agent::{
    Delegation, Effect, Machine, MachineSetting, Output, Start, ToolIndex, instruction_text,
};
use crate::llm::ToolSpec;
use crate::schema::{Checkpoint, Expert, id::new_id};

/// The mailbox size of a run actor: task results, child reports and control messages.
/// Children report with a blocking tell; at most `max_parallel_delegates` can be waiting.
pub(crate) const RUN_MAILBOX: usize = 64;

/// Who receives a run's final report.
pub(crate) enum Parent {
    /// The job (this is the coordinator): the report goes to the job's task, once (`None`
    /// once sent). Boxed: the channel holds a slot for it from the start.
    Job(Option<tokio::sync::oneshot::Sender<Box<RunFinished>>>),
    /// A parent run; `slot` is the delegate call's position in its turn.
    Run(ActorRef<RunActor>, usize),
}

/// What a run actor starts with. They never hold a reference to an actor of the job (see the
/// module docs): the parent comes with [`Begin`].
#[derive(Clone)]
pub(crate) struct RunArgs {
    /// The job's shared context.
    pub ctx: Arc<JobContext>,
    /// The Expert to run.
    pub expert_key: String,
    /// The checkpoint to start from (fresh `init`, continued, or a child's).
    pub checkpoint: Checkpoint,
    /// The input.
    pub start: Start,
    /// The span of whoever started the run (the job's, or the delegating run's): the parent
    /// of this run's span. A span is no actor reference, so it keeps no actor alive.
    pub parent_span: tracing::Span,
}

/// A run's final report to its parent.
#[derive(Debug)]
pub(crate) struct RunFinished {
    /// The delegate call's slot (0 for the coordinator).
    pub slot: usize,
    /// The final checkpoint.
    pub checkpoint: Checkpoint,
    /// The result text when the run completed.
    pub text: Option<String>,
}

/// One run. Its state is boxed: kameo's task future holds the actor several times over, and
/// a waiting run should cost a pointer there, not its whole state each time.
pub(crate) struct RunActor(Box<RunState>);

impl std::ops::Deref for RunActor {
    type Target = RunState;

    fn deref(&self) -> &RunState {
        &self.0
    }
}

impl std::ops::DerefMut for RunActor {
    fn deref_mut(&mut self) -> &mut RunState {
        &mut self.0
    }
}

/// What a [`RunActor`] holds.
pub(crate) struct RunState {
    ctx: Arc<JobContext>,
    /// Shared with the engine's other runs of this Expert ([`JobContext::experts`]).
    expert: Arc<Expert>,
    /// The run's `tracing` span (`jobId`, `runId` of its first segment, `expertKey`): the
    /// parent of its generation, tool-call and delegated runs' spans, carried explicitly
    /// because they run in other tasks and actors.
    span: tracing::Span,
    /// Boxed, like the pending report: kameo's task future holds the actor several times over.
    machine: Box<Machine>,
    /// The input, until [`Begin`] starts the machine with it. Boxed, as the start-up error:
    /// the state lives as long as the run, these only until it begins.
    start: Option<Box<Start>>,
    /// Who receives the final report; set by [`Begin`], the first message a run handles.
    parent: Option<Parent>,
    /// This actor, held strongly while it runs: `on_link_died` only gets a weak reference,
    /// which cannot be upgraded once no message or task holds a strong one (a child that
    /// crashed without reporting would then leave this run waiting forever). Dropped with the
    /// actor's state when it stops, so it keeps nothing alive afterwards.
    me: ActorRef<RunActor>,
    skills: HashMap<String, SkillRef>,
    tools: Arc<Vec<ToolSpec>>,
    index: Arc<ToolIndex>,
    /// The children of the turn in flight, while the run waits for them.
    /// Boxed, like the machine: it is only there while the run waits.
    delegation: Option<Box<Children>>,
    startup_error: Option<Box<RunFailure>>,
    result_text: Option<String>,
    finished: bool,
    /// Skills still shutting down after the run finished; the report waits for them (their
    /// `skillDisconnected` events come first), delivered from `on_link_died`.
    closing: std::collections::HashSet<ActorId>,
    /// The report to send once `closing` is empty.
    pending_report: Option<Box<RunFinished>>,
}

/// Start the run's loop, reporting to `parent` when it ends. Sent by whoever spawned the run
/// (the job task or the parent run) right after spawning it; it is the first message a run
/// handles. The parent travels here rather than in [`RunArgs`] so that no spawn argument points
/// back up the actor tree (see the module docs).
pub(crate) struct Begin {
    /// Who receives the final report.
    pub parent: Parent,
}

impl Actor for RunActor {
    /// Boxed, as the actor's state: kameo's task future holds its arguments until it starts.
    type Args = Box<RunArgs>;
    type Error = std::convert::Infallible;

    async fn on_start(args: Box<RunArgs>, me: ActorRef<Self>) -> Result<Self, Self::Error> {
        // This hook is inlined into the actor's task, which is as large as its largest await
        // for the actor's whole life, and a run can wait in each step long (on a busy bus):
        // the state is built outside any async frame, and each step is boxed, holding only
        // what it needs.
        let mut actor = RunActor::new(args, &me);
        let announcing = Box::pin(actor.announce_segment(now_ms()));
        announcing.await;
        let setting_up = Box::pin(actor.set_up_tools(&me));
        if let Err(e) = setting_up.await {
            actor.startup_error = Some(Box::new(e));
        }
        Ok(actor)
    }

    async fn on_panic(
        &mut self,
        me: WeakActorRef<Self>,
        err: PanicError,
    ) -> Result<std::ops::ControlFlow<ActorStopReason>, Self::Error> {
        // Boxed: this hook is inlined into the actor's task, which would otherwise be as
        // large as its largest await for the actor's whole life.
        Box::pin(async move {
            // An engine bug: still end with a terminal event, a stored checkpoint and a report.
            tracing::error!(run = %self.machine.setting().run_id, "run actor panicked: {err}");
            if !self.finished {
                let failure = RunFailure::Engine(format!("internal error: {err}"));
                let out = self.machine.abort(now_ms(), failure.clone());
                if let Err(f) = self.publish_events(out.events).await {
                    self.stop_unstored(f).await;
                }
                let _ = me;
                self.close_and_report(None).await;
            }
            Ok(std::ops::ControlFlow::Break(ActorStopReason::Panicked(err)))
        })
        .await
    }

    async fn on_link_died(
        &mut self,
        _: WeakActorRef<Self>,
        id: ActorId,
        reason: ActorStopReason,
    ) -> Result<std::ops::ControlFlow<ActorStopReason>, Self::Error> {
        // Boxed: this hook is inlined into the actor's task, which would otherwise be as
        // large as its largest await for the actor's whole life.
        Box::pin(async move {
            // The parent run stopped before this run finished (it panicked, or it was handed
            // back and does not wait): stop too, as a supervised child would be stopped.
            if !self.finished
                && matches!(&self.parent, Some(Parent::Run(parent, _)) if parent.id() == id)
            {
                return Ok(std::ops::ControlFlow::Break(ActorStopReason::LinkDied {
                    id,
                    reason: Box::new(reason),
                }));
            }
            // A child that died without reporting becomes a failed delegation; skills are ignored.
            if !matches!(
                reason,
                ActorStopReason::Normal | ActorStopReason::SupervisorRestart
            ) {
                let reported = self
                    .delegation
                    .as_mut()
                    .is_some_and(|d| d.child_died(id, &reason));
                if reported {
                    let me = self.me.clone();
                    self.after_child(&me).await;
                }
            }
            if self.closing.remove(&id) && self.closing.is_empty() {
                self.send_report().await;
            }
            if self.is_done() {
                return Ok(std::ops::ControlFlow::Break(ActorStopReason::Normal));
            }
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .await
    }
}

impl Message<Begin> for RunActor {
    type Reply = ();

    async fn handle(&mut self, begin: Begin, ctx: &mut Context<Self, Self::Reply>) {
        self.parent = Some(begin.parent);
        let now = now_ms();
        let instruction = {
            let delegates: Vec<&Expert> = self
                .expert
                .delegates
                .iter()
                .filter_map(|k| self.ctx.settings.experts.get(k))
                .collect();
            instruction_text(&self.expert, &delegates, now, &self.ctx.settings.workspace)
        };
        let Some(start) = self.start.take() else {
            self.ctx.leave();
            return;
        };
        // Every start goes through here, crash recovery included: a run whose skills did not
        // start stops before anything else runs.
        let mut out = self.machine.start(now, *start, instruction);
        if let Some(err) = self.startup_error.take() {
            // Publish startRun (if this start has one) only, then stop: nothing else may run
            // without the tools.
            out.events.truncate(1);
            let stop = self.machine.abort(now, *err);
            out.events.extend(stop.events);
            out.effect = Effect::Stop;
        }
        self.drive(out, ctx.actor_ref()).await;
        // Told to begin by whoever spawned it (counted in flight until now).
        self.ctx.leave();
        if self.is_done() {
            ctx.stop();
        }
    }
}

/// The job a parked run waits in stopped (handed back, or cancelled meanwhile): end the run
/// with the job's stop reason.
struct Unpark;

impl Message<Unpark> for RunActor {
    type Reply = ();

    async fn handle(&mut self, _: Unpark, ctx: &mut Context<Self, Self::Reply>) {
        let reason = self.ctx.stop_reason().unwrap_or(RunFailure::Cancelled);
        self.end_with(reason, ctx.actor_ref()).await;
        if self.is_done() {
            ctx.stop();
        }
    }
}

/// The model call finished.
struct Generated(Result<crate::llm::Generation, crate::llm::GenerationError>);

impl Message<Generated> for RunActor {
    type Reply = ();

    async fn handle(&mut self, Generated(r): Generated, ctx: &mut Context<Self, Self::Reply>) {
        match self.ctx.failure.get().cloned() {
            // The job stopped for a reason of its own while the model ran: the run ends with
            // that reason, not with the cancelled call.
            Some(failure) => self.end_with(failure, ctx.actor_ref()).await,
            None => {
                let out = self
                    .machine
                    .handle(now_ms(), crate::agent::Input::Generated(r));
                self.drive(out, ctx.actor_ref()).await;
            }
        }
        // The model call is done (whatever came next is counted on its own).
        self.ctx.leave();
        if self.is_done() {
            ctx.stop();
        }
    }
}

/// The tool calls finished: their results in call order, or the failure of a call that stops
/// the run (a skill fault that does not go back to the model).
struct ToolsDone(Result<Vec<crate::schema::ToolResult>, RunFailure>);

impl Message<ToolsDone> for RunActor {
    type Reply = ();

    async fn handle(&mut self, ToolsDone(r): ToolsDone, ctx: &mut Context<Self, Self::Reply>) {
        match (self.ctx.failure.get().cloned(), r) {
            (Some(failure), _) | (None, Err(failure)) => {
                self.end_with(failure, ctx.actor_ref()).await;
            }
            (None, Ok(results)) => {
                let out = self
                    .machine
                    .handle(now_ms(), crate::agent::Input::ToolsDone(results));
                self.drive(out, ctx.actor_ref()).await;
            }
        }
        self.ctx.leave();
        if self.is_done() {
            ctx.stop();
        }
    }
}

impl Message<RunFinished> for RunActor {
    type Reply = ();

    async fn handle(&mut self, report: RunFinished, ctx: &mut Context<Self, Self::Reply>) {
        if let Some(children) = self.delegation.as_mut() {
            children.child_finished(report);
        }
        self.after_child(ctx.actor_ref()).await;
        // The child's report was counted in flight until here.
        self.ctx.leave();
        if self.is_done() {
            ctx.stop();
        }
    }
}

impl RunActor {
    /// A run's state from its spawn arguments (freed here, not kept in the task).
    fn new(args: Box<RunArgs>, me: &ActorRef<Self>) -> Self {
        let args = unbox(args);
        let ctx = args.ctx;
        let settings = ctx.settings.clone();
        let expert = ctx
            .experts
            .get(&args.expert_key)
            .cloned()
            .unwrap_or_else(|| {
                Arc::new(Expert {
                    key: args.expert_key.clone(),
                    name: args.expert_key.clone(),
                    version: "1.0.0".into(),
                    description: None,
                    instruction: String::new(),
                    skills: Default::default(),
                    delegates: Vec::new(),
                    tags: Vec::new(),
                    provider_tools: None,
                    provider_skills: None,
                    provider_tool_options: None,
                })
            });
        let setting = MachineSetting {
            job_id: ctx.job_id.clone(),
            run_id: args.checkpoint.run_id.clone(),
            expert: expert.reference(),
            max_steps: settings.max_steps,
            max_retries: settings.max_retries,
            context_window: settings.context_window,
        };
        let span = tracing::info_span!(
            parent: &args.parent_span,
            "run",
            jobId = %ctx.job_id,
            runId = %args.checkpoint.run_id,
            expertKey = %args.expert_key,
        );
        RunActor(Box::new(RunState {
            span,
            machine: Box::new(Machine::new(setting, ToolIndex::new(), args.checkpoint)),
            ctx,
            expert,
            start: Some(Box::new(args.start)),
            parent: None,
            me: me.clone(),
            skills: HashMap::new(),
            tools: Arc::new(Vec::new()),
            index: Arc::new(ToolIndex::new()),
            delegation: None,
            startup_error: None,
            result_text: None,
            finished: false,
            closing: Default::default(),
            pending_report: None,
        }))
    }

    /// Publish events in order, then execute the effect. Loops instead of recursing when an
    /// effect completes at once.
    ///
    /// A run spends most of its life in here, waiting for the bus to take its events (the
    /// handler's future is allocated for as long as it runs): the rarer and larger steps
    /// (spawning children, resuming, ending) are boxed, so that the wait costs what
    /// publishing needs, not what the largest of them would.
    async fn drive(&mut self, mut out: Output, me: &ActorRef<Self>) {
        loop {
            if self.ctx.handing_back() && matches!(out.effect, Effect::Generate { .. }) {
                // A step boundary while the job is handed back: what commits the step before
                // is shown and stored; the next step's opening (its `startGeneration`, a run's
                // `startRun`) is left to the job's next holder, which runs that step.
                let keep = out
                    .events
                    .iter()
                    .rposition(|e| e.checkpoint().is_some())
                    .map_or(0, |i| i + 1);
                out.events.truncate(keep);
            }
            if let Err(failure) = self.publish_events(std::mem::take(&mut out.events)).await {
                // Nothing more of this run can be shown or stored: end it with the failure.
                Box::pin(self.stop_unstored(failure)).await;
                Box::pin(self.close_and_report(Some(me.clone()))).await;
                return;
            }
            // A run that just stopped by delegation has ended its segment: its children start,
            // see the stop themselves, and the resumed segment ends with the reason.
            if let Some(reason) = self.ctx.stop_reason()
                && !matches!(out.effect, Effect::Stop | Effect::Delegate(_))
            {
                if reason.is_silent() {
                    Box::pin(self.close_and_report(Some(me.clone()))).await;
                    return;
                }
                if reason.is_visible_unstored() {
                    Box::pin(self.stop_unstored(reason)).await;
                    Box::pin(self.close_and_report(Some(me.clone()))).await;
                    return;
                }
                out = self.machine.abort(now_ms(), reason);
                continue;
            }
            match out.effect {
                Effect::Generate { .. } if self.ctx.handing_back() => {
                    self.park(me);
                    return;
                }
                Effect::Generate {
                    messages,
                    with_tools,
                    retry_count,
                    retry_after,
                } => {
                    self.ctx.enter();
                    let tools = if with_tools {
                        self.tools.clone()
                    } else {
                        Arc::new(Vec::new())
                    };
                    // Inside the run's span: the task's span is its child.
                    self.span.in_scope(|| {
                        tasks::spawn_generation(
                            self.ctx.clone(),
                            me.clone(),
                            &self.machine,
                            messages,
                            tools,
                            retry_count,
                            retry_after,
                        );
                    });
                    return;
                }
                Effect::CallTools(calls) => {
                    self.ctx.enter();
                    self.span.in_scope(|| {
                        tasks::spawn_tool_calls(
                            self.ctx.clone(),
                            me.clone(),
                            &self.machine,
                            self.index.clone(),
                            self.skills.clone(),
                            calls,
                        );
                    });
                    return;
                }
                Effect::Delegate(d) => {
                    if d.is_done() {
                        out = Box::pin(self.resume(*d)).await;
                        continue;
                    }
                    if self.ctx.settings.stop_at_delegation
                        && matches!(self.parent, Some(Parent::Job(_)))
                    {
                        // Its children run elsewhere (`cluster::delegate`): the coordinator
                        // ends here, at its stored `stoppedByDelegate` checkpoint.
                        Box::pin(self.close_and_report(Some(me.clone()))).await;
                        return;
                    }
                    let mut children = Box::new(Children::new(*d));
                    Box::pin(children.start_more(
                        &self.ctx,
                        me,
                        self.machine.setting(),
                        &self.span,
                    ))
                    .await;
                    self.delegation = Some(children);
                    return;
                }
                Effect::Stop => {
                    Box::pin(self.close_and_report(Some(me.clone()))).await;
                    return;
                }
            }
        }
    }

    /// End the run with `failure` from outside the loop. A failure whose stop is shown
    /// unstored (storage) never tries to store it: the last durable step is where
    /// `--continue-job` goes on from.
    async fn end_with(&mut self, failure: RunFailure, me: &ActorRef<Self>) {
        if failure.is_silent() {
            // Handed back: nothing more of this run is shown or stored here.
            Box::pin(self.close_and_report(Some(me.clone()))).await;
        } else if failure.is_visible_unstored() {
            Box::pin(self.stop_unstored(failure)).await;
            Box::pin(self.close_and_report(Some(me.clone()))).await;
        } else {
            let out = self.machine.abort(now_ms(), failure);
            self.drive(out, me).await;
        }
    }

    async fn after_child(&mut self, me: &ActorRef<Self>) {
        let Some(mut children) = self.delegation.take() else {
            return;
        };
        if self.ctx.failure.get().is_some_and(RunFailure::is_silent) {
            // Handed back: the delegation goes on with the job's next holder (the children
            // that finished are stored); this run writes nothing more.
            Box::pin(self.close_and_report(Some(me.clone()))).await;
            return;
        }
        if children.delegation.is_done() {
            let out = Box::pin(self.resume(children.delegation)).await;
            self.drive(out, me).await;
        } else {
            Box::pin(children.start_more(&self.ctx, me, self.machine.setting(), &self.span)).await;
            self.delegation = Some(children);
        }
    }

    /// All children reported: continue as a new segment with their results.
    async fn resume(&mut self, d: Delegation) -> Output {
        let resumed = d.into_resumed();
        let answer = resumed.announced_answer();
        let now = now_ms();
        let out = self.machine.resume_after_delegation(now, new_id(), resumed);
        self.announce(now, None, answer).await;
        out
    }

    /// Wait at a step boundary while the job is handed back: once it stops (or is cancelled),
    /// [`Unpark`] ends the run with the job's stop reason.
    fn park(&self, me: &ActorRef<Self>) {
        let (cancel, me) = (self.ctx.cancel.clone(), me.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            let _ = me.tell(Unpark).await;
        });
    }
}

#[cfg(test)]
mod task_size;
