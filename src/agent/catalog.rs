//! The tool catalog of a run: which names the model is offered and who answers each.
//!
//! Plain data, built by the run actor once its skills have described their tools. It owns
//! every rule about tool names, in one place:
//!
//! - **`pick`/`omit`** ([`select`]): `omit` first, then `pick` when it is non-empty (Perstack's
//!   order); names in `pick` the skill does not have are ignored. Applied once, to what a skill
//!   reports (a live server's list or `perstack.lock`'s); the connections themselves list every
//!   tool.
//! - **claims**: each name has one owner, in the order skills (by name), interactive tools,
//!   delegates; a second claim is a [`CatalogError::Collision`] naming both owners.
//! - **delegates**: the tool of a delegate Expert ([`delegate_spec`]), named after the last
//!   `/` segment of its name; a delegate key that is not an Expert is
//!   [`CatalogError::UnknownDelegate`].
//!
//! The result is the [`ToolIndex`] the machine classifies calls with (a name it does not hold
//! is unknown: an error result the model can correct) and the tool list the model sees. This
//! module never starts a skill, never awaits and never reads a file.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::json;

use super::tools::{ToolIndex, ToolOwner, delegate_tool_name};
use crate::llm::ToolSpec;
use crate::schema::{Expert, InteractiveSkill};
use crate::skill::ToolDefinition;

/// A tool-name rule an Expert's definition breaks: the run cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CatalogError {
    /// Two owners offer the same tool name.
    #[error(
        "Tool name \"{tool}\" is provided by both {first} and {second} in expert \"{expert}\"; rename one of them"
    )]
    Collision {
        /// The Expert whose tools collide.
        expert: String,
        /// The tool name.
        tool: String,
        /// The owner that claimed it first (`skill "x"`, `interactive skill "x"`, `delegate "x"`).
        first: String,
        /// The owner that claimed it again.
        second: String,
    },
    /// A delegate key that names no Expert of the configuration.
    #[error("Delegate expert \"{key}\" not found in experts")]
    UnknownDelegate {
        /// The delegate key.
        key: String,
    },
    /// An interactive tool whose `inputJsonSchema` is not JSON.
    #[error("interactive tool \"{tool}\" of skill \"{skill}\": invalid inputJsonSchema: {message}")]
    InvalidInteractiveSchema {
        /// The interactive skill.
        skill: String,
        /// The tool.
        tool: String,
        /// The JSON parser's message.
        message: String,
    },
}

/// The tools of one run being assembled: claims, the index and the specs, in claim order.
#[derive(Debug, Clone)]
pub(crate) struct ToolCatalog {
    expert: String,
    /// Tool name -> the owner's label, for collision messages.
    claimed: HashMap<String, String>,
    index: ToolIndex,
    specs: Vec<ToolSpec>,
}

impl ToolCatalog {
    /// An empty catalog for the Expert `expert` (its key, for messages).
    pub(crate) fn new(expert: impl Into<String>) -> Self {
        ToolCatalog {
            expert: expert.into(),
            claimed: HashMap::new(),
            index: ToolIndex::new(),
            specs: Vec::new(),
        }
    }

    /// Adds the tools of MCP skill `skill` (already [`select`]ed).
    ///
    /// # Errors
    ///
    /// [`CatalogError::Collision`] when a name is already claimed.
    pub(crate) fn add_skill(
        &mut self,
        skill: &str,
        tools: &[ToolDefinition],
    ) -> Result<(), CatalogError> {
        for t in tools {
            self.claim(&t.name, format!("skill \"{skill}\""))?;
            self.index
                .insert(t.name.clone(), ToolOwner::Skill(skill.to_owned()));
            self.specs.push(ToolSpec {
                name: t.name.clone(),
                description: t.description.clone(),
                input_schema: t.input_schema.clone(),
            });
        }
        Ok(())
    }

    /// Adds the tools of interactive skill `name` (the caller answers them).
    ///
    /// # Errors
    ///
    /// [`CatalogError::Collision`], or [`CatalogError::InvalidInteractiveSchema`] for an
    /// `inputJsonSchema` that is not JSON.
    pub(crate) fn add_interactive(
        &mut self,
        name: &str,
        skill: &InteractiveSkill,
    ) -> Result<(), CatalogError> {
        for (tool, t) in &skill.tools {
            self.claim(tool, format!("interactive skill \"{name}\""))?;
            let input_schema = serde_json::from_str(&t.input_json_schema).map_err(|e| {
                CatalogError::InvalidInteractiveSchema {
                    skill: name.to_owned(),
                    tool: tool.clone(),
                    message: e.to_string(),
                }
            })?;
            self.index
                .insert(tool.clone(), ToolOwner::Interactive(name.to_owned()));
            self.specs.push(ToolSpec {
                name: tool.clone(),
                description: t.description.clone(),
                input_schema,
            });
        }
        Ok(())
    }

