//! `getFileInfo`: Perstack's description of a file or directory.
//!
//! `{exists, path, absolutePath, name, directory, extension, type, mimeType, size,
//! sizeFormatted, created, modified, accessed, permissions{readable, writable, executable}}`,
//! for the resolved path (an in-workspace symlink is described by its target, like `stat`).
//! `extension` and `mimeType` are `null` for a directory; times are ISO strings like
//! JavaScript's `toISOString` (`created` falls back to `modified` where the file system has
//! no birth time).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::SystemTime;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::Serialize;
use serde_json::json;

use super::BaseSkill;
use super::files::PathArgs;
use super::media::mime_type;
use super::path::{ToolError, Workspace, io_error, quote, run_blocking, symlink_refused};
use super::result::input_schema;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileInfo {
    exists: bool,
    path: String,
    absolute_path: String,
    name: String,
    directory: String,
    extension: Option<String>,
    #[serde(rename = "type")]
    kind: &'static str,
    mime_type: Option<&'static str>,
    size: u64,
    size_formatted: String,
    created: String,
    modified: String,
    accessed: String,
    permissions: Permissions,
}

#[derive(Serialize)]
struct Permissions {
    readable: bool,
    writable: bool,
    executable: bool,
}

#[tool_router(router = info_router, vis = "pub(super)")]
impl BaseSkill {
    #[tool(
        name = "getFileInfo",
        description = "Describe a file or directory: name, directory, extension, type, MIME \
            type, size, timestamps and permissions.",
        input_schema = input_schema(json!({
            "type": "object",
            "properties": {"path": {"type": "string", "description": "Path of the file or directory"}},
            "required": ["path"]
        }))
    )]
    async fn get_file_info(&self, Parameters(args): Parameters<PathArgs>) -> CallToolResult {
        let ws = self.ws();
        run_blocking(move || file_info(&ws, &args.path)).await
    }
}

fn file_info(ws: &Workspace, given: &str) -> Result<FileInfo, ToolError> {
    let shown = quote(given);
    let resolved = ws.resolve(given)?;
    let missing = || ToolError::new(format!("File or directory {shown} does not exist"));
    let target = resolved.existing_target().ok_or_else(missing)?;
    let meta = ws.lstat(target).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => missing(),
        _ => io_error(&shown, &e),
    })?;
    if meta.file_type().is_symlink() {
        return Err(io_error(&shown, &symlink_refused()));
    }
    let is_dir = meta.is_dir();
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mode = meta.permissions().mode();
    Ok(FileInfo {
        exists: true,
        path: target.display().to_string(),
        absolute_path: target.display().to_string(),
        directory: target
            .parent()
            .unwrap_or(Path::new("/"))
            .display()
            .to_string(),
        extension: (!is_dir).then(|| js_extname(&name).to_owned()),
        kind: if is_dir { "directory" } else { "file" },
        mime_type: (!is_dir).then(|| mime_type(target).unwrap_or("application/octet-stream")),
        size: meta.len(),
        size_formatted: format_size(meta.len()),
        created: iso(meta.created().or_else(|_| meta.modified())),
        modified: iso(meta.modified()),
        accessed: iso(meta.accessed()),
        permissions: Permissions {
            readable: mode & 0o400 != 0,
            writable: mode & 0o200 != 0,
            executable: mode & 0o100 != 0,
        },
        name,
    })
}

/// Node's `path.extname`: from the last `.` of the name, unless that is its first character.
fn js_extname(name: &str) -> &str {
    match name.rfind('.') {
        Some(i) if i > 0 => &name[i..],
        _ => "",
    }
}

/// `0 B`, `512.00 B`, `1.50 KB`, ... (Perstack's `formatFileSize`).
fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    if bytes == 0 {
        return "0 B".to_owned();
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// A file time as JavaScript's `toISOString` prints it (the epoch if unknown).
pub(super) fn iso(time: io::Result<SystemTime>) -> String {
    let ms = time
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    crate::agent::iso8601(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sizes_print_like_javascript() {
        assert_eq!(js_extname("a.tar.gz"), ".gz");
        assert_eq!(js_extname(".bashrc"), "");
        assert_eq!(js_extname("README"), "");
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(512), "512.00 B");
        assert_eq!(format_size(1536), "1.50 KB");
        assert_eq!(format_size(16 * 1024 * 1024), "16.00 MB");
    }
}
