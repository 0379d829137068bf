//! Disks: usage per mounted real filesystem (`statvfs`) and I/O rates per whole
//! device (`/proc/diskstats`).

use super::{parse_err, pct, read, CollectError, Collector, Rates, Samples};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Filesystem types that hold no user data: kernel interfaces, memory-backed and
/// container layers. Anything else with a device is a real filesystem.
const VIRTUAL_FS: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "devtmpfs",
    "devpts",
    "overlay",
    "aufs",
    "squashfs",
    "ramfs",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "rpc_pipefs",
    "nsfs",
    "efivarfs",
    "selinuxfs",
    "cgroup",
    "cgroup2",
    "nfsd",
    "iso9660",
    "devfs",
    "none",
    "shm",
    "ns",
];

/// `disk.used_bytes`, `disk.total_bytes`, `disk.used_pct`, `disk.inodes_used_pct`
/// per mount point (label `mount`), read from `<procfs>/mounts`.
///
/// Skips virtual filesystems (above, plus `fuse.*` helpers such as lxcfs/gvfs),
/// bind mounts of a device already reported, mount points that are not
/// directories (a container's bind-mounted `/etc/hosts`) and mounts whose
/// `statvfs` fails (a stale network mount is not worth an error every second).
#[derive(Debug)]
pub struct DiskUsage {
    procfs: PathBuf,
}

impl DiskUsage {
    pub fn new(procfs: &Path) -> Self {
        Self {
            procfs: procfs.to_path_buf(),
        }
    }
}

/// The `statvfs` numbers the usage figures come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FsStats {
    pub frsize: u64,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
}

impl FsStats {
    fn of(path: &str) -> Option<Self> {
        let st = rustix::fs::statvfs(path).ok()?;
        Some(Self {
            frsize: if st.f_frsize > 0 {
                st.f_frsize
            } else {
                st.f_bsize
            },
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
        })
    }

    fn push(&self, mount: &str, out: &mut Samples) {
        let total = self.blocks.saturating_mul(self.frsize);
        let used = self
            .blocks
            .saturating_sub(self.bfree)
            .saturating_mul(self.frsize);
        let avail = self.bavail.saturating_mul(self.frsize);
        let labels = [("mount", mount)];
        out.push_labelled("disk.total_bytes", &labels, total as f64);
        out.push_labelled("disk.used_bytes", &labels, used as f64);
        // As df computes Use%: blocks reserved for root count neither as used nor
        // as available, so a full disk reads 100 % when users can write no more.
        out.push_labelled(
            "disk.used_pct",
            &labels,
            pct(used as f64, (used + avail) as f64),
        );
        // Some filesystems (btrfs, vfat) have no fixed inode table and report 0.
        if self.files > 0 {
            let iused = self.files.saturating_sub(self.ffree);
            out.push_labelled(
                "disk.inodes_used_pct",
                &labels,
                pct(iused as f64, self.files as f64),
            );
        }
    }
}

fn is_real_fs(fstype: &str) -> bool {
    !(VIRTUAL_FS.contains(&fstype) || fstype.starts_with("fuse.") || fstype.starts_with("cgroup"))
}

/// Undoes the octal escapes of `/proc/mounts` (`\040` is a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let n = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(n as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Collector for DiskUsage {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn collect(&mut self, _now: Instant, out: &mut Samples) -> Result<(), CollectError> {
        let text = read(&self.procfs.join("mounts"))
            .or_else(|_| read(&self.procfs.join("self/mounts")))?;
        let mut devices = HashSet::new();
        let mut mounts = HashSet::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [device, mount, fstype, ..] = f[..] else {
                continue;
            };
            if !is_real_fs(fstype) {
                continue;
            }
            let mount = unescape(mount);
            if !mounts.insert(mount.clone()) || !devices.insert(device.to_string()) {
                continue;
            }
            if !Path::new(&mount).is_dir() {
                continue;
            }
            if let Some(st) = FsStats::of(&mount) {
                st.push(&mount, out);
            }
        }
        Ok(())
    }
}

/// `disk.read_bytes_per_s`, `disk.write_bytes_per_s`, `disk.io_ops_per_s` per whole
/// device (label `device`), from `<procfs>/diskstats`. Partitions are skipped (their
/// I/O is in their disk's), and so are loop, ram, zram, floppy, optical and
/// device-mapper devices (dm-* double-counts the disks under it).
#[derive(Debug)]
pub struct DiskIo {
    path: PathBuf,
    rates: Rates,
}

/// diskstats counts sectors of 512 bytes whatever the device's sector size.
const SECTOR: u64 = 512;