    /// Adds the tool of delegate `key`, which resolved to `expert` (`None`: no such Expert).
    ///
    /// # Errors
    ///
    /// [`CatalogError::UnknownDelegate`] or [`CatalogError::Collision`].
    pub(crate) fn add_delegate(
        &mut self,
        key: &str,
        expert: Option<&Expert>,
    ) -> Result<(), CatalogError> {
        let Some(expert) = expert else {
            return Err(CatalogError::UnknownDelegate {
                key: key.to_owned(),
            });
        };
        let spec = delegate_spec(expert);
        self.claim(&spec.name, format!("delegate \"{key}\""))?;
        self.index
            .insert(spec.name.clone(), ToolOwner::Delegate(expert.reference()));
        self.specs.push(spec);
        Ok(())
    }

    /// The index the machine classifies calls with, and the tool list the model sees (in
    /// claim order).
    pub(crate) fn into_parts(self) -> (ToolIndex, Vec<ToolSpec>) {
        (self.index, self.specs)
    }

    fn claim(&mut self, tool: &str, owner: String) -> Result<(), CatalogError> {
        if let Some(first) = self.claimed.get(tool) {
            return Err(CatalogError::Collision {
                expert: self.expert.clone(),
                tool: tool.to_owned(),
                first: first.clone(),
                second: owner,
            });
        }
        self.claimed.insert(tool.to_owned(), owner);
        Ok(())
    }
}

/// The tool lists of an engine's runs, shared: a run whose catalog came out the same as the
/// last one of its Expert (the usual case: the same skills describe the same tools) holds that
/// one's index and specs instead of its own copy, so N live runs of an Expert keep one tool
/// list, not N (a delegate's input schema alone is about 2 KB). A catalog that differs (an MCP
/// server whose tools changed) is kept as it is and becomes the one shared from then on.
/// One entry per Expert key, so it never grows past the configuration.
#[derive(Debug, Default)]
pub(crate) struct ToolLists {
    by_expert: Mutex<HashMap<String, SharedTools>>,
}

/// A run's tool index and the tool list the model sees, shareable between runs.
pub(crate) type SharedTools = (Arc<ToolIndex>, Arc<Vec<ToolSpec>>);

impl ToolLists {
    /// The shared form of `expert`'s freshly built catalog parts: the kept ones when they are
    /// equal, else these (kept from now on).
    pub(crate) fn share(
        &self,
        expert: &str,
        index: ToolIndex,
        specs: Vec<ToolSpec>,
    ) -> SharedTools {
        let mut by_expert = self
            .by_expert
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((kept_index, kept_specs)) = by_expert.get(expert)
            && **kept_index == index
            && **kept_specs == specs
        {
            return (kept_index.clone(), kept_specs.clone());
        }
        let shared = (Arc::new(index), Arc::new(specs));
        by_expert.insert(expert.to_owned(), shared.clone());
        shared
    }
}

/// `tools` with `omit` removed, then restricted to `pick` when it is non-empty (Perstack's
/// order). Names in `pick` that are not among `tools` are ignored.
pub(crate) fn select(
    tools: &[ToolDefinition],
    pick: &[String],
    omit: &[String],
) -> Vec<ToolDefinition> {
    tools
        .iter()
        .filter(|t| is_selected(&t.name, pick, omit))
        .cloned()
        .collect()
}

/// Whether the tool `name` survives `omit`, then `pick` (the rule [`select`] applies).
pub(crate) fn is_selected(name: &str, pick: &[String], omit: &[String]) -> bool {
    !omit.iter().any(|o| o == name) && (pick.is_empty() || pick.iter().any(|p| p == name))
}

