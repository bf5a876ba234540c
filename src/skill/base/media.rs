//! `readImageFile` and `readPdfFile`, and their runtime half: [`inline_media`] (with
//! [`read_inline_file`]) replaces their answer with the file they name. The special case lives
//! here, with the base skill; the run and the generic MCP result path know nothing of it.
//!
//! As in Perstack, the tools only check the file and answer `{path, mimeType, size}`; the
//! runtime then replaces that text with the file's bytes (an image or file part). Perstack's
//! runtime re-reads the path with a plain `readFile`, which follows symlinks and races with
//! the size check. [`read_inline_file`] instead repeats the tool's checks and reads the file
//! through one handle: opened once with `O_NOFOLLOW` along a symlink-free walk, sized from that
//! handle's metadata, and read with a hard cap in case it grows.
//!
//! The MIME type comes from the extension, like Perstack's `mime-types` lookup.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::BaseSkill;
use super::files::{PathArgs, read_error};
use super::path::{ToolError, Workspace, quote, run_blocking};
use super::result::input_schema;
use crate::schema::id::new_id;
use crate::schema::{InlinePart, MessagePart};

/// Largest image `readImageFile` accepts (Perstack's limit).
const MAX_IMAGE_BYTES: u64 = 15 * 1024 * 1024;
/// Largest PDF `readPdfFile` accepts (Perstack's limit).
const MAX_PDF_BYTES: u64 = 30 * 1024 * 1024;

/// The image types a model can be shown.
const IMAGE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];
const PDF_TYPE: &str = "application/pdf";

/// Reads the image or PDF `path` (as `readImageFile`/`readPdfFile` answered it, or as the
/// model gave it) for inlining: the same workspace checks as the tools, then one `O_NOFOLLOW`
/// open whose handle is size-checked and read. Returns the bytes and the MIME type, or a
/// message (naming only `path`) for "Failed to read file".
///
/// `workspace` is canonicalised here. This does blocking file I/O; call it from
/// `spawn_blocking` when the file may be large.
pub(crate) fn read_inline_file(workspace: &Path, path: &str) -> Result<(Vec<u8>, String), String> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let ws = Workspace::new(workspace, home);
    let mime = mime_type(Path::new(path))
        .filter(|m| IMAGE_TYPES.contains(m) || *m == PDF_TYPE)
        .ok_or_else(|| format!("File {} is not a supported image or PDF file.", quote(path)))?;
    let limit = if mime == PDF_TYPE {
        MAX_PDF_BYTES
    } else {
        MAX_IMAGE_BYTES
    };
    read_checked(&ws, path, mime, limit)
        .map(|(bytes, _)| (bytes, mime.to_owned()))
        .map_err(|e| e.message)
}

/// The tools whose answer the runtime replaces with the file they name.
const INLINED_TOOLS: [&str; 2] = ["readImageFile", "readPdfFile"];

/// After `readImageFile` / `readPdfFile` (and only them): each `{path, mimeType, size}` text
/// part becomes the file itself, an `imageInlinePart` or `fileInlinePart` (base64), read
/// through [`read_inline_file`]'s checks inside `workspace`; a file that cannot be read
/// becomes the text `Failed to read file "<path>": <reason>` (Perstack's). Error answers and
/// other tools' parts pass through unchanged.
pub(crate) async fn inline_media(
    workspace: &Path,
    tool: &str,
    parts: Vec<MessagePart>,
) -> Vec<MessagePart> {
    if !INLINED_TOOLS.contains(&tool) {
        return parts;
    }
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        let path = part
            .as_text()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .filter(|v| v.get("error").is_none())
            .and_then(|v| v.get("path").and_then(Value::as_str).map(str::to_owned));
        let Some(path) = path else {
            out.push(part);
            continue;
        };
        let ws = workspace.to_path_buf();
        let p = path.clone();
        let read = tokio::task::spawn_blocking(move || read_inline_file(&ws, &p)).await;
        out.push(match read {
            Ok(Ok((bytes, mime))) => {
                let inline = InlinePart {
                    id: new_id(),
                    encoded_data: base64::engine::general_purpose::STANDARD.encode(bytes),
                    mime_type: mime.clone(),
                    extra: Map::new(),
                };
                if mime.starts_with("image/") {
                    MessagePart::ImageInlinePart(inline)
                } else {
                    MessagePart::FileInlinePart(inline)
                }
            }
            Ok(Err(e)) => MessagePart::text(format!("Failed to read file \"{path}\": {e}")),
            Err(e) => MessagePart::text(format!("Failed to read file \"{path}\": {e}")),
        });
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MediaFile {
    path: String,
    mime_type: &'static str,
    size: u64,
}

#[tool_router(router = media_router, vis = "pub(super)")]
impl BaseSkill {
    #[tool(
        name = "readImageFile",
        description = "Show an image file (PNG, JPEG, GIF or WebP, at most 15 MB) to the \
            model. Returns `{path, mimeType, size}`; the image itself is attached to the tool \
            result.",
        input_schema = input_schema(json!({
            "type": "object",
            "properties": {"path": {"type": "string", "description": "Path of the image"}},
            "required": ["path"]
        }))
    )]
    async fn read_image_file(&self, Parameters(args): Parameters<PathArgs>) -> CallToolResult {
        let ws = self.ws();
        run_blocking(move || check_media(&ws, &args.path, Kind::Image)).await
    }

    #[tool(
        name = "readPdfFile",
        description = "Show a PDF file (at most 30 MB) to the model. Returns \
            `{path, mimeType, size}`; the document itself is attached to the tool result.",
        input_schema = input_schema(json!({
            "type": "object",
            "properties": {"path": {"type": "string", "description": "Path of the PDF"}},
            "required": ["path"]
        }))
    )]
    async fn read_pdf_file(&self, Parameters(args): Parameters<PathArgs>) -> CallToolResult {
        let ws = self.ws();
        run_blocking(move || check_media(&ws, &args.path, Kind::Pdf)).await
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Image,
    Pdf,
}

