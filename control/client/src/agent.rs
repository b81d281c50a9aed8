//! The node API every weir-agent serves (`proto/agent.proto`): flow
//! observation and a read-only view of the node's datapath maps, and a small
//! typed client over it for `weir observe` / `weir datapath`.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};

/// The generated messages and the tonic client/server of the node API.
// `ObserveResponse.event` is a oneof of a Flow and a small Lost notice; the
// stream carries almost only flows, so boxing them would buy nothing.
#[allow(clippy::large_enum_variant)]
pub mod proto {
    tonic::include_proto!("weir.agent.v1");
}

pub use proto::agent_server::{Agent, AgentServer};

/// The port an agent serves its node API on unless told otherwise.
pub const DEFAULT_PORT: u16 = 4244;

/// How long a connect to an agent may take before it is reported unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An error talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect to the agent at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the agent at {addr} refused the request ({code:?}): {message}")]
    Status {
        addr: String,
        code: tonic::Code,
        message: String,
    },
}

impl AgentError {
    /// The agent refused the request as malformed (the message names the field).
    pub fn is_invalid(&self) -> bool {
        matches!(self, AgentError::Status { code, .. } if *code == tonic::Code::InvalidArgument)
    }

    fn status(addr: &str, s: &tonic::Status) -> Self {
        AgentError::Status {
            addr: addr.to_string(),
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

/// The address of an agent's node API from its node's IP.
pub fn agent_url(node_ip: &str, port: u16) -> String {
    if node_ip.contains(':') {
        format!("http://[{node_ip}]:{port}")
    } else {
        format!("http://{node_ip}:{port}")
    }
}

/// A stream of observe events from one agent.
pub type ObserveStream =
    Pin<Box<dyn Stream<Item = Result<proto::observe_response::Event, AgentError>> + Send>>;

/// A client of one agent's node API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentClient {
    inner: proto::agent_client::AgentClient<Channel>,
    addr: String,
}

impl AgentClient {
    /// Connects to `addr` (`http://HOST:PORT`).
    pub async fn connect(addr: &str) -> Result<Self, AgentError> {
        let channel = match Endpoint::from_shared(addr.to_string()) {
            Ok(e) => e.connect_timeout(CONNECT_TIMEOUT).connect().await,
            Err(source) => Err(source),
        }
        .map_err(|source| AgentError::Connect {
            addr: addr.to_string(),
            source,
        })?;
        Ok(Self {
            inner: proto::agent_client::AgentClient::new(channel)
                .max_decoding_message_size(256 << 20),
            addr: addr.to_string(),
        })
    }

    /// The address this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Starts observing flows; the stream ends after the replay unless
    /// `request.follow`.
    pub async fn observe(
        &self,
        request: proto::ObserveRequest,
    ) -> Result<ObserveStream, AgentError> {
        let addr = self.addr.clone();
        let stream = self
            .inner
            .clone()
            .observe(request)
            .await
            .map_err(|s| AgentError::status(&addr, &s))?
            .into_inner();
        Ok(Box::pin(stream.filter_map(move |item| {
            let out = match item {
                Ok(r) => r.event.map(Ok),
                Err(s) => Some(Err(AgentError::status(&addr, &s))),
            };
            futures::future::ready(out)
        })))
    }

    /// One view of the node's datapath maps.
    pub async fn datapath(
        &self,
        view: proto::datapath_request::View,
    ) -> Result<proto::DatapathReply, AgentError> {
        let r = self
            .inner
            .clone()
            .datapath(proto::DatapathRequest { view: view as i32 })
            .await
            .map_err(|s| AgentError::status(&self.addr, &s))?;
        Ok(r.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_urls() {
        assert_eq!(agent_url("172.30.0.11", 4244), "http://172.30.0.11:4244");
        assert_eq!(agent_url("fd00::1", 4244), "http://[fd00::1]:4244");
    }
}
