//! perstack.toml: discovery, parsing, validation, env files.
