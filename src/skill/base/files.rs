//! The file tools: `readTextFile`, `writeTextFile`, `appendTextFile`, `editTextFile` and
//! `deleteFile`.
//!
//! Every path goes through [`Workspace::resolve`] and every open through the symlink-free walk
//! in [`super::path`]. Reads follow an in-workspace symlink to its (checked) target; writes,
//! appends and edits refuse a symlink outright, as Perstack's `safe-file` helpers do, and also
//! refuse FIFOs, devices and files with more than one hard link (a hard link can alias a file
//! outside the workspace). Text is read as UTF-8 with invalid bytes replaced, like Node's
//! `readFile(.., "utf-8")`. Results name the resolved absolute path, except `readTextFile`,
//! which echoes the path it was given (both as Perstack).

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::BaseSkill;
use super::path::{ToolError, Workspace, io_error, open_nofollow, quote, run_blocking};
use super::result::input_schema;

/// Largest file the text tools read into memory. Perstack has no limit; this keeps one call
/// from exhausting memory, and keeps the answer (JSON escaping can grow text sixfold) under the
/// in-process pipe's 256 MiB message limit. Larger files are refused with a hint to read them
/// piecewise with `exec`.
const MAX_TEXT_BYTES: u64 = 32 * 1024 * 1024;

/// `{path}`: the arguments of the tools that take only a path.
#[derive(Debug, Deserialize)]
pub(super) struct PathArgs {
    pub(super) path: String,
}

#[derive(Debug, Deserialize)]
struct ReadTextArgs {
    path: String,
    from: Option<f64>,
    to: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct WriteTextArgs {
    path: String,
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EditTextArgs {
    path: String,
    new_text: String,
    old_text: String,
}

#[derive(Serialize)]
struct TextRead {
    path: String,
    content: String,
    from: Value,
    to: Value,
}

#[derive(Serialize)]
struct TextWritten {
    path: String,
    text: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TextEdited {
    path: String,
    new_text: String,
    old_text: String,
}

/// `{path}`: what the delete and directory tools answer.
#[derive(Serialize)]
pub(super) struct PathOnly {
    pub(super) path: String,
}

fn path_schema(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

#[tool_router(router = files_router, vis = "pub(super)")]
impl BaseSkill {
    #[tool(
        name = "readTextFile",
        description = "Read a UTF-8 text file in the workspace. `from` and `to` select 0-based \
            lines (`to` exclusive); without them the whole file is returned. Returns \
            `{path, content, from, to}`.",
        input_schema = input_schema(json!({
            "type": "object",
            "properties": {
                "path": path_schema("Path of the file, relative to the workspace or absolute"),
                "from": {"type": "number", "description": "First line to return (0-based)"},
                "to": {"type": "number", "description": "Line to stop before (0-based, exclusive)"}
            },
            "required": ["path"]
        }))
    )]
    async fn read_text_file(&self, Parameters(args): Parameters<ReadTextArgs>) -> CallToolResult {
        let ws = self.ws();
        run_blocking(move || read_text_lines(&ws, args)).await
    }

    #[tool(
        name = "writeTextFile",
        description = "Create or overwrite a text file with `text`, creating missing parent \
            directories. Refuses symbolic links and read-only files. Returns `{path, text}`.",
        input_schema = input_schema(json!({
            "type": "object",
            "properties": {
                "path": path_schema("Path of the file to write"),
                "text": {"type": "string", "description": "The whole new content (UTF-8)"}
            },
            "required": ["path", "text"]
        }))
    )]
    async fn write_text_file(&self, Parameters(args): Parameters<WriteTextArgs>) -> CallToolResult {
        let ws = self.ws();
        run_blocking(move || write_text(&ws, args, Mode::Overwrite)).await
    }

