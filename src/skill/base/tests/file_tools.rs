//! `readTextFile`, `writeTextFile`, `appendTextFile`, `editTextFile`, `deleteFile` and
//! `getFileInfo` through the rmcp client: happy paths with Perstack's exact result shapes, and
//! their error answers.

use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};

use super::{Fixture, assert_error};

#[tokio::test]
async fn read_text_file_answers_path_content_from_and_to() {
    let f = Fixture::new().await;
    f.write("a.txt", "Line 1\nLine 2\nLine 3");
    assert_eq!(
        f.text("readTextFile", json!({"path": "a.txt"})).await,
        r#"{"path":"a.txt","content":"Line 1\nLine 2\nLine 3","from":0,"to":3}"#
    );
    assert_eq!(
        f.text("readTextFile", json!({"path": "a.txt", "from": 1, "to": 3}))
            .await,
        r#"{"path":"a.txt","content":"Line 2\nLine 3","from":1,"to":3}"#
    );
    assert_eq!(
        f.call("readTextFile", json!({"path": "a.txt", "from": 2}))
            .await,
        json!({"path": "a.txt", "content": "Line 3", "from": 2, "to": 3})
    );
    // An absolute path inside the workspace works too, and is echoed as given.
    let absolute = f.at("a.txt").display().to_string();
    let v = f
        .call("readTextFile", json!({"path": absolute, "to": 1}))
        .await;
    assert_eq!(
        v,
        json!({"path": absolute, "content": "Line 1", "from": 0, "to": 1})
    );

    f.write("empty.txt", "");
    assert_eq!(
        f.call("readTextFile", json!({"path": "empty.txt"})).await,
        json!({"path": "empty.txt", "content": "", "from": 0, "to": 1})
    );
    f.write("uni.txt", "🦜 Perstack\n日本語テスト");
    assert_eq!(
        f.call("readTextFile", json!({"path": "uni.txt"})).await["content"],
        "🦜 Perstack\n日本語テスト"
    );
}

#[tokio::test]
async fn read_text_file_errors_name_the_path() {
    let f = Fixture::new().await;
    assert_eq!(
        f.text("readTextFile", json!({"path": "nope.txt"})).await,
        r#"{"error":"Error","message":"File nope.txt does not exist."}"#
    );
    std::fs::create_dir(f.at("dir")).unwrap();
    f.refused("readTextFile", json!({"path": "dir"}), "dir is a directory")
        .await;
    // Invalid UTF-8 is replaced, as Node's readFile does.
    std::fs::write(f.at("bin"), b"a\xffb").unwrap();
    assert_eq!(
        f.call("readTextFile", json!({"path": "bin"})).await["content"],
        "a\u{fffd}b"
    );
}

#[tokio::test]
async fn write_text_file_creates_parents_overwrites_and_answers_path_and_text() {
    let f = Fixture::new().await;
    let v = f
        .call(
            "writeTextFile",
            json!({"path": "sub/deep/new.txt", "text": "hello\nworld"}),
        )
        .await;
    let expected_path = f.at("sub/deep/new.txt");
    assert_eq!(
        v,
        json!({"path": expected_path.display().to_string(), "text": "hello\nworld"})
    );
    assert_eq!(
        std::fs::read_to_string(&expected_path).unwrap(),
        "hello\nworld"
    );
    // Overwriting with something shorter leaves nothing of the old content.
    f.call(
        "writeTextFile",
        json!({"path": "sub/deep/new.txt", "text": "hi"}),
    )
    .await;
    assert_eq!(std::fs::read_to_string(&expected_path).unwrap(), "hi");
}

#[tokio::test]
async fn write_text_file_refuses_read_only_files_and_directories() {
    let f = Fixture::new().await;
    let ro = f.write("ro.txt", "keep");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o444)).unwrap();
    f.refused(
        "writeTextFile",
        json!({"path": "ro.txt", "text": "x"}),
        "File ro.txt is not writable",
    )
    .await;
    assert_eq!(std::fs::read_to_string(&ro).unwrap(), "keep");
    std::fs::create_dir(f.at("d")).unwrap();
    f.refused(
        "writeTextFile",
        json!({"path": "d", "text": "x"}),
        "is a directory",
    )
    .await;
}

#[tokio::test]
async fn writes_to_a_file_with_several_hard_links_are_refused() {
    let f = Fixture::new().await;
    let original = f.write("original.txt", "shared");
    std::fs::hard_link(&original, f.at("alias.txt")).unwrap();
    for tool in ["writeTextFile", "appendTextFile"] {
        f.refused(
            tool,
            json!({"path": "alias.txt", "text": "changed"}),
            "hard links",
        )
        .await;
    }
    f.refused(
        "editTextFile",
        json!({"path": "alias.txt", "oldText": "shared", "newText": "changed"}),
        "hard links",
    )
    .await;
    assert_eq!(std::fs::read_to_string(&original).unwrap(), "shared");
}

