//! `perstack publish` and its companions (issue 12) against the fake registry: the dry run's
//! exact payload, tag, status and unpublish requests (the API key sent, never printed), and
//! skills that do not run `npx` or `uvx` refused before anything is sent.

use serde_json::Value;

use super::fake::definition;
use super::{KEY, World};

const PUBLISHABLE: &str = r#"[experts."@org/writer"]
version = "1.1.0"
description = "Writes."
instruction = "Write."
delegates = ["@org/helper"]
[experts."@org/writer".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
lazyInit = true
[experts."@org/writer".skills."search"]
type = "mcpStdioSkill"
command = "uvx"
args = ["mcp-search"]
allowedDomains = ["api.example.com"]
requiredEnv = ["SEARCH_KEY"]
"#;

#[test]
fn issue_12_publish_dry_run_prints_the_exact_payload() {
    let w = World::new(PUBLISHABLE, "");
    let out = w
        .cmd(&["publish", "@org/writer", "--dry-run"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = r#"Dry run - would publish:
{
  "name": "@org/writer",
  "version": "1.1.0",
  "minRuntimeVersion": "v1.0",
  "description": "Writes.",
  "instruction": "Write.",
  "skills": {
    "@perstack/base": {
      "type": "mcpStdioSkill",
      "description": "@perstack/base skill",
      "command": "npx",
      "packageName": "@perstack/base"
    },
    "search": {
      "type": "mcpStdioSkill",
      "description": "search skill",
      "command": "uvx",
      "packageName": "search",
      "requiredEnv": [
        "SEARCH_KEY"
      ]
    }
  },
  "delegates": [
    "@org/helper"
  ],
  "tags": [
    "latest"
  ]
}
"#;
    assert_eq!(stdout, expected);
    assert!(w.registry.seen().is_empty(), "a dry run sent a request");
}

#[test]
fn issue_12_publish_tag_status_and_unpublish_talk_to_the_registry_with_the_key_never_printed() {
    let w = World::new(PUBLISHABLE, "");
    w.registry
        .add(definition("@org/helper", "1.0.0", "Help.", &[]));
    let ok = |args: &[&str]| {
        let out = w.cmd(args).output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(
            !stdout.contains(KEY) && !stderr.contains(KEY),
            "the key was printed"
        );
        stdout
    };
    assert!(ok(&["publish", "@org/writer"]).contains("Published @org/writer@1.1.0"));
    let sent = w.registry.seen().last().unwrap().clone();
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", "/api/registry/v1/experts/")
    );
    let body: Value = serde_json::from_str(&sent.body).unwrap();
    assert!(body["skills"]["search"].get("args").is_none());
    assert_eq!(
        w.registry.get("@org/writer", "1.1.0").unwrap()["instruction"],
        "Write."
    );

    let tagged = ok(&["tag", "@org/writer@1.1.0", "stable", "beta"]);
    assert!(
        tagged.contains("Updated @org/writer@1.1.0") && tagged.contains("beta, latest, stable"),
        "{tagged}"
    );
    let status = ok(&["status", "@org/writer@1.1.0", "deprecated"]);
    assert!(status.contains("Status: deprecated"), "{status}");
    assert_eq!(
        w.registry.get("@org/writer", "1.1.0").unwrap()["status"],
        "deprecated"
    );
    // Resolving a deprecated version warns.
    let run = w.run(&["run", "@org/writer@1.1.0", "q"]);
    assert!(
        run.stderr.contains("@org/writer@1.1.0 is deprecated"),
        "{}",
        run.stderr
    );

    let refused = w.cmd(&["unpublish", "@org/writer@1.1.0"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert!(
        ok(&["unpublish", "@org/writer@1.1.0", "--force"])
            .contains("Unpublished @org/writer@1.1.0")
    );
    assert!(w.registry.get("@org/writer", "1.1.0").is_none());

    for (args, needle) in [
        (vec!["tag", "@org/writer@1.1.0", "Bad"], "invalid tag"),
        (vec!["tag", "@org/writer@1.1.0", "latest"], "latest"),
        (
            vec![
                "tag",
                "@org/writer@1.1.0",
                "a",
                "b",
                "c",
                "d",
                "e",
                "f",
                "g",
                "h",
                "i",
            ],
            "at most 8",
        ),
        (vec!["tag", "@org/writer", "x"], "must include version"),
        (
            vec!["status", "@org/writer@1.1.0", "gone"],
            "Invalid status",
        ),
    ] {
        let out = w.cmd(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}"
        );
    }
}

#[test]
fn issue_12_publish_refuses_skills_that_do_not_run_npx_or_uvx() {
    let w = World::new(
        r#"[experts."writer"]
instruction = "Write."
[experts."writer".skills."@perstack/base"]
type = "mcpStdioSkill"
command = "npx"
packageName = "@perstack/base"
[experts."writer".skills."local"]
type = "mcpStdioSkill"
command = "node"
args = ["server.js"]
"#,
        "",
    );
    let out = w.cmd(&["publish", "writer", "--dry-run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Invalid command \"node\" for skill \"local\""),
        "{stderr}"
    );
}