    #[tool(
        name = "appendTextFile",
        description = "Append `text` to the end of an existing file (no newline is added). \
            Returns `{path, text}`.",
        input_schema = input_schema(json!({
            "type": "object",
            "properties": {
                "path": path_schema("Path of an existing file"),
                "text": {"type": "string", "description": "Text to append (UTF-8)"}
            },
            "required": ["path", "text"]
        }))
    )]
    async fn append_text_file(
        &self,
        Parameters(args): Parameters<WriteTextArgs>,
    ) -> CallToolResult {
        let ws = self.ws();
        run_blocking(move || write_text(&ws, args, Mode::Append)).await
    }

    #[tool(
        name = "editTextFile",
        description = "Replace the first exact occurrence of `oldText` with `newText` in an \
            existing file. Line endings are normalised to LF (in the file and both texts) \
            first. Fails if `oldText` is not found. Use appendTextFile to add to the end. \
            Returns `{path, newText, oldText}`.",
        input_schema = input_schema(json!({
            "type": "object",
            "properties": {
                "path": path_schema("Path of the file to edit"),
                "newText": {"type": "string", "description": "Text to replace with"},
                "oldText": {"type": "string", "description": "Exact text to find and replace"}
            },
            "required": ["path", "newText", "oldText"]
        }))
    )]
    async fn edit_text_file(&self, Parameters(args): Parameters<EditTextArgs>) -> CallToolResult {
        let ws = self.ws();
        run_blocking(move || edit_text(&ws, args)).await
    }

    #[tool(
        name = "deleteFile",
        description = "Delete a file (not a directory; use deleteDirectory for those). A \
            symbolic link is removed itself, never its target. Returns `{path}`.",
        input_schema = input_schema(json!({
            "type": "object",
            "properties": {"path": path_schema("Path of the file to delete")},
            "required": ["path"]
        }))
    )]
    async fn delete_file(&self, Parameters(args): Parameters<PathArgs>) -> CallToolResult {
        let ws = self.ws();
        run_blocking(move || delete_file(&ws, &args.path)).await
    }
}

