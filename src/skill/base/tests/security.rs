//! Escape attempts against the file tools (RELIABILITY.md check 26): `..`, absolute paths,
//! `~`, symlinks from inside to outside (as the last or a middle component, dangling), the
//! `perstack/` directory directly, through a symlink alias and in other letter cases, the
//! workspace root, special files, and a symlink flipped while reads run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::super::read_inline_file;
use super::{Fixture, symlink};

/// Every file tool call that takes `path`, with the arguments it needs besides.
fn path_calls(path: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("readTextFile", json!({"path": path})),
        ("writeTextFile", json!({"path": path, "text": "pwned"})),
        ("appendTextFile", json!({"path": path, "text": "pwned"})),
        (
            "editTextFile",
            json!({"path": path, "oldText": "secret", "newText": "pwned"}),
        ),
        ("deleteFile", json!({"path": path})),
        ("getFileInfo", json!({"path": path})),
        ("readImageFile", json!({"path": path})),
        ("readPdfFile", json!({"path": path})),
        ("listDirectory", json!({"path": path})),
        ("createDirectory", json!({"path": path})),
        ("deleteDirectory", json!({"path": path, "recursive": true})),
        ("moveFile", json!({"source": path, "destination": "moved"})),
        (
            "moveFile",
            json!({"source": "bait.txt", "destination": path}),
        ),
        (
            "exec",
            json!({"command": "true", "args": [], "env": {}, "cwd": path, "stdout": true, "stderr": true}),
        ),
    ]
}

/// Asserts every tool refuses `path` with `needle` in the message, and that the outside
/// directory still holds exactly `secret.txt` (unchanged) and `sub/`.
async fn all_refuse(f: &Fixture, path: &str, needle: &str) {
    for (tool, args) in path_calls(path) {
        f.refused(tool, args, needle).await;
    }
    assert_outside_untouched(f);
    assert!(f.at("bait.txt").exists(), "bait moved for {path}");
    assert!(!f.at("moved").exists());
}

fn assert_outside_untouched(f: &Fixture) {
    assert_eq!(
        std::fs::read_to_string(f.out("secret.txt")).unwrap(),
        "secret"
    );
    let mut names: Vec<_> = std::fs::read_dir(&f.outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["secret.txt", "sub"]);
    assert_eq!(std::fs::read_dir(f.out("sub")).unwrap().count(), 0);
}

async fn fixture() -> Fixture {
    let f = Fixture::new().await;
    std::fs::write(f.out("secret.txt"), "secret").unwrap();
    std::fs::create_dir(f.out("sub")).unwrap();
    f.write("bait.txt", "bait");
    f
}

#[tokio::test]
async fn dot_dot_absolute_and_home_paths_outside_are_refused() {
    let f = fixture().await;
    let name = f.outside.file_name().unwrap().to_str().unwrap().to_owned();
    let cases = [
        format!("../{name}/secret.txt"),
        format!("a/../../{name}/secret.txt"),
        f.out("secret.txt").display().to_string(),
        f.out("sub").display().to_string(),
        f.out("sub/new.txt").display().to_string(),
        "~/secret.txt".to_owned(),
        "~/sub".to_owned(),
        "~".to_owned(),
        "/etc/passwd".to_owned(),
        "..".to_owned(),
        "/".to_owned(),
    ];
    for path in &cases {
        all_refuse(&f, path, "Access denied").await;
    }
}

#[tokio::test]
async fn dot_dot_through_a_missing_directory_is_refused() {
    let f = fixture().await;
    all_refuse(&f, "missing/../../x", "Access denied").await;
    assert!(!f.at("missing").exists());
}

#[tokio::test]
async fn nul_and_overlong_paths_are_refused_without_echoing_them_whole() {
    let f = fixture().await;
    all_refuse(&f, "a\0b", "NUL").await;
    let long = "x".repeat(5000);
    for (tool, args) in path_calls(&long) {
        let v = f.call(tool, args).await;
        assert_eq!(v["error"], "Error", "{tool}");
        assert!(v["message"].as_str().unwrap().len() < 400, "{tool}");
    }
    assert_outside_untouched(&f);
}

