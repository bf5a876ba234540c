//! The fan-out tree the engine's own tests run: a coordinator delegating to two children in one
//! turn, every Expert with the base skill's `attemptCompletion` only.

pub(super) const FANOUT: &str = r#"
[experts."coordinator"]
instruction = "Delegate."
delegates = ["child-a", "child-b"]
[experts."coordinator".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion"]

[experts."child-a"]
description = "a"
instruction = "a"
[experts."child-a".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion"]

[experts."child-b"]
description = "b"
instruction = "b"
[experts."child-b".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
pick = ["attemptCompletion"]
"#;
