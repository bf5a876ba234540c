//! The directory tools and `moveFile`: `listDirectory`, `createDirectory`, `deleteDirectory`.
//!
//! Listing is non-recursive and sorted by name, and hides `perstack` at the workspace root.
//! An entry that is a symlink to somewhere inside the workspace is described by its target;
//! one pointing outside (or nowhere) is listed as `"symlink"` with the link's own size and
//! time, so nothing about the outside leaks. Deleting or moving acts on the entry itself: a
//! symlink is moved or removed, never its target, and a directory symlink is not a directory
//! to `deleteDirectory`. The workspace root can be neither deleted nor moved (Perstack's
//! `deleteDirectory` accepts it).

use std::ffi::OsStr;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::BaseSkill;
use super::files::{PathArgs, PathOnly};
use super::info::iso;
use super::path::{Dir, ToolError, Workspace, io_error, is_perstack, quote, run_blocking};
use super::result::input_schema;

#[derive(Debug, Deserialize)]
struct DeleteDirArgs {
    path: String,
    recursive: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct MoveArgs {
    source: String,
    destination: String,
}

#[derive(Serialize)]
struct Listing {
    path: String,
    items: Vec<Item>,
}

#[derive(Serialize)]
struct Item {
    name: String,
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    modified: String,
}

#[derive(Serialize)]
struct Moved {
    source: String,
    destination: String,
}

#[tool_router(router = dirs_router, vis = "pub(super)")]
impl BaseSkill {
    #[tool(
        name = "listDirectory",
        description = "List a directory (not recursively), sorted by name. Each item is \
            `{name, path, type, size, modified}` with type `file`, `directory`, or `symlink` \
            for a link that points outside the workspace.",
        input_schema = input_schema(json!({
            "type": "object",
            "properties": {"path": {"type": "string", "description": "Directory to list"}},
            "required": ["path"]
        }))
    )]
    async fn list_directory(&self, Parameters(args): Parameters<PathArgs>) -> CallToolResult {
        let ws = self.ws();
        run_blocking(move || list(&ws, &args.path)).await
    }

    #[tool(
        name = "createDirectory",
        description = "Create a directory, including missing parents. Fails if it already \
            exists. Returns `{path}`.",
        input_schema = input_schema(json!({
            "type": "object",
            "properties": {"path": {"type": "string", "description": "Directory to create"}},
            "required": ["path"]
        }))
    )]
    async fn create_directory(&self, Parameters(args): Parameters<PathArgs>) -> CallToolResult {
        let ws = self.ws();
        run_blocking(move || create(&ws, &args.path)).await
    }

    #[tool(
        name = "deleteDirectory",
        description = "Delete a directory. A non-empty directory needs `recursive: true`. The \
            workspace root cannot be deleted. Returns `{path}`.",
        input_schema = input_schema(json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Directory to delete"},
                "recursive": {
                    "type": "boolean",
                    "description": "Also delete everything inside (required when not empty)"
                }
            },
            "required": ["path"]
        }))
    )]
    async fn delete_directory(
        &self,
        Parameters(args): Parameters<DeleteDirArgs>,
    ) -> CallToolResult {
        let ws = self.ws();
        run_blocking(move || delete(&ws, &args.path, args.recursive.unwrap_or(false))).await
    }

    #[tool(
        name = "moveFile",
        description = "Move or rename a file or directory inside the workspace. The \
            destination must not exist; its parent directories are created. Returns \
            `{source, destination}`.",
        input_schema = input_schema(json!({
            "type": "object",
            "properties": {
                "source": {"type": "string", "description": "Current path"},
                "destination": {"type": "string", "description": "New path (must not exist)"}
            },
            "required": ["source", "destination"]
        }))
    )]
    async fn move_file(&self, Parameters(args): Parameters<MoveArgs>) -> CallToolResult {
        let ws = self.ws();
        run_blocking(move || move_entry(&ws, &args.source, &args.destination)).await
    }
}

fn list(ws: &Workspace, given: &str) -> Result<Listing, ToolError> {
    let shown = quote(given);
    let resolved = ws.resolve(given)?;
    let missing = || ToolError::new(format!("Directory {shown} does not exist."));
    let target = resolved.existing_target().ok_or_else(missing)?;
    let dir = ws.open_dir(target, false).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => missing(),
        io::ErrorKind::NotADirectory => ToolError::new(format!("Path {shown} is not a directory.")),
        _ => io_error(&shown, &e),
    })?;
    let entries = std::fs::read_dir(dir.handle_path()).map_err(|e| io_error(&shown, &e))?;
    let mut items = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(&shown, &e))?;
        let name = entry.file_name();
        if dir.is_root() && is_perstack(&name) {
            continue;
        }
        if let Some(item) = describe(ws, &dir, &name) {
            items.push(item);
        }
    }
    items.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Listing {
        path: dir.path().display().to_string(),
        items,
    })
}

/// One listing item; `None` for an entry that vanished or is an alias of `perstack/`.
fn describe(ws: &Workspace, dir: &Dir, name: &OsStr) -> Option<Item> {
    let own = std::fs::symlink_metadata(dir.child(name).ok()?).ok()?;
    let path = dir.path().join(name);
    let (kind, meta) = if own.file_type().is_symlink() {
        match std::fs::canonicalize(&path) {
            // Described through the checked walk, so a link swapped meanwhile shows nothing of
            // the outside.
            Ok(target) if ws.allows(&target) => match ws.lstat(&target) {
                Ok(meta) if !meta.file_type().is_symlink() => (kind_of(&meta), meta),
                _ => ("symlink", own),
            },
            Ok(target) if target.starts_with(ws.root()) => return None,
            _ => ("symlink", own),
        }
    } else {
        (kind_of(&own), own)
    };
    Some(Item {
        name: name.to_string_lossy().into_owned(),
        path: path.display().to_string(),
        kind,
        size: meta.len(),
        modified: iso(meta.modified()),
    })
}

