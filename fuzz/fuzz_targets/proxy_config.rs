//! The proxy's config checker (`divvy_proxy::config::parse`) on arbitrary text, with the proxy's
//! own balancer construction (`divvy_proxy::balancer::build`) behind it:
//!
//! - checking never panics, whatever the text;
//! - a rejected config comes with at least one diagnostic, each pointing inside the text
//!   (1-based line and column, the line at most one past the last);
//! - checking is deterministic;
//! - a config that passes the check builds a balancer for every upstream, since the rest of the
//!   proxy relies on a checked config being usable.
#![no_main]

use libfuzzer_sys::fuzz_target;

use divvy_proxy::{balancer, config};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let result = config::parse(src, "fuzz.toml");
    assert_eq!(
        result,
        config::parse(src, "fuzz.toml"),
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
