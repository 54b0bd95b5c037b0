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
