//! The network policy as plain data: which destinations the proxy lets a
//! sandbox reach. Two checks, both pure functions: the name check (host and
//! port against the profile's patterns, before any DNS) and the address
//! check (every resolved address against the ranges a sandbox must not
//! reach unless the profile names that exact host:port: loopback, private,
//! link-local, CGNAT, unique-local, cloud metadata). Nothing here does I/O.
//!
//! Patterns (`[network] allow` and `deny`):
//! - `api.github.com`: that host only, not its subdomains;
//! - `*.githubusercontent.com`: any subdomain at any depth
//!   (`a.githubusercontent.com`, `a.b.githubusercontent.com`), not the apex
//!   `githubusercontent.com` itself;
//! - `10.0.0.5`, `[::1]`: an IP literal (IPv6 in brackets), matching a
//!   request whose host is that address;
//! - any of those followed by `:PORT`. Without a port a pattern covers ports
//!   80 and 443 only, the ports of plain and TLS web traffic; anything else
//!   (`github.com:22`) must be named.
//!
//! The address check is what keeps an allowed (or, in `open` mode, any) name
//! from being a way into the host's own network: a name that resolves to
//! `127.0.0.1` or `169.254.169.254` is refused whatever the patterns say,
//! unless the allow list names exactly that host and port
//! (`"dev.internal:8080"`). Wildcards and portless patterns never unlock an
//! address: unlocking is a deliberate, narrow act.

use crate::profile::{Network, NetworkMode};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A verdict with the one-line reason the 403 body and the request log show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow)
    }

    /// The reason of a refusal; `None` when allowed.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Decision::Allow => None,
            Decision::Deny(reason) => Some(reason),
        }
    }
}

/// Ports a pattern without `:PORT` covers.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// Host names of cloud metadata services, refused by name (as well as by
/// the address they resolve to) unless allowed exactly with a port.
pub const METADATA_NAMES: &[&str] = &[
    "metadata.google.internal",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
];

/// What a pattern's host part matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// This name exactly (lower-case, no trailing dot).
    Exact(String),
    /// Names ending in `.` + this suffix, at any depth; not the suffix itself.
    Subdomains(String),
    /// A request whose host is this address literal.
    Ip(IpAddr),
}

/// One `allow` or `deny` entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    host: HostPattern,
    /// `None`: ports 80 and 443.
    port: Option<u16>,
}

impl Pattern {
    /// Parses an entry as written in a profile. The error is the reason,
    /// without saying which list the entry is in (the caller knows).
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let s = text.trim();
        if s.is_empty() {
            return Err("it is empty".to_string());
        }
        if s != text {
            return Err("it has spaces around it".to_string());
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(format!(
                "it has a scheme `{scheme}://`; write the host only, with `:PORT` if needed"
            ));
        }
        if s.contains('/') {
            return Err(
                "it has a `/`; write the host only (the policy is per host and port, not per \
                 path)"
                    .to_string(),
            );
        }
        if s.contains('@') {
            return Err("it has a `@`; write the host only, without a user name".to_string());
        }
        if s == "*" || s.starts_with("*:") {
            return Err(
                "a lone `*` would match every host; use `mode = \"open\"` (with `deny`) for \
                 that, or `mode = \"none\"` to allow nothing"
                    .to_string(),
            );
        }

