//! Setting up a run's tools: its SkillActors, then the [`ToolCatalog`] that turns what they
//! describe into the tool index and the tool list the model sees.
//!
//! Every MCP skill of the Expert starts at once as a SkillActor supervised by the run, and the
//! run waits for all of them to connect and describe their tools; interactive skills (never for
//! a delegated run) and delegates add their own tools. The name rules live in the catalog; this
//! file only feeds it. A tool name claimed twice, a skill that
//! fails to start or a delegate that does not exist is a configuration error: the run then
//! publishes `startRun` and stops (see `Begin`). Talks to the skill actor
//! ([`crate::actor::skill`]) and to the run's [`Machine`](crate::agent::Machine), which gets the
//! index.

use kameo::prelude::*;

use super::RunActor;
use crate::actor::skill::{Describe, SkillActor, SkillArgs, SkillKind};
use crate::agent::RunFailure;
use crate::agent::{BASE_SKILL, CatalogError, ToolCatalog};
use crate::schema::Skill;

impl RunActor {
    /// Start the skills (all at once), build the tool index and the tool list the model sees.
    pub(super) async fn set_up_tools(&mut self, me: &ActorRef<Self>) -> Result<(), RunFailure> {
        let mut catalog = ToolCatalog::new(self.expert.key.clone());
        let delegated = self.machine.checkpoint().delegated_by.is_some();
        // Spawn every MCP skill first, then wait for all of them: they connect concurrently.
        let mut started = Vec::new();
        let every_domain = expert_domains(&self.expert.skills);
        // A replay that plays tools back starts no skill: its tools are the recorded ones.
        let playback = self.ctx.replay.clone().filter(|r| r.plays_back());
        for (name, skill) in &self.expert.skills {
            if let Some(replay) = &playback {
                if !matches!(skill, Skill::InteractiveSkill(_)) {
                    let tools = replay.tools_of(&self.expert.key, name);
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
            let args = SkillArgs {
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
                    .and_then(|l| l.tools_of(&self.expert.key, name)),
                allowed_domains,
            };
            let actor = SkillActor::supervise(me, args)
                .restart_policy(kameo::supervision::RestartPolicy::Transient)
                .restart_limit(
                    crate::actor::skill::SKILL_RESTARTS,
                    crate::actor::skill::SKILL_RESTART_WINDOW,
                )
                .spawn_with_mailbox(kameo::mailbox::bounded(crate::actor::skill::SKILL_MAILBOX))
                .await;
            started.push((name.clone(), actor));
        }
        let described = futures::future::join_all(started.iter().map(|(name, actor)| async move {
            actor
                .wait_for_startup_with_result(|r| r.map_err(|e| e.to_string()))
                .await
                .map_err(|e| config_error(format!("skill \"{name}\" failed to start: {e}")))?;
            actor
                .ask(Describe)
                .await
                .map_err(|e| config_error(format!("skill \"{name}\" failed to start: {e}")))
        }))
        .await;
        let mut first_error = None;
        for ((name, actor), d) in started.into_iter().zip(described) {
            match d {
                Ok(d) => {
                    catalog.add_skill(&name, &d.tools).map_err(catalog_error)?;
                    self.skills.insert(name, actor);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        for (name, skill) in &self.expert.skills {
            let Skill::InteractiveSkill(s) = skill else {
                continue;
            };
            if delegated {
                continue; // delegated runs never get interactive tools (Perstack)
            }
            catalog.add_interactive(name, s).map_err(catalog_error)?;
        }
        for key in &self.expert.delegates {
            catalog
                .add_delegate(key, self.ctx.settings.experts.get(key))
                .map_err(catalog_error)?;
        }
        let (index, specs) = catalog.into_parts();
        let (index, specs) = self.ctx.tool_lists.share(&self.expert.key, index, specs);
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

fn catalog_error(e: CatalogError) -> RunFailure {
    config_error(e.to_string())
}

fn config_error(message: String) -> RunFailure {
    RunFailure::Configuration(message)
}
