//! Known models and their context windows (Perstack's `knownModels` table).

/// The context window of a known model id.
pub(crate) fn context_window(model: &str) -> Option<u64> {
    const ANTHROPIC: &[&str] = &[
        "claude-opus-4-5",
        "claude-opus-4-1",
        "claude-opus-4-20250514",
        "claude-sonnet-4-5",
        "claude-sonnet-4-20250514",
        "claude-3-7-sonnet-20250219",
        "claude-haiku-4-5",
        "claude-3-5-haiku-latest",
    ];
    const GOOGLE: &[&str] = &[
        "gemini-3-pro-preview",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
    ];
    if ANTHROPIC.contains(&model) {
        Some(200_000)
    } else if GOOGLE.contains(&model) {
        Some(1_048_576)
    } else {
        match model {
            "gpt-5" | "gpt-5-mini" | "gpt-5-nano" => Some(400_000),
            "gpt-5-chat-latest" => Some(128_000),
            "o4-mini" | "o3" | "o3-mini" => Some(200_000),
            "gpt-4.1" => Some(1_047_576),
            "deepseek-chat" | "deepseek-reasoner" => Some(128_000),
            _ => None,
        }
    }
}
