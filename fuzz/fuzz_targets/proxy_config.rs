//! The proxy example's config checker (`examples/proxy/check.rs`) on arbitrary text, with the
//! proxy's own balancer construction (`examples/proxy/balancer.rs`) behind it:
//!
//! - checking never panics, whatever the text;
//! - a rejected config comes with at least one diagnostic, each pointing inside the text
//!   (1-based line and column, the line at most one past the last);
//! - checking is deterministic;
//! - a config that passes the check builds a balancer for every upstream, since the rest of the
//!   proxy relies on a checked config being usable.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The proxy's own files, compiled as they are: `check` refers to `crate::config` and
// `balancer` to `crate::config` as well, which these module names provide.
#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/proxy/config.rs"]
mod config;

#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/proxy/check.rs"]
mod check;

#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/proxy/balancer.rs"]
mod balancer;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let result = check::parse(src, "fuzz.toml");
    assert_eq!(
        result,
        check::parse(src, "fuzz.toml"),
        "checking is not deterministic"
    );
    match result {
        Err(diags) => {
            assert!(!diags.is_empty(), "rejected without a diagnostic");
            let lines = src.lines().count().max(1);
            for d in &diags {
                assert!(
                    d.line >= 1 && d.line <= lines + 1 && d.column >= 1,
                    "diagnostic outside the text ({lines} lines): {d:?}"
                );
                assert!(!d.message.is_empty(), "empty message: {d:?}");
            }
        }
        Ok(config) => {
            for up in &config.upstreams {
                if let Err(e) = balancer::build(up) {
                    panic!("checked upstream {} does not build: {e}\n{up:?}", up.name);
                }
            }
        }
    }
});
