//! `healthCheck`: status, workspace, uptime, memory and pid, in Perstack's shape:
//! `{"status":"ok","workspace":"/w","uptime":"0s","memory":{"heapUsed":"73MB","heapTotal":"102MB"},"pid":1}`.
//!
//! A Rust process has no JavaScript heap, so on Linux `heapUsed` is the process's resident
//! anonymous memory (`RssAnon`, heap and stacks) and `heapTotal` its whole resident set
//! (`VmRSS`), both from `/proc/self/status`, rounded to whole MB like Perstack. Elsewhere, or if
//! that file cannot be read, both are `"unknown"`. The uptime counts from the creation of this
//! skill instance (Perstack counts from the loading of its base module).

use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::Serialize;

use super::BaseSkill;
use super::result::json_result;

#[derive(Serialize)]
struct Health {
    status: &'static str,
    workspace: String,
    uptime: String,
    memory: Memory,
    pid: u32,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct Memory {
    heap_used: String,
    heap_total: String,
}

#[tool_router(router = health_router, vis = "pub(super)")]
impl BaseSkill {
    #[tool(
        name = "healthCheck",
        description = "Report the runtime's health: status, workspace directory, uptime, memory \
            use and process id. Reads and changes nothing; useful to check the runtime responds."
    )]
    async fn health_check(&self) -> CallToolResult {
        json_result(&Health {
            status: "ok",
            workspace: self.workspace.display().to_string(),
            uptime: format!("{}s", self.started.elapsed().as_secs()),
            memory: memory_usage(),
            pid: std::process::id(),
        })
    }
}

fn memory_usage() -> Memory {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    memory_from_status(&status)
}

/// Reads `RssAnon` and `VmRSS` (in kB) out of a `/proc/<pid>/status` text.
fn memory_from_status(status: &str) -> Memory {
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let mb = |kb: Option<u64>| match kb {
        // Math.round(bytes / 1024 / 1024), from kB.
        Some(kb) => format!("{}MB", (kb + 512) / 1024),
        None => "unknown".to_owned(),
    };
    Memory {
        heap_used: mb(field("RssAnon")),
        heap_total: mb(field("VmRSS")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_comes_from_proc_status_rounded_to_megabytes() {
        let status = "Name:\tperstack\nVmRSS:\t   10752 kB\nRssAnon:\t    5000 kB\n";
        assert_eq!(
            memory_from_status(status),
            Memory {
                heap_used: "5MB".into(),
                heap_total: "11MB".into()
            }
        );
        assert_eq!(memory_from_status("").heap_used, "unknown");
    }
}