impl DiskIo {
    pub fn new(procfs: &Path) -> Self {
        Self {
            path: procfs.join("diskstats"),
            rates: Rates::default(),
        }
    }

    pub fn tracked(&self) -> usize {
        self.rates.len()
    }
}

fn is_whole_disk(name: &str) -> bool {
    const SKIP: &[&str] = &["loop", "ram", "zram", "fd", "sr", "dm-"];
    if SKIP.iter().any(|p| name.starts_with(p)) {
        return false;
    }
    let digits_tail = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits_tail == 0 {
        return true;
    }
    let stem = &name[..name.len() - digits_tail];
    // nvme0n1p2, mmcblk0p1: "p" + digits after a digit.
    if let Some(before_p) = stem.strip_suffix('p') {
        if before_p.ends_with(|c: char| c.is_ascii_digit()) {
            return false;
        }
    }
    // sda1, vdb2, xvda1, hdc3: letters-only disk name + partition number.
    let classic = ["sd", "vd", "xvd", "hd"];
    !classic.iter().any(|p| {
        stem.strip_prefix(p)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase()))
    })
}

impl Collector for DiskIo {
    fn name(&self) -> &'static str {
        "diskio"
    }

    fn collect(&mut self, now: Instant, out: &mut Samples) -> Result<(), CollectError> {
        let text = read(&self.path)?;
        self.rates.begin();
        // "   8       0 sda reads rmerged rsectors rms writes wmerged wsectors wms …"
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 14 || !is_whole_disk(f[2]) {
                continue;
            }
            let num = |i: usize| f[i].parse::<u64>().ok();
            let (Some(reads), Some(rsect), Some(writes), Some(wsect)) =
                (num(3), num(5), num(7), num(9))
            else {
                continue;
            };
            let dev = f[2];
            let labels = [("device", dev)];
            for (name, value) in [
                ("disk.read_bytes_per_s", rsect.saturating_mul(SECTOR)),
                ("disk.write_bytes_per_s", wsect.saturating_mul(SECTOR)),
                ("disk.io_ops_per_s", reads.saturating_add(writes)),
            ] {
                if let Some(r) = self.rates.rate(&format!("{dev}\0{name}"), value, now) {
                    out.push_labelled(name, &labels, r);
                }
            }
        }
        self.rates.finish();
        if text.trim().is_empty() {
            return Err(parse_err(&self.path, "empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture::{close, Proc};
    use std::time::Duration;

    #[test]
    fn usage_figures_like_df() {
        // 4 KiB blocks: 1000 total, 300 free of which 250 available to users.
        let st = FsStats {
            frsize: 4096,
            blocks: 1000,
            bfree: 300,
            bavail: 250,
            files: 200,
            ffree: 150,
        };
        let mut out = Samples::default();
        st.push("/", &mut out);
        let m = out.by_key();
        assert_eq!(m[r#"disk.total_bytes{mount="/"}"#], 4_096_000.0);
        assert_eq!(m[r#"disk.used_bytes{mount="/"}"#], 700.0 * 4096.0);
        close(m[r#"disk.used_pct{mount="/"}"#], 700.0 / 950.0 * 100.0);
        close(m[r#"disk.inodes_used_pct{mount="/"}"#], 25.0);
        let mut out = Samples::default();
        FsStats {
            files: 0,
            ffree: 0,
            ..st
        }
        .push("/", &mut out);
        assert!(!out
            .by_key()
            .contains_key(r#"disk.inodes_used_pct{mount="/"}"#));
    }

    #[test]
    fn only_real_filesystems_once_each() {
        let p = Proc::new();
        let data = tempfile::tempdir().unwrap();
        let real = data.path().to_str().unwrap().to_string();
        let spaced = data.path().join("with space");
        std::fs::create_dir(&spaced).unwrap();
        let file = data.path().join("hosts");
        std::fs::write(&file, "x").unwrap();
        p.write(
            "mounts",
            &format!(
                "overlay / overlay rw,lowerdir=/a 0 0\n\
                 proc /proc proc rw 0 0\n\
                 sysfs /sys sysfs ro 0 0\n\
                 tmpfs /dev tmpfs rw 0 0\n\
                 cgroup2 /sys/fs/cgroup cgroup2 ro 0 0\n\
                 lxcfs /proc/cpuinfo fuse.lxcfs rw 0 0\n\
                 /dev/vda1 {real} ext4 rw,relatime 0 0\n\
                 /dev/vda1 {real}/bind ext4 rw,relatime 0 0\n\
                 /dev/vdc1 {} ext4 rw 0 0\n\
                 /dev/vdb1 {}/with\\040space xfs rw 0 0\n\
                 /dev/vdd1 /does/not/exist ext4 rw 0 0\n",
                file.display(),
                real,
            ),
        );
        let mut out = Samples::default();
        DiskUsage::new(p.root())
            .collect(Instant::now(), &mut out)
            .unwrap();
        let mounts: HashSet<String> = out
            .samples
            .iter()
            .map(|s| s.key.labels["mount"].clone())
            .collect();
        let expected: HashSet<String> = [real.clone(), spaced.to_str().unwrap().to_string()].into();
        assert_eq!(mounts, expected);
        let m = out.by_key();
        let key = |n: &str| format!("{n}{{mount=\"{real}\"}}");
        let st = rustix::fs::statvfs(real.as_str()).unwrap();
        assert_eq!(
            m[&key("disk.total_bytes")],
            (st.f_blocks * st.f_frsize) as f64
        );
        let used_pct = m[&key("disk.used_pct")];
        assert!((0.0..=100.0).contains(&used_pct), "{used_pct}");
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape(r"/mnt/a\040b\011c\134d"), "/mnt/a b\tc\\d");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/odd\04"), r"/odd\04");
    }

    #[test]
    fn whole_disks_only() {
        for whole in ["sda", "vda", "xvdf", "nvme0n1", "mmcblk0", "md0", "sdaa"] {
            assert!(is_whole_disk(whole), "{whole}");
        }
        for part in [
            "sda1",
            "vda15",
            "xvdf1",
            "nvme0n1p2",
            "mmcblk0p1",
            "loop0",
            "ram1",
            "dm-0",
            "sr0",
            "zram0",
        ] {
            assert!(!is_whole_disk(part), "{part}");
        }
    }

    fn diskstats(vda: (u64, u64, u64, u64), extra: bool) -> String {
        let (r, rs, w, ws) = vda;
        let mut s = format!(
            " 253       0 vda {r} 10 {rs} 500 {w} 20 {ws} 900 0 1200 1400 0 0 0 0 0 0\n \
             253       1 vda1 99 0 999 0 99 0 999 0 0 0 0 0 0 0 0 0 0\n   \
             7       0 loop0 5000 0 90000 0 0 0 0 0 0 0 0\n"
        );
        if extra {
            s.push_str(" 259       0 nvme0n1 100 0 800 10 100 0 800 10 0 20 20 0 0 0 0\n");
        }
        s
    }

    #[test]
    fn io_rates_per_whole_device() {
        let p = Proc::new();
        let mut io = DiskIo::new(p.root());
        let t0 = Instant::now();
        let mut out = Samples::default();
        p.write("diskstats", &diskstats((1000, 8000, 2000, 16000), false));
        io.collect(t0, &mut out).unwrap();
        assert!(out.samples.is_empty());
        p.write("diskstats", &diskstats((1100, 10000, 2300, 20000), false));
        io.collect(t0 + Duration::from_secs(2), &mut out).unwrap();
        let m = out.by_key();
        close(
            m[r#"disk.read_bytes_per_s{device="vda"}"#],
            2000.0 * 512.0 / 2.0,
        );
        close(
            m[r#"disk.write_bytes_per_s{device="vda"}"#],
            4000.0 * 512.0 / 2.0,
        );
        close(m[r#"disk.io_ops_per_s{device="vda"}"#], 200.0);
        assert_eq!(m.len(), 3, "partitions and loop devices skipped: {m:?}");
    }

    #[test]
    fn device_reset_and_removal() {
        let p = Proc::new();
        let mut io = DiskIo::new(p.root());
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut out = Samples::default();
        p.write("diskstats", &diskstats((1000, 8000, 2000, 16000), true));
        io.collect(t0, &mut out).unwrap();
        assert_eq!(io.tracked(), 6);
        // vda's counters reset; nvme0n1 detached.
        p.write("diskstats", &diskstats((1, 8, 2, 16), false));
        io.collect(t0 + s, &mut out).unwrap();
        assert!(out.samples.is_empty(), "{:?}", out.by_key());
        assert_eq!(io.tracked(), 3);
        p.write("diskstats", &diskstats((2, 16, 2, 16), true));
        io.collect(t0 + 2 * s, &mut out).unwrap();
        let m = out.by_key();
        close(m[r#"disk.read_bytes_per_s{device="vda"}"#], 8.0 * 512.0);
        assert!(
            !m.keys().any(|k| k.contains("nvme0n1")),
            "nvme0n1 starts fresh: {m:?}"
        );
    }
}
