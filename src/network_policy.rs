//! The network policy as plain data: which destinations the proxy lets a
//! sandbox reach. Two checks, both pure functions: the name check (host and
//! port against the profile's patterns, before any DNS) and the address
//! check (every resolved address against the ranges a sandbox must not
//! reach unless the profile names that exact host:port: loopback, private,
//! link-local, CGNAT, unique-local, cloud metadata). Nothing here does I/O.

use crate::profile::Network;
use std::net::IpAddr;

/// A verdict with the one-line reason the 403 body and the request log show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

/// The compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {}

impl Policy {
    /// Compiles the profile's `[network]` table; errors name the bad pattern.
    pub fn new(_net: &Network) -> Result<Policy, String> {
        Ok(Policy {})
    }

    /// Host (lower-cased, no trailing dot) and port of the request itself.
    pub fn check_name(&self, _host: &str, _port: u16) -> Decision {
        Decision::Deny("not implemented".into())
    }

    /// The addresses `host` resolved to; all must pass.
    pub fn check_addrs(&self, _host: &str, _port: u16, _addrs: &[IpAddr]) -> Decision {
        Decision::Deny("not implemented".into())
    }
}