#[tokio::test]
async fn a_symlink_inside_pointing_outside_is_refused_for_everything() {
    let f = fixture().await;
    symlink(&f.out("secret.txt"), &f.at("link.txt"));
    all_refuse(&f, "link.txt", "Access denied").await;
    assert!(std::fs::symlink_metadata(f.at("link.txt")).is_ok());
    symlink(&f.out("sub"), &f.at("dirlink"));
    all_refuse(&f, "dirlink", "Access denied").await;
    // A middle component.
    all_refuse(&f, "dirlink/new.txt", "Access denied").await;
    symlink(&f.outside, &f.at("outlink"));
    all_refuse(&f, "outlink/secret.txt", "Access denied").await;
    // readImageFile's inliner too.
    std::fs::write(f.out("pic.png"), b"png").unwrap();
    symlink(&f.out("pic.png"), &f.at("pic.png"));
    f.refused("readImageFile", json!({"path": "pic.png"}), "Access denied")
        .await;
    assert!(read_inline_file(&f.root, "pic.png").is_err());
    std::fs::remove_file(f.out("pic.png")).unwrap();
}

#[tokio::test]
async fn a_dangling_symlink_is_never_written_through() {
    let f = fixture().await;
    symlink(&f.out("created-by-link.txt"), &f.at("dangling"));
    symlink(&f.out("newdir/x"), &f.at("dangling-dir"));
    for (tool, args) in [
        ("writeTextFile", json!({"path": "dangling", "text": "x"})),
        ("appendTextFile", json!({"path": "dangling", "text": "x"})),
        (
            "writeTextFile",
            json!({"path": "dangling-dir/f", "text": "x"}),
        ),
        ("createDirectory", json!({"path": "dangling-dir/d"})),
        (
            "moveFile",
            json!({"source": "bait.txt", "destination": "dangling"}),
        ),
    ] {
        let v = f.call(tool, args.clone()).await;
        assert_eq!(v["error"], "Error", "{tool} {args}: {v}");
    }
    assert_outside_untouched(&f);
    assert!(f.at("bait.txt").exists());
}

#[tokio::test]
async fn in_workspace_symlinks_are_followed_for_reads_but_never_written_through() {
    let f = fixture().await;
    let target = f.write("target.txt", "inside");
    symlink(&target, &f.at("link.txt"));
    assert_eq!(
        f.call("readTextFile", json!({"path": "link.txt"})).await["content"],
        "inside"
    );
    f.refused(
        "writeTextFile",
        json!({"path": "link.txt", "text": "x"}),
        "symbolic link",
    )
    .await;
    f.refused(
        "editTextFile",
        json!({"path": "link.txt", "oldText": "inside", "newText": "x"}),
        "symbolic link",
    )
    .await;
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "inside");
}

#[tokio::test]
async fn the_perstack_directory_is_unreachable_in_every_spelling() {
    let f = fixture().await;
    f.write("perstack/jobs/job.json", "secret");
    std::fs::create_dir(f.at("d")).unwrap();
    let absolute = f.at("perstack/jobs/job.json").display().to_string();
    for path in [
        "perstack",
        "perstack/jobs/job.json",
        "perstack/jobs",
        "perstack/new.txt",
        "Perstack/jobs/job.json",
        "PERSTACK/new.txt",
        "pErStAcK",
        "./perstack/../perstack/jobs/job.json",
        "d/../perstack/jobs/job.json",
        &absolute,
    ] {
        all_refuse(&f, path, "perstack directory is not allowed").await;
    }
    // Through a symlink alias, in any position.
    symlink(&f.at("perstack"), &f.at("alias"));
    symlink(&f.at("perstack/jobs/job.json"), &f.at("job-link.json"));
    for path in [
        "alias",
        "alias/jobs/job.json",
        "alias/new.txt",
        "job-link.json",
    ] {
        all_refuse(&f, path, "perstack directory is not allowed").await;
    }
    assert_eq!(
        std::fs::read_to_string(f.at("perstack/jobs/job.json")).unwrap(),
        "secret"
    );
    assert_eq!(std::fs::read_dir(f.at("perstack")).unwrap().count(), 1);
    assert!(!f.at("Perstack").exists() && !f.at("PERSTACK").exists());
    // Nor can anything be moved into it.
    f.refused(
        "moveFile",
        json!({"source": "bait.txt", "destination": "alias/bait.txt"}),
        "perstack",
    )
    .await;
    // And the listing of the root shows no trace of it (the alias is hidden too).
    let listing = f.call("listDirectory", json!({"path": "."})).await;
    let names: Vec<_> = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["bait.txt", "d"]);
}

