//! EC2 detection from DMI (`<sysfs>/class/dmi/id/*`), before any request:
//! on a machine that is not EC2, nothing is ever sent to the link-local
//! metadata address.

use std::path::Path;

/// Whether the DMI tables (and the Xen hypervisor UUID) say this is an EC2
/// instance: `sys_vendor` or `bios_vendor` "Amazon EC2" (Nitro), or a
/// `product_version`/`bios_version` holding "amazon", or a UUID starting
/// with "ec2" (Xen instances). Unreadable files count as absent.
pub fn is_ec2(sysfs: &Path) -> bool {
    let read = |rel: &str| {
        std::fs::read(sysfs.join(rel))
            .ok()
            .map(|b| {
                String::from_utf8_lossy(&b[..b.len().min(256)])
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default()
    };
    let dmi = |f: &str| read(&format!("class/dmi/id/{f}"));
    dmi("sys_vendor") == "amazon ec2"
        || dmi("bios_vendor") == "amazon ec2"
        || dmi("product_version").contains("amazon")
        || dmi("bios_version").contains("amazon")
        || dmi("product_uuid").starts_with("ec2")
        || read("hypervisor/uuid").starts_with("ec2")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    #[test]
    fn nitro_xen_and_others() {
        let nitro = fixture(&[
            ("class/dmi/id/sys_vendor", "Amazon EC2\n"),
            ("class/dmi/id/board_asset_tag", "i-0abc\n"),
        ]);
        assert!(is_ec2(nitro.path()));
        let xen = fixture(&[
            ("class/dmi/id/bios_version", "4.11.amazon\n"),
            ("hypervisor/uuid", "ec2e1916-9099-7caf-fd21-012345abcdef\n"),
        ]);
        assert!(is_ec2(xen.path()));
        let kvm = fixture(&[
            ("class/dmi/id/sys_vendor", "QEMU\n"),
            ("class/dmi/id/product_version", "pc-q35-7.2\n"),
        ]);
        assert!(!is_ec2(kvm.path()));
        let gce = fixture(&[("class/dmi/id/sys_vendor", "Google\n")]);
        assert!(!is_ec2(gce.path()));
        let nothing = tempfile::tempdir().unwrap();
        assert!(!is_ec2(nothing.path()));
        assert!(!is_ec2(Path::new("/nonexistent")));
    }
}
