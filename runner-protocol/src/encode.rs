//! Encoding the request lines a client writes: the other half of
//! [`crate::decode_request`], so that the wire shape of a request is said
//! once, here, and a test holds the two halves together.

use serde::Serialize;

use crate::params::RunParams;

/// A request line, as a client writes it.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RequestLine<'a> {
    /// `{"type":"run","id":…,"params":{…}}`: start one turn.
    Run {
        /// The run id; unique among live runs.
        id: &'a str,
        /// What the turn gets.
        params: &'a RunParams,
    },
    /// `{"type":"cancel","id":…}`: stop a queued or running turn.
    Cancel {
        /// The run to cancel.
        id: &'a str,
    },
    /// `{"type":"status"}`, or with an `id` echoed as the answer's
    /// `request_id`.
    Status {
        /// Echoed as the `status` line's `request_id`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
}

impl RequestLine<'_> {
    /// The line, newline included. Fails only for params that hold what
    /// JSON cannot (a non-finite `timeout_secs`).
    pub fn to_line(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut line = serde_json::to_vec(self)?;
        line.push(b'\n');
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode_request, Request};

    /// What a client writes is what the daemon reads.
    #[test]
    fn every_line_decodes_to_what_was_encoded() {
        let params: RunParams = serde_json::from_value(serde_json::json!({
            "input": {"content": [{"type": "text", "text": "hi"}]},
            "model": "m",
            "mcp_servers": {"s": {"url": "http://127.0.0.1:9/mcp", "http_headers": {"A": "b"}}},
            "timeout_secs": 2.5
        }))
        .unwrap();
        let decode = |line: RequestLine| {
            let bytes = line.to_line().unwrap();
            assert_eq!(bytes.last(), Some(&b'\n'));
            decode_request(&bytes[..bytes.len() - 1]).unwrap()
        };
        assert_eq!(
            decode(RequestLine::Run {
                id: "r1",
                params: &params
            }),
            Request::Run {
                id: "r1".into(),
                params: Ok(Box::new(params.clone()))
            }
        );
        assert_eq!(
            decode(RequestLine::Cancel { id: "r1" }),
            Request::Cancel { id: "r1".into() }
        );
        assert_eq!(
            decode(RequestLine::Status { id: Some("s") }),
            Request::Status {
                request_id: Some("s".into())
            }
        );
        assert_eq!(
            decode(RequestLine::Status { id: None }),
            Request::Status { request_id: None }
        );
    }
}