        let (host, port) = split_port(s)?;
        if let Some(inner) = host.strip_prefix('[') {
            let inner = match inner.strip_suffix(']') {
                Some(inner) => inner,
                None if inner.contains(']') => {
                    return Err("it has text after the `]`; a port goes after a `:`".to_string())
                }
                None => return Err("it has a `[` without its closing `]`".to_string()),
            };
            let ip: Ipv6Addr = inner
                .parse()
                .map_err(|_| format!("`{inner}` in brackets is not an IPv6 address"))?;
            return Ok(Pattern {
                host: HostPattern::Ip(canonical_ip(IpAddr::V6(ip))),
                port,
            });
        }
        if host.contains(':') {
            return Err(
                "an IPv6 address must be in brackets, such as `[2001:db8::1]` or \
                 `[2001:db8::1]:443`"
                    .to_string(),
            );
        }
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return Ok(Pattern {
                host: HostPattern::Ip(IpAddr::V4(ip)),
                port,
            });
        }
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        if name.contains('*') {
            return Err(
                "`*` may only stand alone as the first label, as in `*.example.com` (any \
                 subdomain of example.com)"
                    .to_string(),
            );
        }
        check_host_name(name)?;
        let name = name.to_ascii_lowercase();
        Ok(Pattern {
            host: if wildcard {
                HostPattern::Subdomains(name)
            } else {
                HostPattern::Exact(name)
            },
            port,
        })
    }

    /// Whether a request to `host` (as [`Host::parse`] made it) on `port`
    /// is covered.
    fn matches(&self, host: &Host, port: u16) -> bool {
        let port_ok = match self.port {
            Some(p) => p == port,
            None => DEFAULT_PORTS.contains(&port),
        };
        port_ok
            && match (&self.host, host) {
                (HostPattern::Exact(name), Host::Name(h)) => name == h,
                (HostPattern::Subdomains(suffix), Host::Name(h)) => h
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                (HostPattern::Ip(ip), Host::Ip(h)) => ip == h,
                _ => false,
            }
    }

    /// Whether this pattern names exactly `host:port`: the only kind of
    /// entry that unlocks a blocked address.
    fn names_exactly(&self, host: &Host, port: u16) -> bool {
        self.port == Some(port)
            && match (&self.host, host) {
                (HostPattern::Exact(name), Host::Name(h)) => name == h,
                (HostPattern::Ip(ip), Host::Ip(h)) => ip == h,
                _ => false,
            }
    }

    /// Whether a connection to address `ip` on `port` falls under an IP
    /// pattern (for `deny` entries that name addresses).
    /// Whether a request to `host` (any spelling) on `port` matches this
    /// pattern; used by credential grants to find a grant's hosts.
    pub fn matches_host(&self, host: &str, port: u16) -> bool {
        self.matches(&Host::parse(host), port)
    }

    fn matches_addr(&self, ip: IpAddr, port: u16) -> bool {
        self.matches(&Host::Ip(canonical_ip(ip)), port)
    }
}

/// The canonical spelling, which parses back to the same pattern: lower
/// case, IPv6 in brackets and compressed.
impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Exact(name) => f.write_str(name)?,
            HostPattern::Subdomains(suffix) => write!(f, "*.{suffix}")?,
            HostPattern::Ip(IpAddr::V4(ip)) => write!(f, "{ip}")?,
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// `host` and the port after the last `:` that is not inside brackets.
fn split_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let colon = if s.starts_with('[') {
        // `[v6]` or `[v6]:port`; colons inside the brackets are the address.
        match s.find(']') {
            Some(close) => s[close + 1..].find(':').map(|i| close + 1 + i),
            None => None,
        }
    } else if s.matches(':').count() == 1 {
        s.find(':')
    } else {
        // No colon, or a bare IPv6 address (refused by the caller).
        None
    };
    let Some(colon) = colon else {
        return Ok((s, None));
    };
    let (host, port) = (&s[..colon], &s[colon + 1..]);
    if host.is_empty() {
        return Err("it has a port but no host".to_string());
    }
    let valid = !port.is_empty()
        && port.len() <= 5
        && port.chars().all(|c| c.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
    if !valid {
        return Err(format!(
            "`{port}` after the `:` is not a port; ports are numbers from 1 to 65535"
        ));
    }
    Ok((host, Some(port.parse().expect("checked above"))))
}

/// Letters, digits and `-` in dot-separated labels, as DNS names are spelled
/// in URLs (internationalised names in their `xn--` form).
fn check_host_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it has no host name after `*.`".to_string());
    }
    if name.ends_with('.') {
        return Err("it ends with a `.`; write the name without the trailing dot".to_string());
    }
    if name.len() > 253 {
        return Err("the host name is longer than 253 characters".to_string());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.')))
    {
        let hint = if c.is_ascii() {
            ""
        } else {
            " (write internationalised names in their `xn--` form)"
        };
        return Err(format!(
            "host names use letters, digits, `-` and `.`, not `{}`{hint}",
            c.escape_debug()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (`..`, or a `.` at the start)".to_string());
        }
        if label.len() > 63 {
            return Err(format!("label `{label}` is longer than 63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label `{label}` starts or ends with `-`"));
        }
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.chars().all(|c| c.is_ascii_digit()) {
        // `10.1` or `1.2.3.4.5`: clients read some of these as addresses,
        // so the pattern would not mean what it seems to.
        return Err(
            "it looks like an IP address but is not one; write IPv4 addresses as four \
             numbers (`10.0.0.5`)"
                .to_string(),
        );
    }
    Ok(())
}

/// IPv4-mapped IPv6 (`::ffff:10.0.0.1`) is the IPv4 address: one spelling
/// per address so patterns and hosts compare equal.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// A request's host, normalised for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// Lower case, one trailing dot dropped, brackets around IPv6 dropped,
    /// IP literals parsed.
    fn parse(host: &str) -> Host {
        let h = host.trim();
        let h = h.strip_suffix('.').unwrap_or(h);
        let unbracketed = h
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(h);
        match unbracketed.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(canonical_ip(ip)),
            Err(_) => Host::Name(h.to_ascii_lowercase()),
        }
    }
}

