//! A pooled HTTP/1.1 client that reads whole answers within the deadline.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::DEADLINE;

/// A pooled HTTP/1.1 client.
pub type TestClient = Client<HttpConnector, Full<Bytes>>;

/// A new pooled HTTP/1.1 client.
pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, as text (lossy UTF-8).
    pub body: String,
}

/// Sends `req` and reads the whole answer, within [`DEADLINE`].
pub async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> Answer {
    let fut = async {
        let resp = client.request(req).await.expect("the proxy answers");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("a whole body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .expect("an answer before the deadline")
}

/// `GET http://{proxy}{path}` with a `Host` header.
pub async fn get(client: &TestClient, proxy: SocketAddr, host: &str, path: &str) -> Answer {
    let req = Request::get(format!("http://{proxy}{path}"))
        .header("host", host)
        .body(Full::default())
        .unwrap();
    send(client, req).await
}
