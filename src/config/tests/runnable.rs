//! Which Experts of a loaded file can run: a broken Expert fails alone (with those that
//! delegate to it), delegates are followed breadth first, and an Expert's own problems are
//! reported in a fixed order.

use pretty_assertions::assert_eq;

use super::{EXPERT_A, assert_contains, assert_ok, ok, unrunnable};
use crate::config::ConfigError;

/// Perstack's e2e shape: a broken Expert next to valid ones, reached only through delegation.
const MIXED: &str = "\
[experts.\"e2e-valid\"]
instruction = \"v\"

[experts.\"e2e-invalid-delegate\"]
instruction = \"i\"
delegates = [\"e2e-valid\", \"nonexistent-expert\"]

[experts.\"e2e-coordinator\"]
instruction = \"c\"
delegates = [\"e2e-valid\", \"e2e-invalid-delegate\"]

[experts.\"e2e-other\"]
instruction = \"o\"
delegates = [\"e2e-valid\"]
";

#[test]
fn a_file_with_a_broken_expert_loads_and_only_that_expert_and_its_delegators_fail() {
    let config = ok(MIXED);
    assert_eq!(config.experts.len(), 4);
    assert_eq!(
        config.problems.keys().collect::<Vec<_>>(),
        ["e2e-invalid-delegate"]
    );
    assert_ok(config.check_runnable("e2e-valid"));
    assert_ok(config.check_runnable("e2e-other"));
    for key in ["e2e-invalid-delegate", "e2e-coordinator"] {
        let e = config.check_runnable(key).unwrap_err();
        assert!(
            matches!(&e, ConfigError::MissingDelegate { expert, delegate, .. }
                if expert == "e2e-invalid-delegate" && delegate == "nonexistent-expert"),
            "{key}: {e}"
        );
        assert_eq!(e.location().and_then(|at| at.line), Some(6));
        assert_contains(
            &e.to_string(),
            &["listed in `experts.\"e2e-invalid-delegate\".delegates` in /p/perstack.toml:6:"],
        );
    }
    // Unknown Experts are the engine's to report.
    assert_ok(config.check_runnable("e2e-vaild"));
    assert!(matches!(
        config.check_all(),
        Err(ConfigError::MissingDelegate { .. })
    ));
    assert_ok(ok(EXPERT_A).check_all());
}

#[test]
fn check_runnable_follows_delegates_breadth_first_and_survives_cycles() {
    let base_less = "[experts.\"{k}\".skills.\"exa\"]\ntype = \"mcpStdioSkill\"\ncommand = \"npx\"\npackageName = \"exa-mcp-server\"\n";
    let text = format!(
        "[experts.\"root\"]\ninstruction = \"r\"\ndelegates = [\"left\", \"right\"]\n\
         [experts.\"left\"]\ninstruction = \"l\"\ndelegates = [\"deep\", \"root\"]\n\
         [experts.\"right\"]\ninstruction = \"r\"\ndelegates = [\"root\"]\n{}\
         [experts.\"deep\"]\ninstruction = \"d\"\ndelegates = [\"left\", \"missing\"]\n",
        base_less.replace("{k}", "right")
    );
    let config = ok(&text);
    // `deep` comes first in the file and in key order, but `right` is nearer to `root`.
    let e = config.check_runnable("root").unwrap_err();
    assert!(matches!(&e, ConfigError::MissingBaseSkill { expert, .. } if expert == "right"));
    let e = config.check_runnable("left").unwrap_err();
    assert!(matches!(&e, ConfigError::MissingDelegate { delegate, .. } if delegate == "missing"));
    // A cycle without problems ends.
    let cycle = "[experts.\"a\"]\ninstruction = \"a\"\ndelegates = [\"b\", \"a\"]\n\
                 [experts.\"b\"]\ninstruction = \"b\"\ndelegates = [\"a\"]\n";
    assert_ok(ok(cycle).check_runnable("a"));
}

#[test]
fn an_experts_own_problems_come_in_a_fixed_order() {
    // Missing delegates first, then the missing base skill, then unstartable skills.
    let text = format!(
        "{EXPERT_A}delegates = [\"x\", \"y\"]\n[experts.\"a\".skills.\"s\"]\ntype = \"mcpStdioSkill\"\ncommand = \"npx\"\n"
    );
    let config = ok(&text);
    let problems: Vec<String> = config.problems["a"].iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert_contains(&problems[0], &["Delegate expert \"x\""]);
    assert_contains(&problems[1], &["Delegate expert \"y\""]);
    assert_contains(
        &problems[2],
        &["Base skill is not defined for expert \"a\""],
    );
    assert_contains(&problems[3], &["Skill s has no packageName or args"]);
    assert_eq!(
        config.check_runnable("a").unwrap_err().to_string(),
        problems[0]
    );
}

#[test]
fn check_all_reports_the_problem_written_first() {
    // `z` comes first in the file, `b` first in key order.
    let text = "[experts.\"z\"]\ninstruction = \"z\"\ndelegates = [\"nope\"]\n\
                [experts.\"b\"]\ninstruction = \"b\"\ndelegates = [\"nada\"]\n";
    let e = ok(text).check_all().unwrap_err();
    assert!(matches!(&e, ConfigError::MissingDelegate { expert, .. } if expert == "z"));
    assert_contains(&e.to_string(), &["/p/perstack.toml:3:"]);
}

#[test]
fn a_skills_table_without_the_base_skill_makes_the_expert_unrunnable() {
    let text = format!(
        "{EXPERT_A}\n[experts.\"a\".skills.\"exa\"]\ntype = \"mcpStdioSkill\"\ncommand = \"npx\"\npackageName = \"exa-mcp-server\"\n\
         [experts.\"b\"]\ninstruction = \"b\"\n[experts.\"c\"]\ninstruction = \"c\"\ndelegates = [\"a\"]\n"
    );
    let config = ok(&text);
    assert_eq!(
        config.experts["a"].skills.keys().collect::<Vec<_>>(),
        ["exa"],
        "the skills are kept as written"
    );
    assert_ok(config.check_runnable("b"));
    for key in ["a", "c"] {
        let e = config.check_runnable(key).unwrap_err();
        assert!(matches!(e, ConfigError::MissingBaseSkill { ref expert, .. } if expert == "a"));
        assert_contains(
            &e.to_string(),
            &[
                "Base skill is not defined for expert \"a\" in /p/perstack.toml:4:",
                "[experts.\"a\".skills.\"@perstack/base\"]",
            ],
        );
    }
    assert_eq!(
        config.check_all().map_err(|e| e.to_string()),
        config.check_runnable("a").map_err(|e| e.to_string())
    );
}

#[test]
fn a_broken_base_skill_entry_is_a_skill_problem_not_a_missing_base_skill() {
    let text = format!(
        "{EXPERT_A}[experts.\"a\".skills.\"@perstack/base\"]\ntype = \"mcpStdioSkill\"\ncommand = \"npx\"\n"
    );
    let config = ok(&text);
    assert_eq!(config.problems["a"].len(), 1);
    assert!(config.experts["a"].skills.is_empty());
    assert_contains(
        &unrunnable(&text, "a").to_string(),
        &["Skill @perstack/base has no packageName or args"],
    );
}