/// `host:port` as reasons show it (`[::1]:443` for IPv6).
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// Lower case, no trailing dot, no brackets around IPv6: the spelling the
/// policy compares (and the request log may show).
pub fn normalize_host(host: &str) -> String {
    match Host::parse(host) {
        Host::Name(name) => name,
        Host::Ip(ip) => ip.to_string(),
    }
}

/// The compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    mode: NetworkMode,
    allow: Vec<Pattern>,
    deny: Vec<Pattern>,
}

impl Policy {
    /// Compiles the profile's `[network]` table; errors name the bad pattern.
    pub fn new(net: &Network) -> Result<Policy, String> {
        let compile = |list: &str, items: &[String]| -> Result<Vec<Pattern>, String> {
            items
                .iter()
                .map(|p| {
                    Pattern::parse(p).map_err(|reason| {
                        format!("`network.{list}` entry \"{}\": {reason}", p.escape_debug())
                    })
                })
                .collect()
        };
        Ok(Policy {
            mode: net.mode,
            allow: compile("allow", &net.allow)?,
            deny: compile("deny", &net.deny)?,
        })
    }

    pub fn mode(&self) -> NetworkMode {
        self.mode
    }

    /// Host (lower-cased, no trailing dot) and port of the request itself.
    /// Any spelling is accepted: it is normalised here as well. An IP-literal
    /// host also goes through the address check, since it needs no DNS.
    pub fn check_name(&self, host: &str, port: u16) -> Decision {
        if self.mode == NetworkMode::None {
            return Decision::Deny("network mode is none".to_string());
        }
        let h = Host::parse(host);
        if matches!(&h, Host::Name(n) if n.is_empty()) {
            return Decision::Deny("the request names no host".to_string());
        }
        if let Some(p) = self.deny.iter().find(|p| p.matches(&h, port)) {
            return Decision::Deny(format!("denied by network.deny pattern `{p}`"));
        }
        let unlocked = self.unlocked(&h, port);
        if let Host::Name(name) = &h {
            if METADATA_NAMES.contains(&name.as_str()) && !unlocked {
                return Decision::Deny(format!(
                    "{h}:{port} is a cloud metadata endpoint; name it exactly as \
                     `{h}:{port}` in network.allow to allow it"
                ));
            }
        }
        if let Host::Ip(ip) = h {
            if let Decision::Deny(reason) = self.addr_decision(&h, port, ip, unlocked) {
                return Decision::Deny(reason);
            }
        }
        match self.mode {
            NetworkMode::Open => Decision::Allow,
            _ if self.allow.iter().any(|p| p.matches(&h, port)) => Decision::Allow,
            _ => Decision::Deny(format!("{h}:{port} is not in network.allow")),
        }
    }

    /// The addresses `host` resolved to; all must pass. Run after
    /// [`Policy::check_name`], which this does not repeat (apart from
    /// `deny` entries that are IP addresses, which apply to resolved
    /// addresses too).
    pub fn check_addrs(&self, host: &str, port: u16, addrs: &[IpAddr]) -> Decision {
        if self.mode == NetworkMode::None {
            return Decision::Deny("network mode is none".to_string());
        }
        let h = Host::parse(host);
        if addrs.is_empty() {
            return Decision::Deny(format!("{h} resolved to no address"));
        }
        let unlocked = self.unlocked(&h, port);
        for &ip in addrs {
            if let Decision::Deny(reason) = self.addr_decision(&h, port, ip, unlocked) {
                return Decision::Deny(reason);
            }
        }
        Decision::Allow
    }