#[tokio::test]
async fn the_workspace_root_can_be_neither_deleted_nor_moved() {
    let f = fixture().await;
    let root = f.root.display().to_string();
    for path in [".", "", "./", &root, "sub/..", "bait.txt/.."] {
        f.refused(
            "deleteDirectory",
            json!({"path": path, "recursive": true}),
            "",
        )
        .await;
        f.refused(
            "moveFile",
            json!({"source": path, "destination": "elsewhere"}),
            "",
        )
        .await;
    }
    assert!(f.at("bait.txt").exists());
    f.refused(
        "deleteDirectory",
        json!({"path": ".", "recursive": true}),
        "the workspace root cannot be deleted",
    )
    .await;
    f.refused(
        "moveFile",
        json!({"source": ".", "destination": "x"}),
        "the workspace root cannot be moved",
    )
    .await;
}

#[tokio::test]
async fn special_files_are_refused_without_blocking() {
    let f = fixture().await;
    let status = std::process::Command::new("mkfifo")
        .arg(f.at("fifo"))
        .status()
        .unwrap();
    assert!(status.success());
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        f.call("readTextFile", json!({"path": "fifo"})),
    )
    .await
    .unwrap();
    assert_eq!(read["error"], "Error", "{read}");
    let write = tokio::time::timeout(
        Duration::from_secs(5),
        f.call("writeTextFile", json!({"path": "fifo", "text": "x"})),
    )
    .await
    .unwrap();
    assert_eq!(write["error"], "Error", "{write}");
    // /dev/zero through a symlink is outside the workspace.
    symlink(std::path::Path::new("/dev/zero"), &f.at("zero"));
    f.refused("readTextFile", json!({"path": "zero"}), "Access denied")
        .await;
}

/// A thread flips `link` between a file inside and the secret outside, `dlink` between a
/// directory inside and the outside, and `swap` between a real directory and a symlink to the
/// outside, while reads through all three run: no read may ever see the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_flipped_during_reads_never_exposes_the_secret() {
    let f = fixture().await;
    let inside = f.write("in.txt", "inside");
    f.write("real/in.txt", "inside");
    f.write("swap/in.txt", "inside");
    let (link, dir_link) = (f.at("link"), f.at("dlink"));
    symlink(&inside, &link);
    symlink(&f.at("real"), &dir_link);
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let stop = Arc::clone(&stop);
        let (root, outside) = (f.root.clone(), f.outside.clone());
        std::thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (file_target, dir_target) = if flips.is_multiple_of(2) {
                    (outside.join("secret.txt"), outside.clone())
                } else {
                    (root.join("in.txt"), root.join("real"))
                };
                let _ = std::fs::remove_file(root.join("tmp-link"));
                let _ = std::os::unix::fs::symlink(&file_target, root.join("tmp-link"));
                let _ = std::fs::rename(root.join("tmp-link"), root.join("link"));
                let _ = std::fs::remove_file(root.join("tmp-dlink"));
                let _ = std::os::unix::fs::symlink(&dir_target, root.join("tmp-dlink"));
                let _ = std::fs::rename(root.join("tmp-dlink"), root.join("dlink"));
                // `swap` alternates between a real directory and a symlink to the outside:
                // a path checked while it is real must not be opened once it is a link.
                if flips.is_multiple_of(2) {
                    let _ = std::fs::rename(root.join("swap"), root.join("swap-real"));
                    let _ = std::os::unix::fs::symlink(&outside, root.join("swap"));
                } else {
                    let _ = std::fs::remove_file(root.join("swap"));
                    let _ = std::fs::rename(root.join("swap-real"), root.join("swap"));
                }
                flips += 1;
            }
            flips
        })
    };
    std::fs::rename(f.out("secret.txt"), f.out("in.txt")).unwrap();
    std::fs::write(f.out("secret.txt"), "secret").unwrap();
    let (mut inside_reads, mut refusals) = (0, 0);
    for i in 0..3000 {
        let path = ["link", "dlink/in.txt", "swap/in.txt"][i % 3];
        let v = f.call("readTextFile", json!({"path": path})).await;
        let text = v.to_string();
        assert!(!text.contains("secret\""), "read the secret: {text}");
        if v["content"] == "inside" {
            inside_reads += 1;
        } else {
            refusals += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    println!("flips: {flips}, inside reads: {inside_reads}, refusals: {refusals}");
    assert!(flips > 100);
}
