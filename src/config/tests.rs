//! Loading a realistic Perstack configuration, the defaults, and every error message.

use std::path::Path;

use pretty_assertions::assert_eq;

use super::*;
use crate::schema::{ReasoningLevel, Skill};

mod runnable;

const FILE: &str = "/p/perstack.toml";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/perstack-e2e.toml")
}

fn ok(text: &str) -> PerstackConfig {
    match parse(text, Path::new(FILE)) {
        Ok(config) => config,
        Err(e) => panic!("expected {text:?} to load, got: {e}"),
    }
}

/// The error message for `text`, after checking that it is a usage error.
fn err(text: &str) -> String {
    match parse(text, Path::new(FILE)) {
        Ok(_) => panic!("expected {text:?} to be rejected"),
        Err(e) => {
            assert_eq!(e.exit_code(), 2);
            e.to_string()
        }
    }
}

/// The error `check_runnable(expert)` gives for `text`, after checking that `text` loads and
/// that the error is a usage error.
fn unrunnable(text: &str, expert: &str) -> ConfigError {
    match ok(text).check_runnable(expert) {
        Ok(()) => panic!("expected expert {expert:?} of {text:?} to be unrunnable"),
        Err(e) => {
            assert_eq!(e.exit_code(), 2);
            e
        }
    }
}

/// `result` is `Ok`, or the panic shows the error.
#[track_caller]
fn assert_ok(result: Result<(), ConfigError>) {
    if let Err(e) = result {
        panic!("expected Ok, got: {e}");
    }
}

#[track_caller]
fn assert_contains(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            haystack.contains(needle),
            "expected {needle:?} in:\n{haystack}"
        );
    }
}

/// A minimal valid expert `a`, for tests that put their subject elsewhere.
const EXPERT_A: &str = "[experts.\"a\"]\ninstruction = \"Do it.\"\n";