#[tokio::test]
async fn append_text_file_needs_an_existing_file_and_adds_no_newline() {
    let f = Fixture::new().await;
    let path = f.write("log.txt", "one");
    let v = f
        .call("appendTextFile", json!({"path": "log.txt", "text": " two"}))
        .await;
    assert_eq!(
        v,
        json!({"path": path.display().to_string(), "text": " two"})
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "one two");
    assert_eq!(
        f.text("appendTextFile", json!({"path": "new.txt", "text": "x"}))
            .await,
        r#"{"error":"Error","message":"File new.txt does not exist."}"#
    );
    assert!(!f.at("new.txt").exists());
}

#[tokio::test]
async fn edit_text_file_replaces_the_first_match_with_crlf_normalised() {
    let f = Fixture::new().await;
    let path = f.write("code.txt", "a = 1\r\nb = 2\r\na = 1\r\n");
    let v = f
        .call(
            "editTextFile",
            json!({"path": "code.txt", "oldText": "a = 1\r\nb", "newText": "a = 10\r\nb"}),
        )
        .await;
    assert_eq!(
        v,
        json!({
            "path": path.display().to_string(),
            "newText": "a = 10\r\nb",
            "oldText": "a = 1\r\nb"
        })
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "a = 10\nb = 2\na = 1\n"
    );
    assert_eq!(
        f.text(
            "editTextFile",
            json!({"path": "code.txt", "oldText": "zzz", "newText": "y"})
        )
        .await,
        r#"{"error":"Error","message":"Could not find exact match for oldText in file code.txt"}"#
    );
    f.refused(
        "editTextFile",
        json!({"path": "missing.txt", "oldText": "a", "newText": "b"}),
        "File missing.txt does not exist.",
    )
    .await;
}

#[tokio::test]
async fn delete_file_removes_files_only() {
    let f = Fixture::new().await;
    let path = f.write("gone.txt", "x");
    assert_eq!(
        f.call("deleteFile", json!({"path": "gone.txt"})).await,
        json!({"path": path.display().to_string()})
    );
    assert!(!path.exists());
    assert_eq!(
        f.text("deleteFile", json!({"path": "gone.txt"})).await,
        r#"{"error":"Error","message":"File gone.txt does not exist."}"#
    );
    std::fs::create_dir(f.at("dir")).unwrap();
    f.refused(
        "deleteFile",
        json!({"path": "dir"}),
        "Path dir is a directory. Use delete directory tool instead.",
    )
    .await;
    let ro = f.write("ro.txt", "x");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o444)).unwrap();
    f.refused("deleteFile", json!({"path": "ro.txt"}), "not writable")
        .await;
    assert!(ro.exists());
}

#[tokio::test]
async fn deleting_an_in_workspace_symlink_removes_the_link_not_its_target() {
    let f = Fixture::new().await;
    let target = f.write("target.txt", "stay");
    super::symlink(&target, &f.at("link.txt"));
    f.call("deleteFile", json!({"path": "link.txt"})).await;
    assert!(std::fs::symlink_metadata(f.at("link.txt")).is_err());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "stay");
}

#[tokio::test]
async fn get_file_info_has_perstacks_full_shape() {
    let f = Fixture::new().await;
    let path = f.write("docs/readme.md", "hello");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let text = f
        .text("getFileInfo", json!({"path": "docs/readme.md"}))
        .await;
    let keys = [
        "exists",
        "path",
        "absolutePath",
        "name",
        "directory",
        "extension",
        "type",
        "mimeType",
        "size",
        "sizeFormatted",
        "created",
        "modified",
        "accessed",
        "permissions",
    ];
    let positions: Vec<_> = keys
        .iter()
        .map(|k| text.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let shown = path.display().to_string();
    assert_eq!(v["exists"], true);
    assert_eq!(v["path"], shown);
    assert_eq!(v["absolutePath"], shown);
    assert_eq!(v["name"], "readme.md");
    assert_eq!(v["directory"], f.at("docs").display().to_string());
    assert_eq!(v["extension"], ".md");
    assert_eq!(v["type"], "file");
    assert_eq!(v["mimeType"], "text/markdown");
    assert_eq!(v["size"], 5);
    assert_eq!(v["sizeFormatted"], "5.00 B");
    for key in ["created", "modified", "accessed"] {
        let s = v[key].as_str().unwrap();
        assert!(
            s.len() == 24 && s.ends_with('Z') && s.starts_with("20"),
            "{s}"
        );
    }
    assert_eq!(
        v["permissions"],
        json!({"readable": true, "writable": true, "executable": false})
    );

    let dir = f.call("getFileInfo", json!({"path": "docs"})).await;
    assert_eq!(dir["type"], "directory");
    assert_eq!(dir["extension"], Value::Null);
    assert_eq!(dir["mimeType"], Value::Null);
    let root = f.call("getFileInfo", json!({"path": "."})).await;
    assert_eq!(root["path"], f.root.display().to_string());

    let missing = f.call("getFileInfo", json!({"path": "nope"})).await;
    assert_error(
        &missing,
        "File or directory nope does not exist",
        "getFileInfo",
    );
}

#[tokio::test]
async fn missing_required_arguments_are_rmcp_errors_the_model_reads() {
    let f = Fixture::new().await;
    let result = f
        .base
        .call("writeTextFile", json!({"path": "x.txt"}))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    assert!(!f.at("x.txt").exists());
}
