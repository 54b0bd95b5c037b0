//! Sets the `nginx_missing` cfg when no nginx binary is installed, so that the nginx differential
//! tests (`tests/nginx_compat`) show as ignored in the test summary instead of passing without
//! comparing anything. The library itself never reads the cfg.

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(nginx_missing)");
    // Look again when PATH changes or a package lands in /usr/sbin (where Debian puts nginx).
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-changed=build.rs");
    if std::path::Path::new("/usr/sbin").is_dir() {
        println!("cargo::rerun-if-changed=/usr/sbin");
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let found = on_path
        .into_iter()
        .map(|dir| dir.join("nginx"))
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .any(|p| p.is_file());
    if !found {
        println!("cargo::rustc-cfg=nginx_missing");
    }
}
