//! `readImageFile`, `readPdfFile` and [`read_inline_file`], with the fixtures in
//! `tests/fixtures/base/`.

use serde_json::json;

use super::super::read_inline_file;
use super::{Fixture, symlink};

const PNG: &[u8] = include_bytes!("../../../../tests/fixtures/base/pixel.png");
const PDF: &[u8] = include_bytes!("../../../../tests/fixtures/base/blank.pdf");

/// Creates a sparse file of `mb` MiB (cheap: nothing is written).
fn sparse(path: &std::path::Path, mb: u64) {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(mb * 1024 * 1024).unwrap();
}

#[tokio::test]
async fn read_image_file_answers_path_mime_type_and_size() {
    let f = Fixture::new().await;
    std::fs::create_dir(f.at("img")).unwrap();
    for (name, mime) in [
        ("img/a.png", "image/png"),
        ("img/b.JPG", "image/jpeg"),
        ("img/c.jpeg", "image/jpeg"),
        ("img/d.gif", "image/gif"),
        ("img/e.webp", "image/webp"),
    ] {
        std::fs::write(f.at(name), PNG).unwrap();
        assert_eq!(
            f.text("readImageFile", json!({"path": name})).await,
            format!(
                r#"{{"path":"{}","mimeType":"{mime}","size":{}}}"#,
                f.at(name).display(),
                PNG.len()
            )
        );
    }
}

#[tokio::test]
async fn read_image_file_refuses_other_types_missing_files_and_big_ones() {
    let f = Fixture::new().await;
    f.write("notes.txt", "not an image");
    std::fs::write(f.at("doc.pdf"), PDF).unwrap();
    f.refused(
        "readImageFile",
        json!({"path": "notes.txt"}),
        "is not supported",
    )
    .await;
    f.refused(
        "readImageFile",
        json!({"path": "doc.pdf"}),
        "is not supported",
    )
    .await;
    assert_eq!(
        f.text("readImageFile", json!({"path": "nonexistent.png"}))
            .await,
        r#"{"error":"Error","message":"File nonexistent.png does not exist."}"#
    );
    sparse(&f.at("large.png"), 16);
    let message = f
        .refused(
            "readImageFile",
            json!({"path": "large.png"}),
            "Image file too large (16.0MB)",
        )
        .await;
    assert!(
        message.contains("Maximum supported size is 15MB"),
        "{message}"
    );
    sparse(&f.at("limit.png"), 15);
    assert_eq!(
        f.call("readImageFile", json!({"path": "limit.png"})).await["size"],
        15 * 1024 * 1024
    );
}

#[tokio::test]
async fn read_pdf_file_answers_path_mime_type_and_size() {
    let f = Fixture::new().await;
    std::fs::write(f.at("doc.pdf"), PDF).unwrap();
    assert_eq!(
        f.call("readPdfFile", json!({"path": "doc.pdf"})).await,
        json!({
            "path": f.at("doc.pdf").display().to_string(),
            "mimeType": "application/pdf",
            "size": PDF.len()
        })
    );
    std::fs::write(f.at("pic.png"), PNG).unwrap();
    f.refused(
        "readPdfFile",
        json!({"path": "pic.png"}),
        "is not supported",
    )
    .await;
    sparse(&f.at("big.pdf"), 31);
    f.refused(
        "readPdfFile",
        json!({"path": "big.pdf"}),
        "PDF file too large (31.0MB). Maximum supported size is 30MB",
    )
    .await;
}

#[tokio::test]
async fn read_inline_file_returns_the_bytes_the_tool_described() {
    let f = Fixture::new().await;
    std::fs::write(f.at("a.png"), PNG).unwrap();
    std::fs::write(f.at("doc.pdf"), PDF).unwrap();
    let described = f.call("readImageFile", json!({"path": "a.png"})).await;
    let (bytes, mime) = read_inline_file(&f.root, described["path"].as_str().unwrap()).unwrap();
    assert_eq!((bytes.as_slice(), mime.as_str()), (PNG, "image/png"));
    let (bytes, mime) = read_inline_file(&f.root, "doc.pdf").unwrap();
    assert_eq!((bytes.as_slice(), mime.as_str()), (PDF, "application/pdf"));
    // A symlink to a file inside the workspace is read as its target.
    symlink(&f.at("a.png"), &f.at("alias.png"));
    assert_eq!(read_inline_file(&f.root, "alias.png").unwrap().0, PNG);
    // A non-canonical workspace path is canonicalised.
    let sub = f.at("sub");
    std::fs::create_dir(&sub).unwrap();
    assert_eq!(
        read_inline_file(&sub.join(".."), "a.png").unwrap().1,
        "image/png"
    );
}

