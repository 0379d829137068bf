//! The database's disk fills up: writes fail with a disk-full error (never a
//! lock that outlives it), and once space is back writes succeed at once.

use metrolog_protocol::{BatchId, Bucket, Labels, SeriesKey};
use metrolog_server::store::{HostFacts, HostSource, Store};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` on `dir`. `None` only when the operator set
    /// `METROLOG_SKIP_TMPFS=1` (README, "Test it"); otherwise a machine that
    /// cannot mount fails the test, so it never passes without having run.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            _ if std::env::var_os("METROLOG_SKIP_TMPFS").is_some_and(|v| v == "1") => {
                eprintln!("METROLOG_SKIP_TMPFS=1: not run (it needs to mount a tmpfs)");
                None
            }
            Ok(o) => panic!(
                "cannot mount a tmpfs on {} ({}: {}): this test needs root (CAP_SYS_ADMIN); \
                 run it as root or set METROLOG_SKIP_TMPFS=1 to skip it",
                dir.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!(
                "cannot run mount ({e}): install util-linux's mount and run as root, \
                 or set METROLOG_SKIP_TMPFS=1 to skip this test"
            ),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write(&block).is_ok_and(|n| n > 0) {}
    while f.write(&block[..512]).is_ok_and(|n| n > 0) {}
}

#[tokio::test]
async fn writes_fail_as_disk_full_then_work_again_once_space_is_freed() {
    let mnt = tempfile::tempdir().unwrap();
    let Some(_fs) = Tmpfs::mount(mnt.path(), "8m") else {
        return;
    };
    let url = format!("sqlite://{}", mnt.path().join("m.db").display());
    let store = Arc::new(Store::open(&url).await.unwrap());
    let host = store
        .upsert_host(
            &HostFacts {
                hostname: "web-1".into(),
                instance_id: None,
                group: Some("web".into()),
                labels: Labels::new(),
                agent_version: None,
            },
            HostSource::Agent,
        )
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp() / 10 * 10 - 3000;
    let batch = |seq: u64| {
        let series: Vec<(SeriesKey, Vec<Bucket>)> = (0..50)
            .map(|i| {
                (
                    SeriesKey::new(&format!("s.n{i}"), Labels::new()).unwrap(),
                    vec![Bucket {
                        ts: now + seq as i64 * 10,
                        avg: 1.0,
                        min: 1.0,
                        max: 1.0,
                        last: 1.0,
                        count: 10,
                    }],
                )
            })
            .collect();
        (
            BatchId {
                stream: "s".into(),
                seq,
            },
            series,
        )
    };
    let (id, s) = batch(1);
    store
        .commit_batch(host, &id, s, Arc::new(Vec::new()), Vec::new())
        .await
        .unwrap();
    let filler = mnt.path().join("filler");
    fill(&filler);
    let mut full_errors = 0;
    let mut seq = 2;
    for _ in 0..200 {
        let (id, s) = batch(seq);
        match store
            .commit_batch(host, &id, s, Arc::new(Vec::new()), Vec::new())
            .await
        {
            Ok(_) => seq += 1,
            Err(e) => {
                assert!(e.is_disk_full(), "a clear disk-full error, got: {e}");
                full_errors += 1;
            }
        }
        if store.touch_host(host).await.is_err() {
            full_errors += 1;
        }
        if let Err(e) = store.flush_archives().await {
            assert!(e.is_disk_full(), "flush: {e}");
        }
        if full_errors > 20 {
            break;
        }
    }
    assert!(full_errors > 0, "the disk never looked full");
    std::fs::remove_file(&filler).unwrap();
    let t = Instant::now();
    store.touch_host(host).await.unwrap();
    let (id, s) = batch(seq);
    store
        .commit_batch(host, &id, s, Arc::new(Vec::new()), Vec::new())
        .await
        .unwrap();
    store.flush_archives().await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "writes waited {:?} for a lock left behind by the failures",
        t.elapsed()
    );
}
