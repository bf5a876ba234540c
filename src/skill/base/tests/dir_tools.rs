//! `listDirectory`, `createDirectory`, `deleteDirectory` and `moveFile` through the rmcp
//! client.

use serde_json::{Value, json};

use super::{Fixture, symlink};

#[tokio::test]
async fn list_directory_is_sorted_flat_and_hides_perstack() {
    let f = Fixture::new().await;
    f.write("b.txt", "content1");
    f.write("a.txt", "22");
    f.write("sub/nested.txt", "nested");
    f.write("perstack/jobs/job.json", "{}");
    let v = f.call("listDirectory", json!({"path": "."})).await;
    assert_eq!(v["path"], f.root.display().to_string());
    let items = v["items"].as_array().unwrap();
    let names: Vec<_> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a.txt", "b.txt", "sub"]);
    let b = &items[1];
    assert_eq!(b["path"], f.at("b.txt").display().to_string());
    assert_eq!(b["type"], "file");
    assert_eq!(b["size"], 8);
    assert!(b["modified"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        b.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["modified", "name", "path", "size", "type"]
    );
    assert_eq!(items[2]["type"], "directory");

    let sub = f.call("listDirectory", json!({"path": "sub"})).await;
    assert_eq!(sub["items"].as_array().unwrap().len(), 1);
    assert_eq!(sub["items"][0]["name"], "nested.txt");
    std::fs::create_dir(f.at("empty")).unwrap();
    assert_eq!(
        f.call("listDirectory", json!({"path": "empty"})).await["items"],
        json!([])
    );
}

#[tokio::test]
async fn list_directory_errors() {
    let f = Fixture::new().await;
    f.write("file.txt", "x");
    f.refused(
        "listDirectory",
        json!({"path": "nonexistent"}),
        "Directory nonexistent does not exist.",
    )
    .await;
    f.refused(
        "listDirectory",
        json!({"path": "file.txt"}),
        "Path file.txt is not a directory.",
    )
    .await;
}

#[tokio::test]
async fn listed_symlinks_show_inside_targets_and_hide_outside_ones() {
    let f = Fixture::new().await;
    let inside = f.write("real.txt", "12345");
    let secret = f.out("secret.txt");
    std::fs::write(&secret, "a much longer secret").unwrap();
    symlink(&inside, &f.at("in-link"));
    symlink(&secret, &f.at("out-link"));
    symlink(&f.out("missing"), &f.at("dangling"));
    let v = f.call("listDirectory", json!({"path": "."})).await;
    let by_name = |n: &str| -> Value {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_name("in-link")["type"], "file");
    assert_eq!(by_name("in-link")["size"], 5);
    assert_eq!(by_name("out-link")["type"], "symlink");
    assert_ne!(by_name("out-link")["size"], 20);
    assert_eq!(by_name("dangling")["type"], "symlink");
    assert!(!v.to_string().contains(&f.outside.display().to_string()));
}

#[tokio::test]
async fn create_directory_is_recursive_and_refuses_existing_ones() {
    let f = Fixture::new().await;
    let v = f.call("createDirectory", json!({"path": "a/b/c"})).await;
    assert_eq!(v, json!({"path": f.at("a/b/c").display().to_string()}));
    assert!(f.at("a/b/c").is_dir());
    assert_eq!(
        f.text("createDirectory", json!({"path": "a/b"})).await,
        r#"{"error":"Error","message":"Directory a/b already exists"}"#
    );
    f.write("file", "x");
    f.refused(
        "createDirectory",
        json!({"path": "file/sub"}),
        "Failed to create directory file/sub",
    )
    .await;
}

#[tokio::test]
async fn delete_directory_needs_recursive_when_not_empty() {
    let f = Fixture::new().await;
    std::fs::create_dir(f.at("empty")).unwrap();
    assert_eq!(
        f.call("deleteDirectory", json!({"path": "empty"})).await,
        json!({"path": f.at("empty").display().to_string()})
    );
    assert!(!f.at("empty").exists());

    f.write("full/x/y.txt", "y");
    f.refused(
        "deleteDirectory",
        json!({"path": "full"}),
        "Directory full is not empty. Use recursive: true to delete non-empty directories.",
    )
    .await;
    f.refused(
        "deleteDirectory",
        json!({"path": "full", "recursive": false}),
        "not empty",
    )
    .await;
    assert!(f.at("full/x/y.txt").exists());
    f.call(
        "deleteDirectory",
        json!({"path": "full", "recursive": true}),
    )
    .await;
    assert!(!f.at("full").exists());

    f.refused(
        "deleteDirectory",
        json!({"path": "full"}),
        "Directory full does not exist.",
    )
    .await;
    f.write("file.txt", "x");
    f.refused(
        "deleteDirectory",
        json!({"path": "file.txt"}),
        "Path file.txt is not a directory. Use deleteFile tool instead.",
    )
    .await;
}

#[tokio::test]
async fn recursive_delete_removes_links_inside_but_never_their_targets() {
    let f = Fixture::new().await;
    let secret = f.out("keep.txt");
    std::fs::write(&secret, "keep").unwrap();
    std::fs::create_dir(f.at("d")).unwrap();
    symlink(&f.outside, &f.at("d/outside-dir"));
    f.call("deleteDirectory", json!({"path": "d", "recursive": true}))
        .await;
    assert!(!f.at("d").exists());
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "keep");
}

#[tokio::test]
async fn delete_directory_refuses_a_symlink_to_a_directory() {
    let f = Fixture::new().await;
    f.write("real/x.txt", "x");
    symlink(&f.at("real"), &f.at("alias"));
    f.refused(
        "deleteDirectory",
        json!({"path": "alias", "recursive": true}),
        "is a symbolic link",
    )
    .await;
    assert!(f.at("real/x.txt").exists());
}

#[tokio::test]
async fn move_file_renames_creates_parents_and_refuses_existing_destinations() {
    let f = Fixture::new().await;
    let source = f.write("src.txt", "content");
    let v = f
        .call(
            "moveFile",
            json!({"source": "src.txt", "destination": "new/dir/dst.txt"}),
        )
        .await;
    assert_eq!(
        v,
        json!({
            "source": source.display().to_string(),
            "destination": f.at("new/dir/dst.txt").display().to_string()
        })
    );
    assert!(!source.exists());
    assert_eq!(
        std::fs::read_to_string(f.at("new/dir/dst.txt")).unwrap(),
        "content"
    );

    f.write("other.txt", "other");
    assert_eq!(
        f.text(
            "moveFile",
            json!({"source": "other.txt", "destination": "new/dir/dst.txt"})
        )
        .await,
        r#"{"error":"Error","message":"Destination new/dir/dst.txt already exists."}"#
    );
    assert_eq!(
        std::fs::read_to_string(f.at("new/dir/dst.txt")).unwrap(),
        "content"
    );
    f.refused(
        "moveFile",
        json!({"source": "ghost.txt", "destination": "x.txt"}),
        "Source file ghost.txt does not exist.",
    )
    .await;
}

#[tokio::test]
async fn move_file_moves_directories_but_not_into_themselves() {
    let f = Fixture::new().await;
    f.write("d/inner.txt", "i");
    f.call("moveFile", json!({"source": "d", "destination": "e"}))
        .await;
    assert!(f.at("e/inner.txt").exists());
    f.refused(
        "moveFile",
        json!({"source": "e", "destination": "e/sub/e"}),
        "into itself",
    )
    .await;
}
