//! `perstack log --verify [<archive>] [--job <id>]` and `perstack log --job <id> --export
//! <file>`: check jobs against their chains (see `storage::chain`), or write a job's audit
//! archive. Exit 1 when anything was tampered with, 0 otherwise (a crash cut and an unchained
//! job included), 2 for usage errors.
//!
//! The trusted key: `--key <hex>` when given; for a job on disk, else the key in the user's
//! configuration directory when there is one; for an archive, else the key the archive names
//! (printed, to compare with what the signer published).

use std::path::Path;

use crate::storage::FsStorage;
use crate::storage::chain::{self, Report};

use super::{LogArgs, LogError, emit, storage_path};

/// Runs `--verify` or `--export` when asked; `None` leaves the command to the listing.
pub(super) async fn execute(args: &LogArgs) -> Option<Result<u8, LogError>> {
    if let Some(file) = &args.export {
        return Some(export(args, file).await);
    }
    let target = args.verify.as_ref()?;
    Some(match target {
        Some(archive) => verify_archive(archive, args.key.as_deref()),
        None => verify_store(args).await,
    })
}

async fn export(args: &LogArgs, file: &Path) -> Result<u8, LogError> {
    let Some(job) = args.job.clone() else {
        return Err(LogError::Usage(
            "--export writes one job: add --job <jobId>".into(),
        ));
    };
    let store = FsStorage::new(storage_path()?);
    let dir = store.job_path(&job)?;
    if !dir.is_dir() {
        return Err(LogError::Usage(format!(
            "no job {job:?} in {}",
            store.base().display()
        )));
    }
    let archive = blocking(move || chain::export_job(&job, &dir)).await??;
    std::fs::write(file, archive)
        .map_err(|e| LogError::Usage(format!("cannot write {}: {e}", file.display())))?;
    emit(&format!("exported to {}\n", file.display()))?;
    Ok(0)
}

async fn verify_store(args: &LogArgs) -> Result<u8, LogError> {
    let store = FsStorage::new(storage_path()?);
    let trusted = match &args.key {
        Some(key) => Some(key.clone()),
        None => local_public_key(),
    };
    let jobs = match &args.job {
        Some(job) => vec![job.clone()],
        None => store.job_ids()?,
    };
    if jobs.is_empty() {
        emit("No data found\n")?;
        return Ok(0);
    }
    let mut dirs = Vec::new();
    for job in jobs {
        let dir = store.job_path(&job)?;
        if !dir.is_dir() {
            return Err(LogError::Usage(format!(
                "no job {job:?} in {}",
                store.base().display()
            )));
        }
        dirs.push((job, dir));
    }
    let reports = blocking(move || {
        dirs.iter()
            .map(|(job, dir)| {
                chain::load_dir(job, dir).map(|f| chain::verify(&f, trusted.as_deref()))
            })
            .collect::<Result<Vec<Report>, _>>()
    })
    .await??;
    print(&reports)
}

fn verify_archive(archive: &Path, key: Option<&str>) -> Result<u8, LogError> {
    let bytes = std::fs::read(archive)
        .map_err(|e| LogError::Usage(format!("cannot read {}: {e}", archive.display())))?;
    let (files, named) = match chain::import_archive(&bytes) {
        Ok(imported) => imported,
        Err(e) => {
            emit(&format!(
                "{}: TAMPERED or not an archive: {e}\n",
                archive.display()
            ))?;
            return Ok(1);
        }
    };
    let trusted = key.map(str::to_owned).or(named);
    print(&[chain::verify(&files, trusted.as_deref())])
}

fn print(reports: &[Report]) -> Result<u8, LogError> {
    let mut text = String::new();
    for report in reports {
        text.push_str(&format!("{report}\n"));
    }
    emit(&text)?;
    Ok(u8::from(reports.iter().any(Report::tampered)))
}

/// The public half of this user's chain key, if there is one (verification never creates it).
fn local_public_key() -> Option<String> {
    chain::local_public_key()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LogError::Usage(format!("verification task failed: {e}")))
}