#[test]
fn a_perstack_e2e_config_loads_unchanged() {
    let config = load(&fixture()).unwrap();
    assert_eq!(config.path, fixture());
    assert_eq!(config.model.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!(config.runtime, Some(Runtime::Local));
    assert_eq!(
        config.reasoning_budget,
        Some(ReasoningBudget::Level(ReasoningLevel::Medium))
    );
    assert_eq!(
        (config.max_steps, config.max_retries, config.timeout),
        (Some(50), Some(3), Some(120_000))
    );
    assert_eq!(
        config.env_path, None,
        "envPath written after [provider] is ignored, as in Perstack"
    );
    let provider = config.provider.as_ref().unwrap();
    assert_eq!(provider.provider_name, ProviderName::Anthropic);
    assert!(provider.setting.is_empty());

    let keys: Vec<&str> = config.experts.keys().map(String::as_str).collect();
    assert_eq!(keys, ["@e2e/researcher", "e2e-coordinator", "e2e-writer"]);

    let coordinator = &config.experts["e2e-coordinator"];
    assert_eq!(coordinator.key, "e2e-coordinator");
    assert_eq!(coordinator.name, "e2e-coordinator");
    assert_eq!(coordinator.delegates, ["@e2e/researcher", "e2e-writer"]);
    assert_eq!(coordinator.tags, ["e2e", "coordinator"]);
    assert!(coordinator.instruction.starts_with("1. Delegate"));
    let Skill::McpStdioSkill(base) = &coordinator.skills["@perstack/base"] else {
        panic!()
    };
    assert_eq!(base.pick, ["attemptCompletion", "think", "todo"]);
    assert_eq!(base.package_name.as_deref(), Some("@perstack/base"));
    let Skill::InteractiveSkill(user_input) = &coordinator.skills["user-input"] else {
        panic!()
    };
    assert_eq!(
        user_input.rule.as_deref(),
        Some("Ask only when the answer is ambiguous.")
    );
    let ask = &user_input.tools["askUser"];
    assert_eq!(ask.name, "askUser");
    let schema: serde_json::Value = serde_json::from_str(&ask.input_json_schema).unwrap();
    assert_eq!(schema["required"][0], "question");

    let researcher = &config.experts["@e2e/researcher"];
    assert_eq!(researcher.version, "0.2.1-beta.1");
    let Skill::McpStdioSkill(exa) = &researcher.skills["exa"] else {
        panic!()
    };
    assert_eq!(exa.args, ["-y", "exa-mcp-server"]);
    assert_eq!(exa.package_name, None);
    assert_eq!(exa.required_env, ["EXA_API_KEY"]);
    assert!(exa.lazy_init);
    assert_eq!(
        exa.allowed_domains.as_deref(),
        Some(&["api.exa.ai".to_owned(), "*.exa.ai".to_owned()][..])
    );
    let Skill::McpSseSkill(docs) = &researcher.skills["remote-docs"] else {
        panic!()
    };
    assert_eq!(docs.endpoint, "https://mcp.example.com/sse");
    assert_eq!(docs.pick, ["search_docs"]);
}

#[test]
fn perstack_defaults_are_applied() {
    let config = ok(EXPERT_A);
    assert_eq!(config.provider, None);
    assert_eq!(config.reasoning_budget, None);
    let a = &config.experts["a"];
    assert_eq!(a.name, "a");
    assert_eq!(a.version, "1.0.0");
    assert!(a.delegates.is_empty() && a.tags.is_empty());
    assert_eq!(a.skills, validate::default_skills());
    let Skill::McpStdioSkill(base) = &a.skills["@perstack/base"] else {
        panic!()
    };
    assert_eq!(
        (base.command.as_str(), base.package_name.as_deref()),
        ("npx", Some("@perstack/base"))
    );
    assert!(
        !base.lazy_init
            && base.args.is_empty()
            && base.pick.is_empty()
            && base.required_env.is_empty()
    );

    let config = ok(&format!(
        "{EXPERT_A}[experts.\"a\".skills.\"@perstack/base\"]\ntype = \"mcpStdioSkill\"\ncommand = \"npx\"\npackageName = \"@perstack/base\"\n"
    ));
    let Skill::McpStdioSkill(base) = &config.experts["a"].skills["@perstack/base"] else {
        panic!()
    };
    assert!(base.omit.is_empty() && !base.lazy_init);
    assert!(ok("").experts.is_empty());
}

#[test]
fn reasoning_budget_takes_a_level_or_a_token_count() {
    assert_eq!(
        ok("reasoningBudget = \"none\"").reasoning_budget,
        Some(ReasoningBudget::Level(ReasoningLevel::None))
    );
    assert_eq!(
        ok("reasoningBudget = 4096").reasoning_budget,
        Some(ReasoningBudget::Tokens(4096))
    );
    assert_eq!(
        ok("reasoningBudget = 0").reasoning_budget,
        Some(ReasoningBudget::Tokens(0))
    );
    assert_contains(
        &err("\nreasoningBudget = \"hihg\""),
        &[
            "Invalid value for `reasoningBudget` in /p/perstack.toml:2:19",
            "not \"hihg\". Did you mean \"high\"?",
        ],
    );
    assert_contains(
        &err("reasoningBudget = -1"),
        &["non-negative integer token count, not -1."],
    );
    assert_contains(&err("reasoningBudget = \"4096\""), &["not \"4096\""]);
}

#[test]
fn scripted_provider_scripts_resolve_next_to_the_config() {
    let config = ok(
        "[provider]\nproviderName = \"scripted\"\nsetting = { script = \"scripts/run.jsonl\" }\n",
    );
    let provider = config.provider.as_ref().unwrap();
    assert_eq!(provider.provider_name, ProviderName::Scripted);
    assert_eq!(provider.setting_str("script"), Some("scripts/run.jsonl"));
    assert_eq!(
        config.resolve_relative("scripts/run.jsonl"),
        Path::new("/p/scripts/run.jsonl")
    );
    assert_eq!(config.resolve_relative("/abs/x"), Path::new("/abs/x"));
    let relative = parse("", Path::new("perstack.toml")).unwrap();
    assert_eq!(relative.resolve_relative("x"), Path::new("./x"));
}

#[test]
fn provider_settings_are_checked_per_provider() {
    let config = ok(
        "[provider]\nproviderName = \"azure-openai\"\n[provider.setting]\nresourceName = \"r\"\n\
         useDeploymentBasedUrls = true\nbaseUrl = \"https://x.openai.azure.com\"\n\
         [provider.setting.headers]\nX-Team = \"t\"\n",
    );
    let setting = &config.provider.unwrap().setting;
    assert_eq!(setting["useDeploymentBasedUrls"], true);
    assert_eq!(setting["headers"]["X-Team"], "t");
    ok(
        "[provider]\nproviderName = \"ollama\"\nsetting = { baseUrl = \"http://localhost:11434\" }\n",
    );

    assert_contains(
        &err(
            "[provider]\nproviderName = \"anthropic\"\n[provider.setting]\nbaseURL = \"https://x\"\n",
        ),
        &[
            "Unknown key `provider.setting.baseURL` in /p/perstack.toml:4:11",
            "did you mean `baseUrl`?",
        ],
    );
    assert_contains(
        &err("[provider]\nproviderName = \"anthropic\"\nsetting = { baseUrl = \"http://x\" }\n"),
        &[
            "`provider.setting.baseUrl` in /p/perstack.toml:3:",
            "URL must use HTTPS",
        ],
    );
    assert_contains(
        &err("[provider]\nproviderName = \"openai\"\n[provider.setting.headers]\nX = 1\n"),
        &[
            "`provider.setting.headers.\"X\"` in /p/perstack.toml:4:5",
            "header values must be strings",
        ],
    );
    assert_contains(
        &err("[provider]\nproviderName = \"amazon-bedrock\"\nsetting = { region = 1 }\n"),
        &["region must be a string, not integer."],
    );
    assert_contains(
        &err("[provider]\nproviderName = \"opnai\"\n"),
        &[
            "Invalid value for `provider.providerName` in /p/perstack.toml:2:16",
            "unknown provider \"opnai\"; valid names are anthropic, google, openai",
            "did you mean \"openai\"?",
        ],
    );
    assert_contains(
        &err("\n[provider]\n"),
        &["Missing required key `provider.providerName` in /p/perstack.toml:2:1"],
    );
}

#[test]
fn unknown_keys_are_rejected_with_position_and_suggestion() {
    assert_contains(
        &err("model = \"m\"\nmaxStep = 3\n"),
        &["Unknown key `maxStep` in /p/perstack.toml:2:1; did you mean `maxSteps`?"],
    );
    assert_contains(&err("max_retries = 3\n"), &["did you mean `maxRetries`?"]);
    assert_contains(
        &err("[experts.\"a\"]\ninstructon = \"x\"\n"),
        &[
            "Unknown key `experts.\"a\".instructon` in /p/perstack.toml:2:1; did you mean `instruction`?",
        ],
    );
    assert_contains(
        &err(&format!(
            "{EXPERT_A}[experts.\"a\".skills.\"fs\"]\ntype = \"mcpStdioSkill\"\ncommand = \"npx\"\npackagename = \"x\"\n"
        )),
        &[
            "Unknown key `experts.\"a\".skills.\"fs\".packagename` in /p/perstack.toml:6:1; did you mean `packageName`?",
        ],
    );
    assert_contains(
        &err(&format!(
            "{EXPERT_A}[experts.\"a\".skills.\"s\"]\ntype = \"mcpSseSkill\"\nendpoint = \"https://e.com\"\ncommand = \"npx\"\n"
        )),
        &[
            "Unknown key `experts.\"a\".skills.\"s\".command` in /p/perstack.toml:6:1; expected one of `type`, `endpoint`",
        ],
    );
    assert_contains(
        &err(&format!(
            "{EXPERT_A}[experts.\"a\".skills.\"u\"]\ntype = \"interactiveSkill\"\n[experts.\"a\".skills.\"u\".tools.ask]\ninputSchema = \"{{}}\"\n"
        )),
        &[
            "Unknown key `experts.\"a\".skills.\"u\".tools.\"ask\".inputSchema` in /p/perstack.toml:6:1; did you mean `inputJsonSchema`?",
        ],
    );
    assert_contains(
        &err("[provider]\nproviderName = \"anthropic\"\nmodel = \"m\"\n"),
        &["Unknown key `provider.model` in /p/perstack.toml:3:1"],
    );
}

#[test]
fn skill_types_are_required_and_checked() {
    assert_contains(
        &err(&format!(
            "{EXPERT_A}[experts.\"a\".skills.\"x\"]\ncommand = \"npx\"\n"
        )),
        &["Missing required key `experts.\"a\".skills.\"x\".type` in /p/perstack.toml:3:1"],
    );
    assert_contains(
        &err(&format!(
            "{EXPERT_A}[experts.\"a\".skills.\"x\"]\ntype = \"mcpStdio\"\n"
        )),
        &[
            "Invalid value for `experts.\"a\".skills.\"x\".type` in /p/perstack.toml:4:8",
            "Did you mean \"mcpStdioSkill\"?",
        ],
    );
}

#[test]
fn expert_values_are_checked() {
    assert_contains(
        &err("model = \"m\"\n\n[experts.\"a\"]\ndescription = \"d\"\n"),
        &[
            "Missing required key `experts.\"a\".instruction` in /p/perstack.toml:3:1",
            "add instruction = \"\"\"...\"\"\"",
        ],
    );
    assert_contains(
        &err("[experts.\"a\"]\ninstruction = \"\"\n"),
        &[
            "Invalid value for `experts.\"a\".instruction` in /p/perstack.toml:2:15: instruction must not be empty",
        ],
    );
    let long = "x".repeat(20 * 1024 + 1);
    assert_contains(
        &err(&format!("[experts.\"a\"]\ninstruction = \"{long}\"\n")),
        &["instruction is 20481 characters long; the limit is 20480"],
    );
    ok(&format!(
        "[experts.\"a\"]\ninstruction = \"{}\"\n",
        "x".repeat(20 * 1024)
    ));
    let long = "d".repeat(2049);
    assert_contains(
        &err(&format!("{EXPERT_A}description = \"{long}\"\n")),
        &[
            "`experts.\"a\".description` in /p/perstack.toml:3:15: description is 2049 characters long; the limit is 2048",
        ],
    );
    assert_contains(
        &err("[experts.\"Coordinator\"]\ninstruction = \"x\"\n"),
        &[
            "Invalid value for `experts.\"Coordinator\"` in /p/perstack.toml:1:1",
            "is not a valid Expert name; use lowercase letters",
        ],
    );
    assert_contains(
        &err(&format!("{EXPERT_A}version = \"1.0\"\n")),
        &[
            "`experts.\"a\".version` in /p/perstack.toml:3:11",
            "not a semantic version",
        ],
    );
    assert_contains(
        &err(&format!("{EXPERT_A}tags = [\"ok\", \"Not-Ok\"]\n")),
        &[
            "`experts.\"a\".tags[1]` in /p/perstack.toml:3:15",
            "tag \"Not-Ok\" is invalid",
        ],
    );
    assert_contains(
        &err(&format!("{EXPERT_A}delegates = [\"Bad Name\"]\n")),
        &[
            "`experts.\"a\".delegates[0]` in /p/perstack.toml:3:14",
            "not a valid Expert key",
        ],
    );
    assert_contains(
        &err(&format!("{EXPERT_A}delegates = [\"b\", 3]\n")),
        &[
            "Invalid value for `experts.\"a\".delegates[1]` in /p/perstack.toml:3:19: invalid type: integer `3`, expected a string.",
        ],
    );
}

#[test]
fn top_level_numbers_and_urls_are_checked() {
    assert_contains(
        &err("maxSteps = 0\n"),
        &[
            "Invalid value for `maxSteps` in /p/perstack.toml:1:12: maxSteps must be an integer of at least 1, not 0.",
        ],
    );
    assert_contains(
        &err("\nmaxSteps = \"10\"\n"),
        &["`maxSteps` in /p/perstack.toml:2:12: invalid type: string \"10\", expected an integer."],
    );
    assert_contains(&err("maxRetries = -1\n"), &["at least 0, not -1"]);
    assert_contains(&err("maxSteps = 99999999999\n"), &["out of range"]);
    assert_eq!(ok("maxRetries = 0\ntimeout = 0\n").max_retries, Some(0));
    assert_contains(
        &err("perstackApiBaseUrl = \"http://api.example.com\"\n"),
        &["perstackApiBaseUrl must use HTTPS"],
    );
    assert_contains(
        &err("perstackBaseSkillCommand = []\n"),
        &["`perstackBaseSkillCommand` in /p/perstack.toml:1:28"],
    );
    assert_contains(
        &err("runtime = \"dokker\"\n"),
        &[
            "unknown runtime \"dokker\"; valid names are local, docker, cursor, claude-code, gemini (did you mean \"docker\"?).",
        ],
    );
    assert_contains(
        &err("experts = 3\n"),
        &["`experts` in /p/perstack.toml:1:11", "expected a table"],
    );
}

#[test]
fn stdio_skills_need_exactly_one_of_package_name_and_args() {
    // The base skill comes after the subject, so that line numbers start at the subject.
    let skill = |body: &str| {
        format!(
            "{EXPERT_A}[experts.\"a\".skills.\"broken-skill\"]\ntype = \"mcpStdioSkill\"\n{body}\
             [experts.\"a\".skills.\"@perstack/base\"]\ntype = \"mcpStdioSkill\"\ncommand = \"npx\"\n\
             packageName = \"@perstack/base\"\n"
        )
    };
    // Perstack reports these when it starts the skill: the file loads, the Expert does not run.
    let text = skill("command = \"nonexistent-command-12345\"\nargs = []\n");
    let config = ok(&text);
    assert_eq!(
        config.experts["a"].skills.keys().collect::<Vec<_>>(),
        ["@perstack/base"],
        "an unstartable skill is left out of the Expert"
    );
    assert_eq!(config.problems["a"].len(), 1);
    let e = unrunnable(&text, "a");
    assert!(
        matches!(&e, ConfigError::InvalidValue { key, .. } if key == "experts.\"a\".skills.\"broken-skill\".args")
    );
    assert_contains(
        &e.to_string(),
        &[
            "Invalid value for `experts.\"a\".skills.\"broken-skill\".args` in /p/perstack.toml:6:8",
            "Skill broken-skill has no packageName or args",
        ],
    );
    assert_contains(
        &unrunnable(&skill("command = \"npx\"\n"), "a").to_string(),
        &[
            "`experts.\"a\".skills.\"broken-skill\"` in /p/perstack.toml:3:1",
            "has no packageName or args",
        ],
    );
    let both = skill("command = \"npx\"\npackageName = \"p\"\nargs = [\"x\"]\n");
    assert_contains(
        &unrunnable(&both, "a").to_string(),
        &[
            "`experts.\"a\".skills.\"broken-skill\".args` in /p/perstack.toml:7:8",
            "Skill broken-skill has both packageName and args",
        ],
    );
    assert_contains(
        &ok(&both).check_all().unwrap_err().to_string(),
        &["Skill broken-skill has both packageName and args"],
    );
    assert_contains(
        &err(&skill("packageName = \"p\"\n")),
        &[
            "Missing required key `experts.\"a\".skills.\"broken-skill\".command` in /p/perstack.toml:3:1",
        ],
    );
    assert_contains(
        &err(&skill(
            "command = \"npx\"\npackageName = \"p\"\nallowedDomains = [\"ok.com\", \"bad..com\"]\n",
        )),
        &[
            "`experts.\"a\".skills.\"broken-skill\".allowedDomains[1]` in /p/perstack.toml:7:29",
            "Invalid domain pattern \"bad..com\"",
        ],
    );
    assert_contains(
        &err(&skill(
            "command = \"npx\"\npackageName = \"p\"\nallowedDomains = [\"*.xn--p1ai\"]\n",
        )),
        &["Invalid domain pattern \"*.xn--p1ai\" (punycode (xn--) domains are not allowed)"],
    );
}

#[test]
fn sse_and_interactive_skills_are_checked() {
    let skill = |body: &str| format!("{EXPERT_A}[experts.\"a\".skills.\"s\"]\n{body}");
    assert_contains(
        &err(&skill(
            "type = \"mcpSseSkill\"\nendpoint = \"https://192.168.1.10/sse\"\n",
        )),
        &[
            "`experts.\"a\".skills.\"s\".endpoint` in /p/perstack.toml:5:12",
            "SSE endpoint must be a public HTTPS URL",
        ],
    );
    assert_contains(
        &err(&skill("type = \"mcpSseSkill\"\n")),
        &["Missing required key `experts.\"a\".skills.\"s\".endpoint`"],
    );
    assert_contains(
        &err(&skill("type = \"interactiveSkill\"\n")),
        &["Missing required key `experts.\"a\".skills.\"s\".tools`"],
    );
    assert_contains(
        &err(&skill(
            "type = \"interactiveSkill\"\n[experts.\"a\".skills.\"s\".tools.ask]\ndescription = \"d\"\n",
        )),
        &[
            "Missing required key `experts.\"a\".skills.\"s\".tools.\"ask\".inputJsonSchema` in /p/perstack.toml:5:1",
        ],
    );
    assert_contains(
        &err(&skill(
            "type = \"interactiveSkill\"\n[experts.\"a\".skills.\"s\".tools.ask]\ninputJsonSchema = '{\"type\": \"object\",}'\n",
        )),
        &[
            "Invalid value for `experts.\"a\".skills.\"s\".tools.\"ask\".inputJsonSchema` in /p/perstack.toml:6:19",
            "inputJsonSchema is not valid JSON (trailing comma at line 1 column 19)",
        ],
    );
}

#[test]
fn delegates_must_be_experts_of_the_file() {
    let text = "[experts.\"e2e-helper\"]\ninstruction = \"h\"\n\n[experts.\"a\"]\ninstruction = \"x\"\ndelegates = [\"e2e-helper\", \"e2e-helpr\"]\n";
    let config = ok(text);
    assert_eq!(config.experts["a"].delegates, ["e2e-helper", "e2e-helpr"]);
    assert_ok(config.check_runnable("e2e-helper"));
    let e = unrunnable(text, "a");
    assert!(matches!(&e, ConfigError::MissingDelegate { delegate, .. } if delegate == "e2e-helpr"));
    assert_contains(
        &e.to_string(),
        &[
            "Delegate expert \"e2e-helpr\" not found in experts",
            "/p/perstack.toml:6:28",
            "did you mean \"e2e-helper\"?",
        ],
    );
    assert_contains(
        &unrunnable(
            &format!("{EXPERT_A}delegates = [\"nonexistent-expert\"]\n"),
            "a",
        )
        .to_string(),
        &[
            "Delegate expert \"nonexistent-expert\" not found in experts",
            "define [experts.\"nonexistent-expert\"] in this file",
        ],
    );
}

#[test]
fn syntax_errors_and_io_errors_name_the_file() {
    assert_contains(
        &err("model = \"m\"\n[experts.\"a\"\n"),
        &["TOML syntax error in /p/perstack.toml:2:"],
    );
    assert_contains(
        &err("a = 1\na = 2\n"),
        &["TOML syntax error in /p/perstack.toml:2:1"],
    );
    let missing = Path::new("/nonexistent-dir/perstack.toml");
    let e = load(missing).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert_contains(
        &e.to_string(),
        &["Could not read /nonexistent-dir/perstack.toml: "],
    );
    assert_eq!(e.exit_code(), 2);
}