#[tokio::test]
async fn read_inline_file_applies_the_same_refusals() {
    let f = Fixture::new().await;
    std::fs::write(f.out("secret.png"), PNG).unwrap();
    symlink(&f.out("secret.png"), &f.at("out.png"));
    let outside = f.outside.display().to_string();
    for path in [
        "out.png".to_owned(),
        "../secret.png".to_owned(),
        f.out("secret.png").display().to_string(),
        "missing.png".to_owned(),
        "notes.txt".to_owned(),
    ] {
        let err = read_inline_file(&f.root, &path).unwrap_err();
        assert!(
            !err.contains(&outside) || path.contains(&outside),
            "{path}: {err}"
        );
    }
    std::fs::create_dir_all(f.at("perstack")).unwrap();
    std::fs::write(f.at("perstack/p.png"), PNG).unwrap();
    for path in [
        "perstack/p.png",
        "PERSTACK/p.png",
        "./perstack/../perstack/p.png",
    ] {
        let err = read_inline_file(&f.root, path).unwrap_err();
        assert!(
            err.contains("perstack directory is not allowed"),
            "{path}: {err}"
        );
    }
    sparse(&f.at("huge.png"), 16);
    assert!(
        read_inline_file(&f.root, "huge.png")
            .unwrap_err()
            .contains("too large")
    );
}

/// Issue 9: the `readImageFile`/`readPdfFile` special case lives with the base skill: its
/// connection gives the model the file itself, and nothing else is touched.
#[tokio::test]
async fn the_base_connection_inlines_the_image_or_pdf_a_media_tool_names() {
    use crate::schema::MessagePart;
    let f = Fixture::new().await;
    std::fs::write(f.at("a.png"), PNG).unwrap();
    std::fs::write(f.at("b.pdf"), PDF).unwrap();
    let parts = |name: &'static str, args: serde_json::Value| {
        let base = &f.base;
        async move {
            let result = base.call(name, args.clone()).await.unwrap();
            base.message_parts(name, &args, &result).await.parts
        }
    };
    let image = parts("readImageFile", json!({"path": "a.png"})).await;
    let [MessagePart::ImageInlinePart(p)] = image.as_slice() else {
        panic!("{image:?}")
    };
    assert_eq!(p.mime_type, "image/png");
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&p.encoded_data)
            .unwrap(),
        PNG
    );
    let pdf = parts("readPdfFile", json!({"path": "b.pdf"})).await;
    assert!(
        matches!(pdf.as_slice(), [MessagePart::FileInlinePart(p)] if p.mime_type == "application/pdf"),
        "{pdf:?}"
    );
    // An error answer, and any other tool, pass through as text.
    let missing = parts("readImageFile", json!({"path": "none.png"})).await;
    assert!(
        missing[0].as_text().unwrap().contains("does not exist"),
        "{missing:?}"
    );
    let info = parts("getFileInfo", json!({"path": "a.png"})).await;
    assert!(info[0].as_text().is_some(), "{info:?}");
}

#[tokio::test]
async fn a_media_answer_whose_file_cannot_be_read_becomes_perstacks_failure_text() {
    let f = Fixture::new().await;
    let answer = crate::schema::MessagePart::text(
        r#"{"path":"/etc/passwd","mimeType":"image/png","size":1}"#,
    );
    let out = super::super::inline_media(&f.root, "readImageFile", vec![answer]).await;
    let text = out[0].as_text().unwrap();
    assert!(
        text.starts_with("Failed to read file \"/etc/passwd\": "),
        "{text}"
    );
}
