//! The tool index of a run: which skill, delegate or interactive tool owns each tool name.
//!
//! Pure data, built by the run actor from its skills and delegates. The machine classifies
//! the model's calls with it (mcp first, then delegates, then interactive, as Perstack sorts).

use std::collections::HashMap;

use crate::schema::ExpertRef;

pub(crate) use crate::schema::BASE_SKILL;
/// The completion tool.
pub(crate) const ATTEMPT_COMPLETION: &str = "attemptCompletion";

/// Who answers a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToolOwner {
    /// An MCP skill (the base skill included), by skill name.
    Skill(String),
    /// A delegate Expert.
    Delegate(ExpertRef),
    /// An interactive tool of the named skill: the caller answers it.
    Interactive(String),
}

/// Tool name -> owner, for one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ToolIndex {
    owners: HashMap<String, ToolOwner>,
}

impl ToolIndex {
    /// An empty index.
    pub(crate) fn new() -> Self {
        ToolIndex::default()
    }

    /// Register a tool; returns the previous owner when the name was already taken.
    pub(crate) fn insert(
        &mut self,
        tool: impl Into<String>,
        owner: ToolOwner,
    ) -> Option<ToolOwner> {
        self.owners.insert(tool.into(), owner)
    }

    /// The owner of a tool name.
    pub(crate) fn owner(&self, tool: &str) -> Option<&ToolOwner> {
        self.owners.get(tool)
    }

    /// The `skillName` Perstack writes into a `ToolCall` for this tool.
    pub(crate) fn skill_name(&self, tool: &str) -> Option<&str> {
        self.owner(tool).map(|o| match o {
            ToolOwner::Skill(s) | ToolOwner::Interactive(s) => s.as_str(),
            ToolOwner::Delegate(e) => e.name.as_str(),
        })
    }
}

/// The delegate tool name for an Expert name: its last `/` segment (`@org/x` -> `x`).
pub(crate) fn delegate_tool_name(expert_name: &str) -> &str {
    expert_name.rsplit('/').next().unwrap_or(expert_name)
}
