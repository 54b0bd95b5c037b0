//! The JSON value of one backend's key, and its reading into a [`Backend`].

use std::sync::Arc;

use divvy::{AdminState, Backend, UpdateError};
use serde::{Deserialize, Serialize};

/// One backend as stored in etcd: the value of its key under the watched prefix, in JSON.
///
/// ```json
/// {"address": "10.0.0.7:8080", "weight": 2, "tier": 0, "zone": "eu-west-1a",
///  "state": "up", "max_in_flight": 100}
/// ```
///
/// Only `address` is required; the others default as a [`Backend`] does (weight 1, tier 0, no
/// zone, `up`, no limit). Fields divvy does not know are ignored, so that a newer writer's record
/// is still read. `state` is `"up"`, `"drain"` or `"down"` (nginx's `down`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Record {
    /// The backend's identity: its address (`10.0.0.7:8080`, `web-1.internal:8080`), the string
    /// hashed by hashing strategies.
    pub address: String,
    /// Its weight, 1..=[`MAX_WEIGHT`](divvy::MAX_WEIGHT). Default 1.
    #[serde(default = "one")]
    pub weight: u32,
    /// Its priority tier (0 = primary, 1 = backup, …). Default 0.
    #[serde(default)]
    pub tier: u8,
    /// Its zone label. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// What the operator says of it. Default `up`.
    #[serde(default, with = "state")]
    pub state: AdminState,
    /// Its limit of requests in flight (nginx's `max_conns`). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
}

fn one() -> u32 {
    1
}

impl Record {
    /// A record for `address`, weight 1, tier 0, no zone, `up`, no limit.
    pub fn new(address: impl Into<String>) -> Self {
        Record {
            address: address.into(),
            weight: 1,
            tier: 0,
            zone: None,
            state: AdminState::Up,
            max_in_flight: None,
        }
    }

    /// The record of a backend: its identity as the address, and its settings.
    pub fn from_backend(b: &Backend) -> Self {
        Record {
            address: b.id().to_owned(),
            weight: b.get_weight(),
            tier: b.get_tier(),
            zone: b.get_zone().map(str::to_owned),
            state: b.get_state(),
            max_in_flight: b.get_max_in_flight(),
        }
    }

    /// The backend this record describes, checked as the balancer checks a set's members.
    ///
    /// # Errors
    ///
    /// The [`UpdateError`] naming the first invalid field: an empty address, a weight of 0 or
    /// above the maximum, a tier too large, a zero or too large `max_in_flight`.
    pub fn to_backend(&self) -> Result<Backend, UpdateError> {
        let mut b = Backend::new(self.address.as_str())
            .weight(self.weight)
            .tier(self.tier)
            .state(self.state);
        if let Some(zone) = &self.zone {
            b = b.zone(zone.as_str());
        }
        if let Some(limit) = self.max_in_flight {
            b = b.max_in_flight(limit);
        }
        divvy::validate(std::slice::from_ref(&b))?;
        Ok(b)
    }

    /// The record as the JSON value to store.
    pub fn to_json(&self) -> String {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why a key's value was skipped: the last good record of that key (if any) keeps serving.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The value is not a JSON backend record (bad JSON, a missing `address`, a field of the wrong
    /// type, an unknown `state`).
    #[error("key `{key}`: the value is not a backend record: {reason}")]
    Json {
        /// The etcd key.
        key: Arc<str>,
        /// What the JSON parser said.
        reason: String,
    },
    /// The record is well formed but describes an invalid backend.
    #[error("key `{key}`: {source}")]
    Invalid {
        /// The etcd key.
        key: Arc<str>,
        /// What is wrong with it.
        #[source]
        source: UpdateError,
    },
    /// Another key already holds a backend with this address; the key that sorts first wins.
    #[error("key `{key}`: address `{address}` is already the backend of key `{owner}`")]
    Duplicate {
        /// The etcd key skipped.
        key: Arc<str>,
        /// The address both keys name.
        address: Arc<str>,
        /// The key that keeps it.
        owner: Arc<str>,
    },
}

/// Reads the value of `key` into a backend.
pub(crate) fn parse(key: &Arc<str>, value: &[u8]) -> Result<Backend, RecordError> {
    let record: Record = serde_json::from_slice(value).map_err(|e| RecordError::Json {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    record.to_backend().map_err(|source| RecordError::Invalid {
        key: key.clone(),
        source,
    })
}

/// `AdminState` as the lower-case words the rest of divvy prints.
mod state {
    use divvy::AdminState;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(s: &AdminState, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<AdminState, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(de)?;
        match &*s {
            "up" => Ok(AdminState::Up),
            "drain" => Ok(AdminState::Drain),
            "down" => Ok(AdminState::Down),
            other => Err(D::Error::custom(format!(
                "unknown state `{other}`, expected `up`, `drain` or `down`"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<str> {
        "/divvy/web/a".into()
    }

    #[test]
    fn a_full_record_reads_into_the_backend_it_describes() {
        let v = br#"{"address":"10.0.0.7:8080","weight":2,"tier":1,"zone":"eu-1","state":"drain","max_in_flight":100,"future":true}"#;
        let want = Backend::new("10.0.0.7:8080")
            .weight(2)
            .tier(1)
            .zone("eu-1")
            .state(AdminState::Drain)
            .max_in_flight(100);
        assert_eq!(parse(&key(), v), Ok(want));
    }

    #[test]
    fn only_the_address_is_required() {
        assert_eq!(
            parse(&key(), br#"{"address":"a:1"}"#),
            Ok(Backend::new("a:1"))
        );
    }

    #[test]
    fn a_record_round_trips_through_its_json() {
        let b = Backend::new("a:1")
            .weight(3)
            .zone("z")
            .state(AdminState::Down);
        let json = Record::from_backend(&b).to_json();
        assert_eq!(parse(&key(), json.as_bytes()), Ok(b));
        assert_eq!(
            Record::new("a:1").to_json(),
            r#"{"address":"a:1","weight":1,"tier":0,"state":"up"}"#
        );
    }

    #[test]
    fn malformed_values_are_errors_naming_the_key_and_the_problem() {
        for (value, says) in [
            (&b"not json"[..], "expected"),
            (br#"{"weight":2}"#, "missing field `address`"),
            (br#"{"address":"a:1","weight":"x"}"#, "invalid type"),
            (
                br#"{"address":"a:1","state":"sleepy"}"#,
                "unknown state `sleepy`",
            ),
        ] {
            let err = parse(&key(), value).unwrap_err();
            assert!(matches!(err, RecordError::Json { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains("/divvy/web/a") && msg.contains(says), "{msg}");
        }
        for (value, says) in [
            (&br#"{"address":""}"#[..], "empty identity"),
            (br#"{"address":"a:1","weight":0}"#, "weight 0"),
            (br#"{"address":"a:1","tier":200}"#, "tier 200"),
            (br#"{"address":"a:1","max_in_flight":0}"#, "max_in_flight 0"),
        ] {
            let err = parse(&key(), value).unwrap_err();
            assert!(matches!(err, RecordError::Invalid { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains("/divvy/web/a") && msg.contains(says), "{msg}");
        }
    }
}
