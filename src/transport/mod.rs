//! The two doors into the service. Each adapter translates its wire format to
//! the domain's requests and the domain's answers (and [`crate::error::Error`])
//! back; neither holds key or token logic, and neither imports the other
//! (what one says about the other, such as the gRPC service name `/connect`
//! reports, comes from the contract). [`connections`] is the accept loop
//! and the connection limits both doors share.

pub mod connections;
pub mod grpc;
pub mod http;