fn read_text_lines(ws: &Workspace, args: ReadTextArgs) -> Result<TextRead, ToolError> {
    let shown = quote(&args.path);
    let resolved = ws.resolve(&args.path)?;
    let Some(target) = resolved.existing_target() else {
        return Err(not_found(&shown));
    };
    let (mut file, meta) = ws.open_read(target).map_err(|e| read_error(&shown, &e))?;
    let text = read_capped(&mut file, &meta, &shown)?;
    let lines: Vec<&str> = text.split('\n').collect();
    let (start, end) = js_slice(lines.len(), args.from, args.to);
    let content = lines.get(start..end).unwrap_or_default().join("\n");
    Ok(TextRead {
        path: args.path,
        content,
        from: js_number(args.from.unwrap_or(0.0)),
        to: args.to.map_or_else(|| Value::from(lines.len()), js_number),
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Overwrite,
    Append,
}

fn write_text(ws: &Workspace, args: WriteTextArgs, mode: Mode) -> Result<TextWritten, ToolError> {
    let shown = quote(&args.path);
    let resolved = ws.resolve(&args.path)?;
    match &resolved.meta {
        None if mode == Mode::Append => return Err(not_found(&shown)),
        None => {}
        Some(meta) => check_writable_entry(meta, &shown)?,
    }
    let (dir, Some(name)) = ws
        .open_parent(&resolved.entry, mode == Mode::Overwrite)
        .map_err(|e| write_error(&shown, &e))?
    else {
        return Err(is_a_directory(&shown));
    };
    let mut options = OpenOptions::new();
    match mode {
        Mode::Overwrite => options.write(true).create(true),
        Mode::Append => options.append(true),
    };
    let mut file = dir
        .child(name)
        .and_then(|child| open_nofollow(&child, &mut options))
        .map_err(|e| write_error(&shown, &e))?;
    let meta = file.metadata().map_err(|e| write_error(&shown, &e))?;
    check_writable_handle(&meta, &shown)?;
    if mode == Mode::Overwrite {
        file.set_len(0).map_err(|e| write_error(&shown, &e))?;
    }
    file.write_all(args.text.as_bytes())
        .map_err(|e| write_error(&shown, &e))?;
    Ok(TextWritten {
        path: resolved.entry.display().to_string(),
        text: args.text,
    })
}

fn edit_text(ws: &Workspace, args: EditTextArgs) -> Result<TextEdited, ToolError> {
    let shown = quote(&args.path);
    let resolved = ws.resolve(&args.path)?;
    let Some(meta) = &resolved.meta else {
        return Err(not_found(&shown));
    };
    check_writable_entry(meta, &shown)?;
    let (dir, Some(name)) = ws
        .open_parent(&resolved.entry, false)
        .map_err(|e| write_error(&shown, &e))?
    else {
        return Err(is_a_directory(&shown));
    };
    // One handle for the read and the write, so nothing can be swapped in between.
    let mut file = dir
        .child(name)
        .and_then(|child| open_nofollow(&child, OpenOptions::new().read(true).write(true)))
        .map_err(|e| write_error(&shown, &e))?;
    let meta = file.metadata().map_err(|e| write_error(&shown, &e))?;
    check_writable_handle(&meta, &shown)?;
    let content = read_capped(&mut file, &meta, &shown)?.replace("\r\n", "\n");
    let old = args.old_text.replace("\r\n", "\n");
    let new = args.new_text.replace("\r\n", "\n");
    if !content.contains(&old) {
        return Err(ToolError::new(format!(
            "Could not find exact match for oldText in file {shown}"
        )));
    }
    let edited = content.replacen(&old, &new, 1);
    file.rewind()
        .and_then(|()| file.set_len(0))
        .and_then(|()| file.write_all(edited.as_bytes()))
        .map_err(|e| write_error(&shown, &e))?;
    Ok(TextEdited {
        path: resolved.entry.display().to_string(),
        new_text: args.new_text,
        old_text: args.old_text,
    })
}

fn delete_file(ws: &Workspace, given: &str) -> Result<PathOnly, ToolError> {
    let shown = quote(given);
    let resolved = ws.resolve(given)?;
    let Some(meta) = &resolved.meta else {
        return Err(not_found(&shown));
    };
    if meta.is_dir() {
        return Err(ToolError::new(format!(
            "Path {shown} is a directory. Use delete directory tool instead."
        )));
    }
    if !meta.file_type().is_symlink() && meta.mode() & 0o200 == 0 {
        return Err(not_writable(&shown));
    }
    let (dir, Some(name)) = ws
        .open_parent(&resolved.entry, false)
        .map_err(|e| io_error(&shown, &e))?
    else {
        return Err(is_a_directory(&shown));
    };
    let child = dir.child(name).map_err(|e| io_error(&shown, &e))?;
    // `unlink` never follows a final symlink, and refuses directories.
    std::fs::remove_file(child).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => not_found(&shown),
        _ => ToolError::new(format!("Failed to delete {shown}: {e}")),
    })?;
    Ok(PathOnly {
        path: resolved.entry.display().to_string(),
    })
}

