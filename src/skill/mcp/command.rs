//! The command line of a stdio MCP server, by Perstack's `getCommandArgs` rules.
//!
//! Exactly one of `packageName` and a non-empty `args` must be given. The effective arguments
//! are `args`, or `[packageName]`; when the command is `npx`, `-y` is put first unless it is
//! already among them (so npx never stops to ask whether to install the package).

use crate::schema::McpStdioSkill;
use crate::skill::SkillError;

/// The program and arguments that start `skill`'s server, as `skillStarting` reports them.
///
/// # Errors
///
/// [`SkillError::Spawn`] (kind `InvalidInput`) when the skill has neither `packageName` nor
/// `args` ("Skill X has no packageName or args") or both ("Skill X has both packageName and
/// args").
pub(crate) fn command_args(skill: &McpStdioSkill) -> Result<(String, Vec<String>), SkillError> {
    let package = skill.package_name.as_deref().filter(|p| !p.is_empty());
    let mut args = match (package, skill.args.is_empty()) {
        (Some(package), true) => vec![package.to_owned()],
        (None, false) => skill.args.clone(),
        (None, true) => {
            return Err(invalid(
                &skill.name,
                format!("Skill {} has no packageName or args", skill.name),
            ));
        }
        (Some(_), false) => {
            return Err(invalid(
                &skill.name,
                format!("Skill {} has both packageName and args", skill.name),
            ));
        }
    };
    if skill.command == "npx" && !args.iter().any(|a| a == "-y") {
        args.insert(0, "-y".to_owned());
    }
    Ok((skill.command.clone(), args))
}

fn invalid(skill: &str, message: String) -> SkillError {
    SkillError::Spawn {
        skill: skill.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skill(command: &str, package: Option<&str>, args: &[&str]) -> McpStdioSkill {
        McpStdioSkill {
            name: "s".into(),
            description: None,
            rule: None,
            pick: vec![],
            omit: vec![],
            command: command.into(),
            package_name: package.map(str::to_owned),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            required_env: vec![],
            lazy_init: false,
            allowed_domains: None,
        }
    }

    #[test]
    fn package_name_becomes_the_argument_and_npx_gets_dash_y() {
        let (cmd, args) = command_args(&skill("npx", Some("@perstack/base"), &[])).unwrap();
        assert_eq!(cmd, "npx");
        assert_eq!(args, ["-y", "@perstack/base"]);
    }

    #[test]
    fn dash_y_is_not_doubled_and_other_commands_are_left_alone() {
        let (_, args) = command_args(&skill("npx", None, &["pkg", "-y"])).unwrap();
        assert_eq!(args, ["pkg", "-y"]);
        let (cmd, args) = command_args(&skill("uvx", None, &["mcp-server-git"])).unwrap();
        assert_eq!(
            (cmd.as_str(), args),
            ("uvx", vec!["mcp-server-git".to_owned()])
        );
    }

    #[test]
    fn exactly_one_of_package_name_and_args() {
        let none = command_args(&skill("npx", None, &[])).unwrap_err();
        assert!(
            none.to_string()
                .contains("Skill s has no packageName or args"),
            "{none}"
        );
        let both = command_args(&skill("npx", Some("p"), &["q"])).unwrap_err();
        assert!(both.to_string().contains("Skill s has both"), "{both}");
    }
}
