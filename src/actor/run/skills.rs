//! Setting up a run's tools: its SkillActors, then the [`ToolCatalog`] that turns what they
//! describe into the tool index and the tool list the model sees.
//!
//! Every MCP skill of the Expert starts at once as a SkillActor supervised by the run, and the
//! run waits for all of them to connect and describe their tools; the in-process base skill,
//! when it needs no actor ([`InlineSkill::fits`]), connects in place instead. Interactive skills
//! (never for a delegated run) and delegates add their own tools. The name rules live in the
//! catalog; this file only feeds it. A tool name claimed twice, a skill that fails to start or
//! a delegate that does not exist is a configuration error: the run then publishes `startRun`
//! and stops (see `Begin`). Talks to the skill actor
//! ([`crate::actor::skill`]) and to the run's [`Machine`](crate::agent::Machine), which gets the
//! index.

use std::sync::Arc;

use kameo::prelude::*;

use super::RunActor;
use crate::actor::skill::{Describe, InlineSkill, SkillActor, SkillArgs, SkillKind, SkillRef};
use crate::agent::RunFailure;
use crate::agent::{BASE_SKILL, CatalogError, ToolCatalog};
use crate::schema::Skill;

impl RunActor {
    /// Start the skills (all at once), build the tool index and the tool list the model sees.
    pub(super) async fn set_up_tools(&mut self, me: &ActorRef<Self>) -> Result<(), RunFailure> {
        // A handle of its own on the Expert: the loops below change `self`.
        let expert = self.expert.clone();
        let mut catalog = ToolCatalog::new(expert.key.clone());
        let delegated = self.machine.checkpoint().delegated_by.is_some();
        // Spawn every MCP skill first, then wait for all of them: they connect concurrently.
        let mut started = Vec::new();
        let every_domain = expert_domains(&expert.skills);
        // A replay that plays tools back starts no skill: its tools are the recorded ones.
        let playback = self.ctx.replay.clone().filter(|r| r.plays_back());
        for (name, skill) in &expert.skills {
            if let Some(replay) = &playback {
                if !matches!(skill, Skill::InteractiveSkill(_)) {
                    let tools = replay.tools_of(&expert.key, name);
                    catalog.add_skill(name, &tools).map_err(catalog_error)?;
                }
                continue;
            }
            let (kind, pick, omit, own_domains) = match skill {
                Skill::McpStdioSkill(s) => (
                    skill_kind(name, s, &self.ctx.settings),
                    s.pick.clone(),
                    s.omit.clone(),
                    s.allowed_domains.clone().unwrap_or_default(),
                ),
                Skill::McpSseSkill(s) => (
                    SkillKind::Http(s.clone()),
                    s.pick.clone(),
                    s.omit.clone(),
                    Vec::new(),
                ),
                Skill::InteractiveSkill(_) => continue,
            };
            // `exec` is the Expert's general-purpose process: it gets what any of its skills
            // may reach, as everything in Perstack's container does.
            let allowed_domains = match kind {
                SkillKind::Base => every_domain.clone(),
                _ => own_domains,
            };
            let args = Box::new(SkillArgs {
                ctx: self.ctx.clone(),
                run_id: self.machine.setting().run_id.clone(),
                name: name.clone(),
                kind,
                omit,
                pick,
                locked_tools: self
                    .ctx
                    .settings
                    .lockfile
                    .as_ref()
                    .and_then(|l| l.tools_of(&expert.key, name)),
                allowed_domains,
            });
            if InlineSkill::fits(&args) {
                // Boxed: a run waits in here while `skillConnected` waits for a busy bus,
                // and this future holds the loop's state besides.
                let connecting = Box::pin(InlineSkill::connect(args));
                let skill = connecting
                    .await
                    .map(Arc::new)
                    .map_err(|e| config_error(format!("skill \"{name}\" failed to start: {e}")));
                started.push((name.clone(), Pending::Inline(skill)));
                continue;
            }
            let actor = SkillActor::supervise(me, args)
                .restart_policy(kameo::supervision::RestartPolicy::Transient)
                .restart_limit(
                    crate::actor::skill::SKILL_RESTARTS,
                    crate::actor::skill::SKILL_RESTART_WINDOW,
                )
                .spawn_with_mailbox(kameo::mailbox::bounded(crate::actor::skill::SKILL_MAILBOX))
                .await;
            started.push((name.clone(), Pending::Actor(actor)));
        }
        let described =
            futures::future::join_all(started.into_iter().map(|(name, skill)| async move {
                let actor = match skill {
                    Pending::Inline(skill) => {
                        return skill.map(|s| {
                            let tools = s.tools().clone();
                            (name, SkillRef::Inline(s), tools)
                        });
                    }
                    Pending::Actor(actor) => actor,
                };
                let failed =
                    |e: String| config_error(format!("skill \"{name}\" failed to start: {e}"));
                actor
                    .wait_for_startup_with_result(|r| r.map_err(|e| e.to_string()))
                    .await
                    .map_err(failed)?;
                let d = actor
                    .ask(Describe)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                Ok((name, SkillRef::Actor(actor), d.tools))
            }))
            .await;
        let mut first_error = None;
        for d in described {
            match d {
                Ok((name, skill, tools)) => {
                    catalog.add_skill(&name, &tools).map_err(catalog_error)?;
                    self.skills.insert(name, skill);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        for (name, skill) in &expert.skills {
            let Skill::InteractiveSkill(s) = skill else {
                continue;
            };
            if delegated {
                continue; // delegated runs never get interactive tools (Perstack)
            }
            catalog.add_interactive(name, s).map_err(catalog_error)?;
        }
        for key in &expert.delegates {
            catalog
                .add_delegate(key, self.ctx.settings.experts.get(key))
                .map_err(catalog_error)?;
        }
        let (index, specs) = catalog.into_parts();
        let (index, specs) = self.ctx.tool_lists.share(&expert.key, index, specs);
        self.machine.set_tools(index.clone());
        self.index = index;
        self.tools = specs;
        Ok(())
    }
}

/// Every `allowedDomains` entry of an Expert's skills, once each.
fn expert_domains(skills: &std::collections::BTreeMap<String, Skill>) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for skill in skills.values() {
        let domains = match skill {
            Skill::McpStdioSkill(s) => s.allowed_domains.as_deref(),
            Skill::McpSseSkill(s) => s.allowed_domains.as_deref(),
            Skill::InteractiveSkill(_) => None,
        };
        for d in domains.into_iter().flatten() {
            if !all.contains(d) {
                all.push(d.clone());
            }
        }
    }
    all
}

/// The bundled base skill unless it is pinned (`@perstack/base@x.y.z`) or replaced by
/// `perstackBaseSkillCommand`; every other stdio skill is spawned.
fn skill_kind(
    name: &str,
    skill: &crate::schema::McpStdioSkill,
    settings: &crate::actor::context::Settings,
) -> SkillKind {
    if name != BASE_SKILL {
        return SkillKind::Stdio(skill.clone());
    }
    if let Some([command, args @ ..]) = settings.base_skill_command.as_deref() {
        let mut s = skill.clone();
        s.command = command.clone();
        s.args = args.to_vec();
        s.package_name = None;
        s.lazy_init = false;
        return SkillKind::Stdio(s);
    }
    if crate::skill::base::is_pinned(skill) {
        SkillKind::Stdio(skill.clone())
    } else {
        SkillKind::Base
    }
}

/// A skill being set up: an actor starting, or the inline base skill, connected.
enum Pending {
    Actor(ActorRef<SkillActor>),
    Inline(Result<Arc<InlineSkill>, RunFailure>),
}

fn catalog_error(e: CatalogError) -> RunFailure {
    config_error(e.to_string())
}

fn config_error(message: String) -> RunFailure {
    RunFailure::Configuration(message)
}