fn check_media(ws: &Workspace, given: &str, kind: Kind) -> Result<MediaFile, ToolError> {
    let shown = quote(given);
    let resolved = ws.resolve(given)?;
    let Some(target) = resolved.existing_target() else {
        return Err(ToolError::new(format!("File {shown} does not exist.")));
    };
    let mime = mime_type(target);
    let (mime, limit, label) = match (kind, mime) {
        (Kind::Image, Some(m)) if IMAGE_TYPES.contains(&m) => (m, MAX_IMAGE_BYTES, "Image"),
        (Kind::Pdf, Some(m)) if m == PDF_TYPE => (m, MAX_PDF_BYTES, "PDF"),
        (Kind::Image, _) => {
            return Err(ToolError::new(format!(
                "File {shown} is not supported. Supported image types: PNG, JPEG, GIF, WebP."
            )));
        }
        (Kind::Pdf, _) => {
            return Err(ToolError::new(format!(
                "File {shown} is not supported. readPdfFile reads PDF files only."
            )));
        }
    };
    let (file, meta) = ws.open_read(target).map_err(|e| read_error(&shown, &e))?;
    drop(file);
    check_size(meta.len(), limit, label)?;
    Ok(MediaFile {
        path: target.display().to_string(),
        mime_type: mime,
        size: meta.len(),
    })
}

/// Opens `given` once and reads it, size-checked on the handle and capped while reading.
fn read_checked(
    ws: &Workspace,
    given: &str,
    mime: &str,
    limit: u64,
) -> Result<(Vec<u8>, u64), ToolError> {
    let shown = quote(given);
    let resolved = ws.resolve(given)?;
    let Some(target) = resolved.existing_target() else {
        return Err(ToolError::new(format!("File {shown} does not exist.")));
    };
    if mime_type(target) != Some(mime) {
        return Err(ToolError::new(format!(
            "File {shown} is not a {mime} file."
        )));
    }
    let label = if mime == PDF_TYPE { "PDF" } else { "Image" };
    let (file, meta) = ws.open_read(target).map_err(|e| read_error(&shown, &e))?;
    check_size(meta.len(), limit, label)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read_error(&shown, &e))?;
    check_size(bytes.len() as u64, limit, label)?;
    Ok((bytes, meta.len()))
}

fn check_size(size: u64, limit: u64, label: &str) -> Result<(), ToolError> {
    if size <= limit {
        return Ok(());
    }
    const MB: f64 = 1024.0 * 1024.0;
    let kind = label.to_ascii_lowercase();
    Err(ToolError::new(format!(
        "{label} file too large ({:.1}MB). Maximum supported size is {}MB. Please use a \
         smaller {kind} file.",
        size as f64 / MB,
        limit / (1024 * 1024)
    )))
}

/// The MIME type for `path`'s extension (case-insensitive), for the common types.
pub(super) fn mime_type(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" | "jpe" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "bmp" => "image/bmp",
        "ico" => "image/vnd.microsoft.icon",
        "tif" | "tiff" => "image/tiff",
        "avif" => "image/avif",
        "pdf" => PDF_TYPE,
        "txt" | "text" | "log" => "text/plain",
        "md" | "markdown" => "text/markdown",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "csv" => "text/csv",
        "xml" => "application/xml",
        "js" | "mjs" | "cjs" => "application/javascript",
        // What mime-db (so Perstack) answers for `.ts`.
        "ts" => "video/mp2t",
        "json" => "application/json",
        "yaml" | "yml" => "text/yaml",
        "toml" => "application/toml",
        "wasm" => "application/wasm",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "sh" => "application/x-sh",
        "py" => "text/x-python",
        _ => return None,
    })
}