fn kind_of(meta: &Metadata) -> &'static str {
    if meta.is_dir() { "directory" } else { "file" }
}

fn create(ws: &Workspace, given: &str) -> Result<PathOnly, ToolError> {
    let shown = quote(given);
    let resolved = ws.resolve(given)?;
    if resolved.meta.is_some() {
        return Err(ToolError::new(format!("Directory {shown} already exists")));
    }
    ws.open_dir(&resolved.entry, true)
        .map_err(|e| ToolError::new(format!("Failed to create directory {shown}: {e}")))?;
    Ok(PathOnly {
        path: resolved.entry.display().to_string(),
    })
}

fn delete(ws: &Workspace, given: &str, recursive: bool) -> Result<PathOnly, ToolError> {
    let shown = quote(given);
    let resolved = ws.resolve(given)?;
    let Some(meta) = &resolved.meta else {
        return Err(ToolError::new(format!("Directory {shown} does not exist.")));
    };
    if resolved.entry == ws.root() {
        return Err(ToolError::new(format!(
            "Access denied - the workspace root cannot be deleted: {shown}"
        )));
    }
    if meta.file_type().is_symlink() {
        return Err(ToolError::new(format!(
            "Path {shown} is a symbolic link, not a directory. Use deleteFile to remove the link."
        )));
    }
    if !meta.is_dir() {
        return Err(ToolError::new(format!(
            "Path {shown} is not a directory. Use deleteFile tool instead."
        )));
    }
    if meta.mode() & 0o200 == 0 {
        return Err(ToolError::new(format!("Directory {shown} is not writable")));
    }
    let (dir, Some(name)) = ws
        .open_parent(&resolved.entry, false)
        .map_err(|e| io_error(&shown, &e))?
    else {
        return Err(io_error(
            &shown,
            &io::Error::from(io::ErrorKind::PermissionDenied),
        ));
    };
    let child = dir.child(name).map_err(|e| io_error(&shown, &e))?;
    let failed = |e: io::Error| ToolError::new(format!("Failed to delete directory {shown}: {e}"));
    if recursive {
        // std's `remove_dir_all` never follows symlinks (it works with `openat`/`unlinkat`).
        std::fs::remove_dir_all(&child).map_err(failed)?;
    } else {
        let not_empty = std::fs::read_dir(&child).map_err(failed)?.next().is_some();
        if not_empty {
            return Err(ToolError::new(format!(
                "Directory {shown} is not empty. Use recursive: true to delete non-empty \
                 directories."
            )));
        }
        std::fs::remove_dir(&child).map_err(failed)?;
    }
    Ok(PathOnly {
        path: resolved.entry.display().to_string(),
    })
}

fn move_entry(ws: &Workspace, source: &str, destination: &str) -> Result<Moved, ToolError> {
    let (src_shown, dst_shown) = (quote(source), quote(destination));
    let from = ws.resolve(source)?;
    let Some(src_meta) = &from.meta else {
        return Err(ToolError::new(format!(
            "Source file {src_shown} does not exist."
        )));
    };
    if from.entry == ws.root() {
        return Err(ToolError::new(format!(
            "Access denied - the workspace root cannot be moved: {src_shown}"
        )));
    }
    if !src_meta.file_type().is_symlink() && src_meta.mode() & 0o200 == 0 {
        return Err(ToolError::new(format!(
            "Source file {src_shown} is not writable"
        )));
    }
    let to = ws.resolve(destination)?;
    let exists = || ToolError::new(format!("Destination {dst_shown} already exists."));
    if to.meta.is_some() {
        return Err(exists());
    }
    if src_meta.is_dir() && to.entry.starts_with(&from.entry) {
        return Err(ToolError::new(format!(
            "Cannot move {src_shown} into itself ({dst_shown})"
        )));
    }
    let failed = |e: io::Error| ToolError::new(format!("Failed to move {src_shown}: {e}"));
    let (src_dir, Some(src_name)) = ws.open_parent(&from.entry, false).map_err(failed)? else {
        return Err(failed(io::Error::from(io::ErrorKind::PermissionDenied)));
    };
    let (dst_dir, Some(dst_name)) = ws.open_parent(&to.entry, true).map_err(failed)? else {
        return Err(exists());
    };
    let src = src_dir.child(src_name).map_err(failed)?;
    let dst = dst_dir.child(dst_name).map_err(failed)?;
    // A file moves by link + unlink, which can never replace an existing destination; a
    // directory (or a file system without hard links) by rename after a last check.
    let linked = !src_meta.is_dir()
        && match std::fs::hard_link(&src, &dst) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(exists()),
            Err(_) => false,
        };
    if linked {
        if let Err(e) = std::fs::remove_file(&src) {
            // Undo, so the file does not end up under two names.
            let _ = std::fs::remove_file(&dst);
            return Err(failed(e));
        }
    } else {
        if std::fs::symlink_metadata(&dst).is_ok() {
            return Err(exists());
        }
        std::fs::rename(&src, &dst).map_err(failed)?;
    }
    Ok(Moved {
        source: from.entry.display().to_string(),
        destination: to.entry.display().to_string(),
    })
}
