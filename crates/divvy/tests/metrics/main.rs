//! The Prometheus exposition of a balancer's metrics, after traffic, read back with a real
//! parser (`prometheus-parse`).

use std::time::Duration;

use divvy::strategy::RoundRobin;
use divvy::{Backend, Balancer, Context, HealthConfig, Outcome};
use prometheus_client::registry::Registry;
use prometheus_parse::{Scrape, Value};

/// A backend identity with every character the text format must escape in a label value.
const WEIRD: &str = "we\"ird\\back\nslash";

fn scrape(registry: &Registry) -> (String, Scrape) {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    (text.clone(), Scrape::parse(lines).unwrap())
}

/// Undoes the text format's escaping of a label value (`\\`, `\"`, `\n`).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn value(v: &Value) -> f64 {
    match v {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("a single value, not {other:?}"),
    }
}

/// The value of `metric` for `backend` (and `extra` label, if any).
fn sample(s: &Scrape, metric: &str, backend: &str, extra: Option<(&str, &str)>) -> f64 {
    let found: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.metric == metric)
        .filter(|x| x.labels.get("backend").map(unescape).as_deref() == Some(backend))
        .filter(|x| x.labels.get("upstream") == Some("web"))
        .filter(|x| extra.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
        .collect();
    assert_eq!(found.len(), 1, "{metric} {backend:?} {extra:?}: {found:?}");
    value(&found[0].value)
}

#[test]
fn the_exposition_after_traffic_parses_and_counts_every_pick_outcome_and_ejection() {
    let mut b = Balancer::builder(RoundRobin::new());
    b.health(HealthConfig::builder().panic_threshold(0).build());
    let lb = b.build([Backend::new("a"), Backend::new(WEIRD)]).unwrap();
    let mut registry = Registry::default();
    lb.register_metrics(&mut registry, "web");

    // Five picks each; `a` answers in 20 ms, the other in 2 s and then fails once, which ejects
    // it under nginx's default rule (max_fails = 1), the path issue 13 found uncounted.
    let held = lb.pick(&Context::new()).unwrap();
    assert_eq!(held.id(), "a");
    for _ in 0..8 {
        let p = lb.pick(&Context::new()).unwrap();
        let latency = if p.id() == "a" { 20 } else { 2_000 };
        p.record(Outcome::Success, Some(Duration::from_millis(latency)));
    }
    let p = lb.pick(&Context::new()).unwrap();
    assert_eq!(p.id(), WEIRD);
    p.record(Outcome::Failure, Some(Duration::from_millis(2_000)));

    let (text, s) = scrape(&registry);
    assert!(
        text.contains(r#"backend="we\"ird\\back\nslash""#),
        "the identity is escaped: {text}"
    );
    for (id, picks, ok, failed) in [("a", 5.0, 4.0, 0.0), (WEIRD, 5.0, 4.0, 1.0)] {
        assert_eq!(sample(&s, "divvy_backend_picks_total", id, None), picks);
        let outcome = |o| sample(&s, "divvy_backend_outcomes_total", id, Some(("outcome", o)));
        assert_eq!((outcome("success"), outcome("failure")), (ok, failed));
    }
    assert_eq!(sample(&s, "divvy_backend_in_flight", "a", None), 1.0);
    let ejections = |id, rule| {
        sample(
            &s,
            "divvy_backend_ejections_total",
            id,
            Some(("rule", rule)),
        )
    };
    assert_eq!(ejections(WEIRD, "max_fails"), 1.0);
    assert_eq!(ejections(WEIRD, "consecutive_failures"), 0.0);
    assert_eq!(ejections("a", "max_fails"), 0.0);
    let health = |id, state| sample(&s, "divvy_backend_health", id, Some(("state", state)));
    assert_eq!(
        (health(WEIRD, "ejected"), health(WEIRD, "healthy")),
        (1.0, 0.0)
    );
    assert_eq!((health("a", "ejected"), health("a", "healthy")), (0.0, 1.0));
    assert_eq!(sample(&s, "divvy_backend_available", WEIRD, None), 0.0);

    // The latency histogram: `a`'s four samples in the 25 ms bucket, the other's five past 1 s.
    let hist: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.metric == "divvy_backend_latency_seconds")
        .collect();
    assert_eq!(hist.len(), 2, "{hist:?}");
    for h in hist {
        let id = unescape(h.labels.get("backend").unwrap());
        let Value::Histogram(buckets) = &h.value else {
            panic!("a histogram: {h:?}")
        };
        let at = |le: f64| buckets.iter().find(|b| b.less_than == le).unwrap().count;
        if id == "a" {
            assert_eq!((at(0.01), at(0.025), at(f64::INFINITY)), (0.0, 4.0, 4.0));
        } else {
            assert_eq!(id, WEIRD);
            assert_eq!((at(1.0), at(2.5), at(f64::INFINITY)), (0.0, 5.0, 5.0));
        }
    }
    drop(held);
}