/// The tool a delegate Expert is called through: named after the last `/` segment of its
/// name, described by its description, taking one string `query`.
pub(crate) fn delegate_spec(expert: &Expert) -> ToolSpec {
    ToolSpec {
        name: delegate_tool_name(&expert.name).to_owned(),
        description: expert.description.clone(),
        input_schema: json!({"type":"object","properties":{"query":{"type":"string"}},"required":["query"]}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::InteractiveTool;
    use serde_json::Value;

    fn def(name: &str) -> ToolDefinition {
        ToolDefinition {
            skill_name: "s".into(),
            name: name.into(),
            description: None,
            input_schema: json!({"type": "object"}),
        }
    }

    #[test]
    fn runs_of_an_expert_with_the_same_tools_share_one_tool_list() {
        let lists = ToolLists::default();
        let built = || {
            let mut c = ToolCatalog::new("e");
            c.add_skill("s", &[def("a"), def("b")]).unwrap();
            c.into_parts()
        };
        let (i1, s1) = built();
        let first = lists.share("e", i1, s1);
        let (i2, s2) = built();
        let second = lists.share("e", i2, s2);
        assert!(Arc::ptr_eq(&first.0, &second.0) && Arc::ptr_eq(&first.1, &second.1));
        // A catalog that differs is kept as built, and shared from then on.
        let mut c = ToolCatalog::new("e");
        c.add_skill("s", &[def("a")]).unwrap();
        let (i3, s3) = c.into_parts();
        let third = lists.share("e", i3, s3);
        assert!(!Arc::ptr_eq(&first.1, &third.1));
        assert_eq!(third.1.len(), 1);
        let mut c = ToolCatalog::new("e");
        c.add_skill("s", &[def("a")]).unwrap();
        let (i4, s4) = c.into_parts();
        assert!(Arc::ptr_eq(&lists.share("e", i4, s4).1, &third.1));
        // Another Expert never gets these.
        let (i5, s5) = built();
        assert!(!Arc::ptr_eq(&lists.share("f", i5, s5).1, &first.1));
    }

    fn names(tools: &[ToolDefinition]) -> Vec<&str> {
        tools.iter().map(|t| t.name.as_str()).collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn expert(key: &str) -> Expert {
        let toml = format!("[experts.\"{key}\"]\ndescription = \"Helps\"\ninstruction = \"x\"\n");
        let cfg = crate::config::parse(&toml, std::path::Path::new("perstack.toml")).unwrap();
        cfg.experts[key].clone()
    }

    fn interactive(tools: &[(&str, &str)]) -> InteractiveSkill {
        InteractiveSkill {
            name: "ask".into(),
            description: None,
            rule: None,
            tools: tools
                .iter()
                .map(|(name, schema)| {
                    let tool = InteractiveTool {
                        name: (*name).into(),
                        description: Some("Ask".into()),
                        input_json_schema: (*schema).into(),
                    };
                    ((*name).to_owned(), tool)
                })
                .collect(),
        }
    }

    #[test]
    fn omit_is_applied_before_pick() {
        let all = [def("a"), def("b"), def("c")];
        assert_eq!(names(&select(&all, &[], &[])), ["a", "b", "c"]);
        assert_eq!(names(&select(&all, &[], &strings(&["b"]))), ["a", "c"]);
        assert_eq!(
            names(&select(&all, &strings(&["a", "b", "zzz"]), &[])),
            ["a", "b"]
        );
        // A name both picked and omitted is gone.
        assert_eq!(
            names(&select(&all, &strings(&["a", "b"]), &strings(&["b"]))),
            ["a"]
        );
    }

    #[test]
    fn skills_interactive_tools_and_delegates_are_indexed_in_claim_order() {
        let mut catalog = ToolCatalog::new("coord");
        catalog
            .add_skill("fs", &[def("read"), def("write")])
            .unwrap();
        catalog
            .add_interactive("ask", &interactive(&[("askUser", r#"{"type":"object"}"#)]))
            .unwrap();
        let helper = expert("@org/helper");
        catalog.add_delegate("@org/helper", Some(&helper)).unwrap();
        let (index, specs) = catalog.into_parts();
        let spec_names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(spec_names, ["read", "write", "askUser", "helper"]);
        assert_eq!(index.owner("read"), Some(&ToolOwner::Skill("fs".into())));
        assert_eq!(
            index.owner("askUser"),
            Some(&ToolOwner::Interactive("ask".into()))
        );
        assert_eq!(
            index.owner("helper"),
            Some(&ToolOwner::Delegate(helper.reference()))
        );
        assert_eq!(index.owner("nope"), None);
        assert_eq!(specs[3].description.as_deref(), Some("Helps"));
        assert_eq!(specs[3].input_schema["required"], json!(["query"]));
        assert_eq!(specs[2].input_schema, json!({"type": "object"}));
    }

    #[test]
    fn a_name_claimed_twice_names_both_owners() {
        let mut catalog = ToolCatalog::new("coord");
        catalog.add_skill("fs", &[def("helper")]).unwrap();
        let err = catalog
            .add_delegate("helper", Some(&expert("helper")))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Tool name \"helper\" is provided by both skill \"fs\" and delegate \"helper\" in \
             expert \"coord\"; rename one of them"
        );
        let err = catalog
            .add_interactive("ask", &interactive(&[("helper", "{}")]))
            .unwrap_err();
        assert!(
            matches!(&err, CatalogError::Collision { second, .. } if second == "interactive skill \"ask\""),
            "{err}"
        );
    }

    #[test]
    fn unknown_delegates_and_broken_interactive_schemas_are_errors() {
        let mut catalog = ToolCatalog::new("coord");
        assert_eq!(
            catalog.add_delegate("ghost", None).unwrap_err().to_string(),
            "Delegate expert \"ghost\" not found in experts"
        );
        let err = catalog
            .add_interactive("ask", &interactive(&[("askUser", "{not json")]))
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "interactive tool \"askUser\" of skill \"ask\": invalid inputJsonSchema:"
            ),
            "{err}"
        );
        let (_, specs) = catalog.into_parts();
        assert!(specs.iter().all(|s| s.input_schema != Value::Null));
    }
}