/// Reads at most [`MAX_TEXT_BYTES`] from `file` (sized by `meta`, from the same handle).
fn read_capped(file: &mut File, meta: &Metadata, shown: &str) -> Result<String, ToolError> {
    let too_large = || {
        ToolError::new(format!(
            "File {shown} is too large ({} bytes; the limit is {MAX_TEXT_BYTES} bytes). Read \
             it in parts with exec (for example `sed -n` or `head`).",
            meta.len()
        ))
    };
    if meta.len() > MAX_TEXT_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_TEXT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read_error(shown, &e))?;
    if bytes.len() as u64 > MAX_TEXT_BYTES {
        return Err(too_large());
    }
    Ok(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// Checks an existing entry before opening it for writing (Perstack's `stat` checks).
fn check_writable_entry(meta: &Metadata, shown: &str) -> Result<(), ToolError> {
    if meta.file_type().is_symlink() {
        return Err(ToolError::new(format!(
            "File {shown} is a symbolic link; writing through symbolic links is not allowed"
        )));
    }
    if meta.is_dir() {
        return Err(is_a_directory(shown));
    }
    if meta.mode() & 0o200 == 0 {
        return Err(not_writable(shown));
    }
    Ok(())
}

/// Checks the opened handle itself: a writable regular file with a single link.
fn check_writable_handle(meta: &Metadata, shown: &str) -> Result<(), ToolError> {
    if !meta.is_file() {
        return Err(ToolError::new(format!(
            "Path {shown} is not a regular file"
        )));
    }
    if meta.mode() & 0o200 == 0 {
        return Err(not_writable(shown));
    }
    if meta.nlink() > 1 {
        return Err(ToolError::new(format!(
            "File {shown} has {} hard links; writing to a file with more than one link is not \
             allowed",
            meta.nlink()
        )));
    }
    Ok(())
}

fn not_found(shown: &str) -> ToolError {
    ToolError::new(format!("File {shown} does not exist."))
}

fn not_writable(shown: &str) -> ToolError {
    ToolError::new(format!("File {shown} is not writable"))
}

fn is_a_directory(shown: &str) -> ToolError {
    ToolError::new(format!("Path {shown} is a directory"))
}

/// A read failure in Perstack's words where it has them.
pub(super) fn read_error(shown: &str, e: &io::Error) -> ToolError {
    match e.kind() {
        io::ErrorKind::NotFound => not_found(shown),
        io::ErrorKind::IsADirectory => is_a_directory(shown),
        _ => ToolError::new(format!("Failed to read {shown}: {e}")),
    }
}

fn write_error(shown: &str, e: &io::Error) -> ToolError {
    match e.kind() {
        io::ErrorKind::NotFound => not_found(shown),
        io::ErrorKind::IsADirectory => is_a_directory(shown),
        _ => ToolError::new(format!("Failed to write {shown}: {e}")),
    }
}

/// JavaScript's `Array.prototype.slice(from, to)` bounds for a list of `len` items.
fn js_slice(len: usize, from: Option<f64>, to: Option<f64>) -> (usize, usize) {
    let bound = |value: f64| -> usize {
        let n = if value.is_nan() { 0.0 } else { value.trunc() };
        let len_f = len as f64;
        let index = if n < 0.0 {
            (len_f + n).max(0.0)
        } else {
            n.min(len_f)
        };
        // `index` is an integer in 0..=len.
        index as usize
    };
    let start = from.map_or(0, bound);
    let end = to.map_or(len, bound);
    (start, end.max(start))
}

/// A number as `JSON.stringify` writes it: integers without a fraction, NaN/Infinity as null.
fn js_number(value: f64) -> Value {
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
    if value.fract() == 0.0 && value.abs() <= MAX_SAFE {
        // Exact: an integer within ±2^53.
        Value::from(value as i64)
    } else {
        serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_like_javascript() {
        assert_eq!(js_slice(5, None, None), (0, 5));
        assert_eq!(js_slice(5, Some(1.0), Some(3.0)), (1, 3));
        assert_eq!(js_slice(5, Some(-2.0), None), (3, 5));
        assert_eq!(js_slice(5, Some(4.0), Some(2.0)), (4, 4));
        assert_eq!(js_slice(5, Some(1.7), Some(99.0)), (1, 5));
        assert_eq!(js_slice(5, Some(f64::NAN), Some(-99.0)), (0, 0));
    }

    #[test]
    fn numbers_print_like_javascript() {
        assert_eq!(js_number(3.0), json!(3));
        assert_eq!(js_number(1.5), json!(1.5));
        assert_eq!(js_number(f64::INFINITY), Value::Null);
    }
}