    fn addr_decision(&self, h: &Host, port: u16, ip: IpAddr, unlocked: bool) -> Decision {
        if let Some(p) = self.deny.iter().find(|p| p.matches_addr(ip, port)) {
            return Decision::Deny(format!(
                "{h}:{port} resolves to {ip}, denied by network.deny pattern `{p}`"
            ));
        }
        match classify(ip) {
            Some(class) if !unlocked => Decision::Deny(format!(
                "{h}:{port} resolves to {ip}, {} address; name it exactly as `{h}:{port}` in \
                 network.allow to allow it",
                with_article(class)
            )),
            _ => Decision::Allow,
        }
    }

    /// Whether an `allow` entry names exactly this host and port.
    fn unlocked(&self, h: &Host, port: u16) -> bool {
        self.allow.iter().any(|p| p.names_exactly(h, port))
    }
}

fn with_article(class: &str) -> String {
    let vowel = class.starts_with(['a', 'e', 'i', 'o']) || class.starts_with("unspec");
    format!("{} {class}", if vowel { "an" } else { "a" })
}

/// The kind of address a sandbox may not reach by default, or `None` for
/// an ordinary public address. The names read in "resolves to X, a NAME
/// address". IPv6 forms that embed an IPv4 address (mapped, compatible,
/// NAT64, 6to4) are judged by the address they embed.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Cloud metadata services: AWS/GCP/Azure/OpenStack, AWS ECS task
/// metadata, Alibaba Cloud, Azure WireServer.
const METADATA_V4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(168, 63, 129, 16),
];

/// AWS's IPv6 instance metadata endpoint.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if METADATA_V4.contains(&ip) {
        return Some("cloud metadata");
    }
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_broadcast() => "broadcast",
        (0, _, _) => "reserved (\"this network\", 0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private (RFC 1918)",
        (172, b, _) if (16..32).contains(&b) => "private (RFC 1918)",
        (169, 254, _) => "link-local",
        (100, b, _) if (64..128).contains(&b) => "carrier-grade NAT (100.64.0.0/10)",
        (192, 0, 0) => "reserved (IETF protocol assignments, 192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18 | 19, _) => "benchmarking (198.18.0.0/15)",
        (192, 88, 99) => "reserved (6to4 relay anycast, 192.88.99.0/24)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip == METADATA_V6 {
        return Some("cloud metadata");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let s = ip.segments();
    Some(match s[0] {
        _ if s[0] & 0xfe00 == 0xfc00 => "unique-local (fc00::/7)",
        _ if s[0] & 0xffc0 == 0xfe80 => "link-local",
        _ if s[0] & 0xffc0 == 0xfec0 => "site-local (fec0::/10)",
        _ if s[0] & 0xff00 == 0xff00 => "multicast",
        // Local-use NAT64 (RFC 8215): the embedded address is at a
        // position only the local network knows.
        0x0064 if s[1] == 0xff9b && s[2] == 0x0001 => "local-use NAT64 (64:ff9b:1::/48)",
        // Teredo: the client's address is obfuscated in it; nothing an
        // agent needs, and a way to dress up a local address.
        0x2001 if s[1] == 0 => "Teredo (2001::/32)",
        0x2001 if s[1] == 0x0db8 => "documentation",
        0x2001 if s[1] == 0x0002 && s[2] == 0 => "benchmarking (2001:2::/48)",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only (100::/64)",
        _ => return None,
    })
}

