//! Backend sets are validated as a whole; a rejected update changes nothing.

use divvy::strategy::{Maglev, RoundRobin};
use divvy::{Backend, Balancer, Context, UpdateError, MAX_WEIGHT};

fn ok_set() -> Vec<Backend> {
    ["10.0.0.1:80", "10.0.0.2:80"].map(Backend::new).to_vec()
}

#[test]
fn every_invalid_set_is_a_typed_error_naming_the_backend() {
    let cases: Vec<(Vec<Backend>, UpdateError, &str)> = vec![
        (
            vec![Backend::new("a"), Backend::new("")],
            UpdateError::EmptyId { index: 1 },
            "backend at position 1 has an empty identity",
        ),
        (
            vec![Backend::new("a"), Backend::new("b"), Backend::new("a")],
            UpdateError::Duplicate {
                id: "a".into(),
                first: 0,
                second: 2,
            },
            "backend `a` appears twice, at positions 0 and 2",
        ),
        (
            vec![Backend::new("a").weight(0)],
            UpdateError::ZeroWeight { id: "a".into() },
            "backend `a`: weight 0 is invalid (weights are 1..=10000)",
        ),
        (
            vec![Backend::new("a").weight(MAX_WEIGHT + 1)],
            UpdateError::WeightTooLarge {
                id: "a".into(),
                weight: MAX_WEIGHT + 1,
            },
            "backend `a`: weight 10001 exceeds the maximum of 10000",
        ),
        (
            vec![Backend::new("a").tier(16)],
            UpdateError::TierTooLarge {
                id: "a".into(),
                tier: 16,
            },
            "backend `a`: tier 16 exceeds the maximum of 15",
        ),
        (
            vec![Backend::new("a").max_in_flight(0)],
            UpdateError::ZeroMaxInFlight { id: "a".into() },
            "backend `a`: max_in_flight 0 is invalid (omit it for no limit)",
        ),
        (
            vec![Backend::new("a").max_in_flight(5_000_000)],
            UpdateError::MaxInFlightTooLarge {
                id: "a".into(),
                max_in_flight: 5_000_000,
            },
            "backend `a`: max_in_flight 5000000 exceeds the maximum of 4194304",
        ),
    ];
    for (set, error, message) in cases {
        let got = divvy::validate(&set).unwrap_err();
        assert_eq!(got, error);
        assert_eq!(got.to_string(), message);
        assert_eq!(Balancer::new(RoundRobin::new(), set).unwrap_err(), error);
    }
}

#[test]
fn the_empty_set_is_valid_and_picks_from_it_fail() {
    assert_eq!(divvy::validate(&[]), Ok(()));
    let lb = Balancer::new(Maglev::new(), ok_set()).unwrap();
    lb.update(Vec::new()).unwrap();
    assert_eq!(
        lb.pick(&Context::new()).unwrap_err(),
        divvy::PickError::NoneAvailable { total: 0 }
    );
    lb.update(ok_set()).unwrap();
    assert!(lb.pick(&Context::new()).is_ok());
}

#[test]
fn a_rejected_update_leaves_the_previous_set_serving() {
    let lb = Balancer::new(RoundRobin::new(), ok_set()).unwrap();
    let held = lb.pick(&Context::new()).unwrap();
    let before = (lb.version(), lb.backends());
    let bad = vec![Backend::new("10.0.0.3:80"), Backend::new("10.0.0.3:80")];
    assert!(matches!(lb.update(bad), Err(UpdateError::Duplicate { .. })));
    assert_eq!((lb.version(), lb.backends()), before);
    assert_eq!(lb.stats().iter().map(|s| s.in_flight).sum::<u32>(), 1);
    drop(held);
    for _ in 0..4 {
        let p = lb.pick(&Context::new()).unwrap();
        assert!(ok_set().iter().any(|b| b.id() == p.id()));
    }
}

#[test]
fn a_set_the_strategy_cannot_serve_is_rejected_and_the_old_one_stays() {
    let lb = Balancer::new(Maglev::with_table_size(7).unwrap(), ok_set()).unwrap();
    let eight: Vec<Backend> = (0..8)
        .map(|i| Backend::new(format!("10.0.1.{i}:80")))
        .collect();
    let err = lb.update(eight).unwrap_err();
    assert!(
        matches!(
            err,
            UpdateError::Strategy {
                strategy: "maglev",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(lb.version(), 0);
    assert_eq!(lb.backends().len(), 2);
}
