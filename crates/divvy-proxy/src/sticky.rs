//! Request keys: the sticky cookie and the hash key of `strategy = "hash"`, read with
//! divvy-tower's extractors so that the proxy and the tower middleware agree byte for byte.
//!
//! The sticky cookie carries the chosen backend's [`Backend::key`](divvy::Backend::key) as 16 hex
//! digits ([`StickyCookie`]): an opaque, stable token that names the backend in every proxy
//! instance (and every divvy-tower service) without revealing its address.

use std::net::IpAddr;

use divvy::Backend;
use divvy_tower::extract::{
    CookieKey, Extract, HeaderKey, PathAndQueryKey, QueryKey, StickyCookie,
};
use http::header::HeaderValue;
use http::Request;

use crate::config::{self, HashKey};

/// The request keys one upstream reads, built once from its config.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    hash: Option<HashReader>,
    sticky: Option<StickyCookie>,
}

#[derive(Clone, Debug)]
enum HashReader {
    Header(HeaderKey),
    Cookie(CookieKey),
    Query(QueryKey),
    Uri,
    /// The client's address as text, as nginx's `hash $remote_addr`.
    ClientIp,
}

impl Keys {
    /// The keys `up` asks for: its `[hash]` key and its `[sticky]` cookie.
    pub fn new(up: &config::Upstream) -> Keys {
        let hash = up.hash.as_ref().map(|h| match &h.key {
            HashKey::Header(name) => HashReader::Header(HeaderKey::new(name.clone())),
            HashKey::Cookie(name) => HashReader::Cookie(CookieKey::new(name.as_str())),
            HashKey::Query(name) => HashReader::Query(QueryKey::new(name.as_str())),
            HashKey::Uri => HashReader::Uri,
            HashKey::ClientIp => HashReader::ClientIp,
        });
        let sticky = up.sticky.as_ref().map(|s| {
            let mut attributes = format!("Path={}; HttpOnly; SameSite=Lax", s.path);
            if let Some(age) = s.max_age {
                attributes.push_str(&format!("; Max-Age={age}"));
            }
            StickyCookie::new(s.cookie.as_str()).attributes(attributes)
        });
        Keys { hash, sticky }
    }

    /// The bytes `strategy = "hash"` hashes for this request; `None` when the request lacks the
    /// property (the strategy then picks as it does without a key). Owned, because the request
    /// is taken apart before the pick.
    pub fn hash_key<B>(&self, req: &Request<B>, client: IpAddr) -> Option<Vec<u8>> {
        let key = match self.hash.as_ref()? {
            HashReader::Header(k) => k.extract(req),
            HashReader::Cookie(k) => k.extract(req),
            HashReader::Query(k) => k.extract(req),
            HashReader::Uri => PathAndQueryKey.extract(req),
            HashReader::ClientIp => return Some(client.to_string().into_bytes()),
        };
        key.get_key().map(<[u8]>::to_vec)
    }

    /// The backend key the request's sticky cookie names, if sticky sessions are on and it
    /// carries a well-formed one.
    pub fn pinned<B>(&self, req: &Request<B>) -> Option<u64> {
        self.sticky.as_ref()?.sticky(req)
    }

    /// The `Set-Cookie` value that pins a client to `backend`, if sticky sessions are on.
    pub fn set_cookie(&self, backend: &Backend) -> Option<HeaderValue> {
        Some(self.sticky.as_ref()?.set_cookie(backend))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Sticky;

    fn sticky_upstream() -> config::Upstream {
        let toml = "listen = [\"127.0.0.1:0\"]\n[[host]]\ndefault = true\nupstream = \"app\"\n\
                    [upstream.app]\n[upstream.app.sticky]\ncookie = \"lb\"\nmax_age = \"1h\"\n\
                    [[upstream.app.server]]\naddress = \"127.0.0.1:1\"\n";
        let mut c = config::parse(toml, "t.toml").unwrap();
        c.upstreams.remove(0)
    }

    #[test]
    fn the_sticky_cookie_round_trips_through_set_cookie_and_cookie() {
        let up = sticky_upstream();
        assert_eq!(
            up.sticky,
            Some(Sticky {
                cookie: "lb".into(),
                path: "/".into(),
                max_age: Some(3600),
            })
        );
        let keys = Keys::new(&up);
        let backend = Backend::new("127.0.0.1:8081");
        let set = keys.set_cookie(&backend).unwrap();
        let set = set.to_str().unwrap();
        assert_eq!(
            set,
            format!(
                "lb={:016x}; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600",
                backend.key()
            )
        );
        let pair = set.split(';').next().unwrap();
        let req = Request::get("/")
            .header("cookie", format!("a=1; {pair}"))
            .body(())
            .unwrap();
        assert_eq!(keys.pinned(&req), Some(backend.key()));
    }

    #[test]
    fn a_malformed_sticky_cookie_is_ignored() {
        let keys = Keys::new(&sticky_upstream());
        let req = Request::get("/")
            .header("cookie", "lb=127.0.0.1:8081")
            .body(())
            .unwrap();
        assert_eq!(keys.pinned(&req), None);
    }
}