/// The IPv4 address inside an IPv6 one that carries it: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`, deprecated), NAT64 well-known prefix (`64:ff9b::a.b.c.d`),
/// 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: NetworkMode, allow: &[&str], deny: &[&str]) -> Policy {
        Policy::new(&Network {
            mode,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            ..Network::default()
        })
        .unwrap()
    }

    fn allowlist(allow: &[&str]) -> Policy {
        policy(NetworkMode::Allowlist, allow, &[])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn denied(d: Decision) -> String {
        d.reason().expect("allowed").to_string()
    }

    #[test]
    fn pattern_syntax() {
        for (text, canonical) in [
            ("api.github.com", "api.github.com"),
            ("API.GitHub.com", "api.github.com"),
            ("*.githubusercontent.com", "*.githubusercontent.com"),
            ("registry.npmjs.org:443", "registry.npmjs.org:443"),
            ("*.Example.com:8443", "*.example.com:8443"),
            ("localhost:1", "localhost:1"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("a-b.c", "a-b.c"),
            ("10.0.0.5", "10.0.0.5"),
            ("10.0.0.5:65535", "10.0.0.5:65535"),
            ("[::1]", "[::1]"),
            ("[0:0::1]:8080", "[::1]:8080"),
            ("[::ffff:10.0.0.1]", "10.0.0.1"),
            ("[2001:DB8::1]", "[2001:db8::1]"),
        ] {
            let p = Pattern::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(p.to_string(), canonical, "{text}");
            assert_eq!(Pattern::parse(canonical), Ok(p), "{canonical} round trip");
        }
        for (text, needle) in [
            ("", "empty"),
            (" a.com", "spaces"),
            ("*", "lone `*`"),
            ("*:443", "lone `*`"),
            ("https://a.com", "scheme `https://`"),
            ("a.com/x", "has a `/`"),
            ("u@a.com", "`@`"),
            ("a.com.", "trailing dot"),
            ("a..com", "empty label"),
            (".a.com", "empty label"),
            ("*.", "no host name after `*.`"),
            ("*.*.a.com", "`*` may only stand alone"),
            ("a*.com", "`*` may only stand alone"),
            ("a.*.com", "`*` may only stand alone"),
            ("**.a.com", "`*` may only stand alone"),
            ("a_b.com", "not `_`"),
            ("bücher.de", "`xn--` form"),
            ("-a.com", "starts or ends with `-`"),
            ("a-.com", "starts or ends with `-`"),
            ("a.com:0", "`0` after the `:` is not a port"),
            ("a.com:65536", "not a port"),
            ("a.com:", "not a port"),
            ("a.com:x", "not a port"),
            ("a.com:+80", "not a port"),
            (":80", "no host"),
            ("::1", "must be in brackets"),
            ("2001:db8::1:443", "must be in brackets"),
            ("[::1", "closing `]`"),
            ("[zz]", "not an IPv6 address"),
            ("[1.2.3.4]", "not an IPv6 address"),
            ("[::1]x", "text after the `]`"),
            ("10.1", "looks like an IP address"),
            ("1.2.3.4.5", "looks like an IP address"),
            ("256.1.1.1", "looks like an IP address"),
            ("*.10.0.0.1", "looks like an IP address"),
        ] {
            let e = Pattern::parse(text).expect_err(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(Pattern::parse(&long)
            .unwrap_err()
            .contains("longer than 63"));
        let long = format!("{}com", "a.".repeat(130));
        assert!(Pattern::parse(&long).unwrap_err().contains("253"));
    }

    #[test]
    fn exact_and_wildcard_names() {
        let p = allowlist(&["api.github.com", "*.githubusercontent.com"]);
        assert!(p.check_name("api.github.com", 443).is_allow());
        assert!(p.check_name("API.GitHub.COM.", 443).is_allow());
        assert!(p.check_name("api.github.com", 80).is_allow());
        assert!(!p.check_name("github.com", 443).is_allow());
        assert!(!p.check_name("x.api.github.com", 443).is_allow());
        assert!(!p.check_name("evilapi.github.com", 443).is_allow());
        for host in [
            "raw.githubusercontent.com",
            "a.b.c.githubusercontent.com",
            "RAW.githubusercontent.com.",
        ] {
            assert!(p.check_name(host, 443).is_allow(), "{host}");
        }
        for host in [
            "githubusercontent.com",
            "evilgithubusercontent.com",
            ".githubusercontent.com",
            "githubusercontent.com.evil.com",
        ] {
            assert!(!p.check_name(host, 443).is_allow(), "{host}");
        }
        assert_eq!(
            denied(p.check_name("Example.com.", 443)),
            "example.com:443 is not in network.allow"
        );
    }

    #[test]
    fn ports() {
        let p = allowlist(&["a.com", "b.com:8443", "*.c.com:22"]);
        assert!(p.check_name("a.com", 80).is_allow());
        assert!(p.check_name("a.com", 443).is_allow());
        for port in [22, 8080, 8443, 1] {
            assert!(!p.check_name("a.com", port).is_allow(), "{port}");
        }
        assert!(p.check_name("b.com", 8443).is_allow());
        assert!(!p.check_name("b.com", 443).is_allow());
        assert!(!p.check_name("b.com", 80).is_allow());
        assert!(p.check_name("x.c.com", 22).is_allow());
        assert!(!p.check_name("x.c.com", 443).is_allow());
        assert!(!p.check_name("c.com", 22).is_allow());
    }

    #[test]
    fn ip_literals() {
        let p = allowlist(&["93.184.216.34", "[2606:2800:220:1::1]:8443"]);
        assert!(p.check_name("93.184.216.34", 443).is_allow());
        assert!(p.check_name("[::ffff:93.184.216.34]", 443).is_allow());
        assert!(!p.check_name("93.184.216.34", 22).is_allow());
        assert!(!p.check_name("93.184.216.35", 443).is_allow());
        assert!(p.check_name("[2606:2800:220:1::1]", 8443).is_allow());
        assert!(p.check_name("2606:2800:220:1:0::1", 8443).is_allow());
        assert!(!p.check_name("[2606:2800:220:1::1]", 443).is_allow());
        assert_eq!(
            denied(p.check_name("[2606:2800:220:1::2]", 443)),
            "[2606:2800:220:1::2]:443 is not in network.allow"
        );
        // A name pattern never matches an address, nor a wildcard.
        let p = allowlist(&["*.com", "one.one.one.one"]);
        assert!(!p.check_name("1.1.1.1", 443).is_allow());
    }

    #[test]
    fn deny_wins() {
        let p = policy(
            NetworkMode::Allowlist,
            &["*.example.com", "x.example.com:8080"],
            &["bad.example.com", "*.x.example.com", "x.example.com:8080"],
        );
        assert!(p.check_name("ok.example.com", 443).is_allow());
        assert_eq!(
            denied(p.check_name("bad.example.com", 443)),
            "denied by network.deny pattern `bad.example.com`"
        );
        assert!(!p.check_name("a.x.example.com", 443).is_allow());
        assert_eq!(
            denied(p.check_name("x.example.com", 8080)),
            "denied by network.deny pattern `x.example.com:8080`"
        );
        // Denying a portless pattern denies 80 and 443 only.
        let p = policy(NetworkMode::Open, &[], &["bad.example.com"]);
        assert!(!p.check_name("bad.example.com", 443).is_allow());
        assert!(!p.check_name("bad.example.com", 80).is_allow());
        assert!(p.check_name("bad.example.com", 8080).is_allow());
    }

    #[test]
    fn open_and_none() {
        let p = policy(NetworkMode::Open, &[], &["*.tracker.com"]);
        assert!(p.check_name("anything.org", 443).is_allow());
        assert!(p.check_name("anything.org", 22).is_allow());
        assert!(!p.check_name("a.tracker.com", 443).is_allow());
        assert!(p
            .check_addrs("anything.org", 443, &[ip("93.184.216.34")])
            .is_allow());
        // Open mode does not open the host's own network.
        assert!(!p
            .check_addrs("anything.org", 443, &[ip("10.0.0.1")])
            .is_allow());
        assert!(!p.check_name("127.0.0.1", 80).is_allow());

        let p = policy(NetworkMode::None, &["a.com", "a.com:443"], &[]);
        assert_eq!(denied(p.check_name("a.com", 443)), "network mode is none");
        assert_eq!(
            denied(p.check_addrs("a.com", 443, &[ip("93.184.216.34")])),
            "network mode is none"
        );
    }

    #[test]
    fn blocked_classes() {
        let blocked = [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("::1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("0.1.2.3", "reserved (\"this network\""),
            ("10.1.2.3", "private (RFC 1918)"),
            ("172.16.0.1", "private (RFC 1918)"),
            ("172.31.255.255", "private (RFC 1918)"),
            ("192.168.1.1", "private (RFC 1918)"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("fc00::1", "unique-local"),
            ("fdff::1", "unique-local"),
            ("fec0::1", "site-local"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved (240.0.0.0/4)"),
            ("192.0.0.8", "IETF protocol assignments"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.1", "documentation"),
            ("203.0.113.1", "documentation"),
            ("2001:db8::1", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("2001:2::1", "benchmarking"),
            ("100::1", "discard-only"),
            ("2001::1", "Teredo"),
            ("64:ff9b:1::a00:1", "local-use NAT64"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.170.2", "cloud metadata"),
            ("100.100.100.200", "cloud metadata"),
            ("168.63.129.16", "cloud metadata"),
            ("fd00:ec2::254", "cloud metadata"),
            // IPv6 forms carrying a blocked IPv4 address.
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private (RFC 1918)"),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("::ffff:0:10.0.0.1", "private (RFC 1918)"),
            ("::127.0.0.1", "loopback"),
            ("::10.0.0.1", "private (RFC 1918)"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b::192.168.0.1", "private (RFC 1918)"),
            ("64:ff9b::a9fe:a9fe", "cloud metadata"),
            ("2002:7f00:1::", "loopback"),
            ("2002:a00:1:1234::5", "private (RFC 1918)"),
            ("2002:a9fe:a9fe::1", "cloud metadata"),
            ("2002:6440:1::", "carrier-grade NAT"),
        ];
        for (addr, class) in blocked {
            let got = classify(ip(addr));
            assert!(
                got.is_some_and(|c| c.contains(class)),
                "{addr}: {got:?}, wanted {class}"
            );
            let p = policy(NetworkMode::Open, &["api.example.com"], &[]);
            let reason = denied(p.check_addrs("api.example.com", 443, &[ip(addr)]));
            assert!(reason.contains(class), "{reason}");
            // One good address does not make up for a bad one.
            assert!(!p
                .check_addrs("api.example.com", 443, &[ip("93.184.216.34"), ip(addr)])
                .is_allow());
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "11.0.0.0",
            "2606:2800:220:1:248:1893:25c8:1946",
            "2a00:1450:4001:82a::200e",
            "::ffff:93.184.216.34",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::8.8.8.8",
            "fbff::1",
            "fe00::1",
        ] {
            assert_eq!(classify(ip(public)), None, "{public}");
            assert!(allowlist(&["a.com"])
                .check_addrs("a.com", 443, &[ip(public)])
                .is_allow());
        }
    }

    #[test]
    fn reason_wording() {
        let p = allowlist(&["api.example.com"]);
        assert_eq!(
            denied(p.check_addrs("api.example.com", 443, &[ip("10.1.2.3")])),
            "api.example.com:443 resolves to 10.1.2.3, a private (RFC 1918) address; name it \
             exactly as `api.example.com:443` in network.allow to allow it"
        );
        assert_eq!(
            denied(p.check_addrs("API.example.com.", 443, &[ip("::")])),
            "api.example.com:443 resolves to ::, an unspecified address; name it exactly as \
             `api.example.com:443` in network.allow to allow it"
        );
        assert_eq!(
            denied(p.check_addrs("api.example.com", 443, &[])),
            "api.example.com resolved to no address"
        );
        for d in [
            p.check_addrs("a.com", 443, &[ip("169.254.169.254")]),
            p.check_name("metadata.google.internal", 80),
            p.check_name("[::1]", 443),
        ] {
            let reason = denied(d);
            assert!(!reason.contains('\n'), "{reason}");
        }
    }

    #[test]
    fn exact_host_port_unlocks() {
        let p = allowlist(&["dev.internal:8080", "db.internal", "*.corp.internal:443"]);
        assert!(p.check_name("dev.internal", 8080).is_allow());
        assert!(p
            .check_addrs("dev.internal", 8080, &[ip("10.0.0.5"), ip("127.0.0.1")])
            .is_allow());
        assert!(p
            .check_addrs("DEV.internal.", 8080, &[ip("169.254.169.254")])
            .is_allow());
        // Another port of the same host is not unlocked (nor allowed).
        assert!(!p
            .check_addrs("dev.internal", 8081, &[ip("10.0.0.5")])
            .is_allow());
        // A portless pattern allows the name but never unlocks an address.
        assert!(p.check_name("db.internal", 443).is_allow());
        let reason = denied(p.check_addrs("db.internal", 443, &[ip("10.0.0.6")]));
        assert!(
            reason.ends_with("name it exactly as `db.internal:443` in network.allow to allow it"),
            "{reason}"
        );
        // Nor does a wildcard, even with a port.
        assert!(p.check_name("x.corp.internal", 443).is_allow());
        assert!(!p
            .check_addrs("x.corp.internal", 443, &[ip("10.0.0.7")])
            .is_allow());

        // IP literals: the address check runs at the name check already,
        // and an exact IP:port unlocks it.
        let p = allowlist(&["127.0.0.1:8000", "[::1]:8000", "10.0.0.9"]);
        assert!(p.check_name("127.0.0.1", 8000).is_allow());
        assert!(p
            .check_addrs("127.0.0.1", 8000, &[ip("127.0.0.1")])
            .is_allow());
        assert!(p.check_name("[::1]", 8000).is_allow());
        assert!(p.check_name("::1", 8000).is_allow());
        assert!(p.check_name("[::ffff:127.0.0.1]", 8000).is_allow());
        assert!(!p.check_name("127.0.0.1", 8001).is_allow());
        let reason = denied(p.check_name("10.0.0.9", 443));
        assert!(reason.contains("a private (RFC 1918) address"), "{reason}");
        assert!(reason.contains("`10.0.0.9:443`"), "{reason}");
        let reason = denied(p.check_name("[fe80::1]", 443));
        assert!(
            reason.starts_with("[fe80::1]:443 resolves to fe80::1, a link-local"),
            "{reason}"
        );

        // Unlocking works in open mode too, and deny still wins.
        let p = policy(NetworkMode::Open, &["dev.internal:8080"], &[]);
        assert!(p
            .check_addrs("dev.internal", 8080, &[ip("10.0.0.5")])
            .is_allow());
        assert!(!p
            .check_addrs("other.internal", 8080, &[ip("10.0.0.5")])
            .is_allow());
        let p = policy(
            NetworkMode::Allowlist,
            &["dev.internal:8080"],
            &["dev.internal:8080"],
        );
        assert!(!p.check_name("dev.internal", 8080).is_allow());
    }

    #[test]
    fn metadata_names() {
        let p = policy(NetworkMode::Open, &["metadata.google.internal"], &[]);
        for host in [
            "metadata.google.internal",
            "METADATA.google.internal.",
            "metadata",
            "instance-data",
        ] {
            let reason = denied(p.check_name(host, 80));
            assert!(reason.contains("cloud metadata endpoint"), "{reason}");
        }
        assert_eq!(
            denied(p.check_name("metadata.google.internal", 80)),
            "metadata.google.internal:80 is a cloud metadata endpoint; name it exactly as \
             `metadata.google.internal:80` in network.allow to allow it"
        );
        let p = allowlist(&["metadata.google.internal:80"]);
        assert!(p.check_name("metadata.google.internal", 80).is_allow());
        assert!(p
            .check_addrs("metadata.google.internal", 80, &[ip("169.254.169.254")])
            .is_allow());
        assert!(!p.check_name("metadata.google.internal", 443).is_allow());
        // Only those names: a subdomain is an ordinary name.
        let p = policy(NetworkMode::Open, &[], &[]);
        assert!(p.check_name("metadata.example.com", 443).is_allow());
    }

    #[test]
    fn deny_by_address() {
        let p = policy(
            NetworkMode::Open,
            &[],
            &["93.184.216.34", "[2001:4860::1]:22"],
        );
        assert!(!p.check_name("93.184.216.34", 443).is_allow());
        let reason = denied(p.check_addrs("example.com", 443, &[ip("93.184.216.34")]));
        assert_eq!(
            reason,
            "example.com:443 resolves to 93.184.216.34, denied by network.deny pattern \
             `93.184.216.34`"
        );
        assert!(p
            .check_addrs("example.com", 22, &[ip("93.184.216.34")])
            .is_allow());
        assert!(!p.check_addrs("g.com", 22, &[ip("2001:4860::1")]).is_allow());
        assert!(p
            .check_addrs("g.com", 443, &[ip("2001:4860::1")])
            .is_allow());
    }

    #[test]
    fn new_rejects_bad_patterns() {
        let e = Policy::new(&Network {
            allow: vec!["a.com".into(), "*".into()],
            ..Network::default()
        })
        .unwrap_err();
        assert!(
            e.starts_with("`network.allow` entry \"*\": a lone `*`"),
            "{e}"
        );
        let e = Policy::new(&Network {
            deny: vec!["a.com:0".into()],
            ..Network::default()
        })
        .unwrap_err();
        assert!(e.starts_with("`network.deny` entry \"a.com:0\""), "{e}");
        assert_eq!(normalize_host("[::1]"), "::1");
        assert_eq!(normalize_host("A.b."), "a.b");
    }
}
