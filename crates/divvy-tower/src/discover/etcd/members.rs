//! The backends under a prefix as etcd holds them, kept key by key: pure, so that every rule
//! (snapshot, put, delete, malformed value, two keys for one address) is tested without a server.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use divvy::Backend;

use super::record::{self, RecordError};

/// The last good backend of each key, and the set they make.
#[derive(Debug, Default)]
pub(crate) struct Members {
    /// Key → its last good backend. A `BTreeMap` so that "the key that sorts first" is the same
    /// in every instance.
    by_key: BTreeMap<Arc<str>, Backend>,
}

impl Members {
    /// Replaces everything with a snapshot of `(key, value)` pairs. A malformed value keeps the
    /// key's last good backend, as a put of it would: a re-list must not apply what a watch event
    /// would have skipped.
    pub(crate) fn reset<'a>(
        &mut self,
        kvs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        skipped: &mut Vec<RecordError>,
    ) {
        let mut next = BTreeMap::new();
        for (key, value) in kvs {
            let key = key_str(key);
            match record::parse(&key, value) {
                Ok(b) => {
                    next.insert(key, b);
                }
                Err(e) => {
                    if let Some(old) = self.by_key.remove(&key) {
                        next.insert(key, old);
                    }
                    skipped.push(e);
                }
            }
        }
        self.by_key = next;
    }

    /// A put of `value` at `key`: the key's backend is replaced, unless the value is malformed,
    /// which is skipped (the key keeps its last good backend, or stays absent).
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), RecordError> {
        let key = key_str(key);
        let b = record::parse(&key, value)?;
        self.by_key.insert(key, b);
        Ok(())
    }

    /// A delete of `key` (by hand, or by its lease expiring).
    pub(crate) fn delete(&mut self, key: &[u8]) {
        self.by_key.remove(&*key_str(key));
    }

    /// The set, sorted by identity so that every instance builds the same one whatever the order
    /// of the keys. When two keys name the same address, the key that sorts first keeps it and
    /// the other is reported.
    pub(crate) fn set(&self, skipped: &mut Vec<RecordError>) -> Vec<Backend> {
        let mut owner: HashMap<&str, &Arc<str>> = HashMap::with_capacity(self.by_key.len());
        let mut set = Vec::with_capacity(self.by_key.len());
        for (key, b) in &self.by_key {
            if let Some(first) = owner.insert(b.id(), key) {
                owner.insert(b.id(), first);
                skipped.push(RecordError::Duplicate {
                    key: key.clone(),
                    address: b.id_arc().clone(),
                    owner: first.clone(),
                });
                continue;
            }
            set.push(b.clone());
        }
        set.sort_unstable_by(|a, b| a.id().cmp(b.id()));
        set
    }
}

/// How the balancer's set must change to go from one etcd set to the next, one backend at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// A backend left etcd.
    Remove(Arc<str>),
    /// A backend joined, or its record changed.
    Upsert(Backend),
}

/// The changes from `old` to `new`, both sorted by identity (as [`Members::set`] returns them):
/// removals first, then additions and changed records, in identity order.
pub(crate) fn diff(old: &[Backend], new: &[Backend]) -> Vec<Change> {
    let mut changes: Vec<Change> = old
        .iter()
        .filter(|b| new.binary_search_by(|n| n.id().cmp(b.id())).is_err())
        .map(|b| Change::Remove(b.id_arc().clone()))
        .collect();
    for b in new {
        match old.binary_search_by(|o| o.id().cmp(b.id())) {
            Ok(i) if old[i] == *b => {}
            _ => changes.push(Change::Upsert(b.clone())),
        }
    }
    changes
}

/// Applies `changes` to a balancer's set in place: a removal takes the backend out (wherever it
/// is), an upsert replaces the backend of the same identity where it stands or inserts it before
/// the first backend whose identity sorts after it. So a set that only etcd writes stays sorted
/// by identity, the same in every instance, whatever order the changes came in; backends that
/// other code added stay where they are. Returns whether anything changed.
pub(crate) fn apply(set: &mut Vec<Backend>, changes: &[Change]) -> bool {
    let mut changed = false;
    for c in changes {
        match c {
            Change::Remove(id) => {
                if let Some(i) = set.iter().position(|b| b.id() == &**id) {
                    set.remove(i);
                    changed = true;
                }
            }
            Change::Upsert(b) => match set.iter().position(|o| o.id() == b.id()) {
                Some(i) if set[i] == *b => {}
                Some(i) => {
                    set[i] = b.clone();
                    changed = true;
                }
                None => {
                    let at = set
                        .iter()
                        .position(|o| o.id() > b.id())
                        .unwrap_or(set.len());
                    set.insert(at, b.clone());
                    changed = true;
                }
            },
        }
    }
    changed
}

/// A key as text for logs and errors; etcd keys are bytes, shown lossily when not UTF-8.
fn key_str(key: &[u8]) -> Arc<str> {
    String::from_utf8_lossy(key).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use divvy::AdminState;

    fn set(m: &Members) -> (Vec<Backend>, Vec<RecordError>) {
        let mut skipped = Vec::new();
        (m.set(&mut skipped), skipped)
    }

    fn rec(addr: &str) -> String {
        format!(r#"{{"address":"{addr}"}}"#)
    }

    #[test]
    fn the_set_is_sorted_by_address_whatever_the_keys() {
        let mut m = Members::default();
        m.put(b"/p/z", rec("10.0.0.1:80").as_bytes()).unwrap();
        m.put(b"/p/a", rec("10.0.0.3:80").as_bytes()).unwrap();
        m.put(b"/p/m", rec("10.0.0.2:80").as_bytes()).unwrap();
        let (got, skipped) = set(&m);
        let want = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map(Backend::new);
        assert_eq!(got, want);
        assert!(skipped.is_empty());
    }

    #[test]
    fn a_malformed_put_is_skipped_and_the_keys_last_good_backend_stays() {
        let mut m = Members::default();
        m.put(b"/p/a", rec("a:1").as_bytes()).unwrap();
        let err = m.put(b"/p/a", b"{oops").unwrap_err();
        assert!(err.to_string().contains("/p/a"), "{err}");
        assert!(m.put(b"/p/b", b"{oops").is_err());
        assert_eq!(set(&m).0, vec![Backend::new("a:1")]);
        // A snapshot holding the same malformed values changes nothing either.
        let mut skipped = Vec::new();
        m.reset(
            [
                (&b"/p/a"[..], &b"{oops"[..]),
                (b"/p/b", b"{oops"),
                (b"/p/c", br#"{"address":"c:1"}"#),
            ],
            &mut skipped,
        );
        assert_eq!(skipped.len(), 2);
        assert_eq!(set(&m).0, vec![Backend::new("a:1"), Backend::new("c:1")]);
    }

    #[test]
    fn a_snapshot_replaces_everything_and_deletes_remove_keys() {
        let mut m = Members::default();
        m.put(b"/p/a", rec("a:1").as_bytes()).unwrap();
        m.put(b"/p/b", rec("b:1").as_bytes()).unwrap();
        let mut skipped = Vec::new();
        m.reset([(&b"/p/c"[..], rec("c:1").as_bytes())], &mut skipped);
        assert_eq!(set(&m).0, vec![Backend::new("c:1")]);
        m.delete(b"/p/c");
        m.delete(b"/p/never");
        assert_eq!(set(&m).0, vec![]);
    }

    #[test]
    fn a_put_replaces_the_keys_backend() {
        let mut m = Members::default();
        m.put(b"/p/a", rec("a:1").as_bytes()).unwrap();
        m.put(b"/p/a", br#"{"address":"a:1","weight":3,"state":"down"}"#)
            .unwrap();
        assert_eq!(
            set(&m).0,
            vec![Backend::new("a:1").weight(3).state(AdminState::Down)]
        );
    }

    #[test]
    fn applying_the_diff_of_two_sets_turns_the_first_into_the_second() {
        let old = ["a:1", "b:1", "d:1"].map(Backend::new).to_vec();
        let new = vec![
            Backend::new("a:1").weight(2),
            Backend::new("c:1"),
            Backend::new("d:1"),
            Backend::new("e:1"),
        ];
        let changes = diff(&old, &new);
        assert_eq!(
            changes,
            vec![
                Change::Remove("b:1".into()),
                Change::Upsert(Backend::new("a:1").weight(2)),
                Change::Upsert(Backend::new("c:1")),
                Change::Upsert(Backend::new("e:1")),
            ]
        );
        let mut set = old.clone();
        assert!(apply(&mut set, &changes));
        assert_eq!(set, new);
        assert!(!apply(&mut set, &diff(&new, &new)));
    }

    #[test]
    fn changes_keep_a_set_sorted_whatever_order_they_come_in() {
        let mut one = Vec::new();
        let mut other = Vec::new();
        for id in ["m:1", "c:1", "x:1", "a:1"] {
            apply(&mut one, &[Change::Upsert(Backend::new(id))]);
        }
        for id in ["x:1", "a:1", "m:1", "c:1"] {
            apply(&mut other, &[Change::Upsert(Backend::new(id))]);
        }
        assert_eq!(one, other);
        assert_eq!(one, ["a:1", "c:1", "m:1", "x:1"].map(Backend::new));
    }

    #[test]
    fn two_keys_for_one_address_keep_the_first_key_and_report_the_second() {
        let mut m = Members::default();
        m.put(b"/p/b", rec("x:1").as_bytes()).unwrap();
        m.put(b"/p/a", br#"{"address":"x:1","weight":2}"#).unwrap();
        let (got, skipped) = set(&m);
        assert_eq!(got, vec![Backend::new("x:1").weight(2)]);
        assert_eq!(
            skipped,
            vec![RecordError::Duplicate {
                key: "/p/b".into(),
                address: "x:1".into(),
                owner: "/p/a".into()
            }]
        );
    }
}
