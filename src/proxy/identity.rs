//! Who is calling: the client address a proxied request is attributed to. A forwarded header
//! is believed only from a trusted proxy, and only as far back as trusted hops vouch for it,
//! so a client cannot pick its own identity.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// How a request's client address is found.
#[derive(Clone, Debug)]
pub struct IdentityPolicy {
    /// Peers whose forwarded header is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The forwarded header, e.g. `x-forwarded-for`, `cf-connecting-ip`, `x-real-ip`.
    pub client_header: Option<HeaderName>,
    /// IPv6 clients are aggregated to a network of this many bits (values above 128 mean 128).
    pub ipv6_prefix: u8,
}

impl Default for IdentityPolicy {
    /// Believes no forwarded header and aggregates IPv6 clients to their /64.
    fn default() -> Self {
        IdentityPolicy {
            trusted_proxies: Vec::new(),
            client_header: None,
            ipv6_prefix: 64,
        }
    }
}

impl IdentityPolicy {
    /// The client's address identity for this request.
    pub fn client_address(&self, peer: SocketAddr, headers: &HeaderMap) -> ClientAddress {
        let peer = peer.ip().to_canonical();
        let client = match &self.client_header {
            Some(name) if self.is_trusted(peer) => self.forwarded_client(name, peer, headers),
            _ => peer,
        };
        ClientAddress::new(client, self.ipv6_prefix)
    }

    fn forwarded_client(&self, name: &HeaderName, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if name.as_str().eq_ignore_ascii_case("x-forwarded-for") {
            self.walk_forwarded_for(name, peer, headers)
        } else {
            single_address(name, headers).unwrap_or(peer)
        }
    }

    /// Each hop appends the address it received from, so only the right-hand end of the chain
    /// was written by proxies we trust; everything left of the first untrusted entry (or of an
    /// unreadable one) may have been made up by the client.
    fn walk_forwarded_for(&self, name: &HeaderName, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let entries_right_to_left = headers
            .get_all(name)
            .iter()
            .rev()
            .flat_map(|line| line.as_bytes().rsplit(|&byte| byte == b','))
            .map(<[u8]>::trim_ascii)
            // An empty entry (`a, , b` or an empty header) claims nothing; pass over it.
            .filter(|entry| !entry.is_empty());
        let mut nearest_trusted = None;
        for entry in entries_right_to_left {
            let Some(address) = parse_address(entry) else {
                break;
            };
            if !self.is_trusted(address) {
                return address;
            }
            nearest_trusted = Some(address);
        }
        nearest_trusted.unwrap_or(peer)
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted_proxies
            .iter()
            .any(|net| net_contains(net, address))
    }
}

/// A single-value header: exactly one line holding exactly one address.
fn single_address(name: &HeaderName, headers: &HeaderMap) -> Option<IpAddr> {
    let mut lines = headers.get_all(name).iter();
    let line = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    // A comma-separated list fails to parse as one address, so needs no check of its own.
    parse_address(line.as_bytes().trim_ascii())
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`, canonical.
fn parse_address(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    // The socket-address parser accepts an IPv6 zone (`[fe80::1%1]:443`), which is no client.
    if text.contains('%') {
        return None;
    }
    let address = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
        .or_else(|| bracketed_ipv6(text))?;
    Some(address.to_canonical())
}

fn bracketed_ipv6(text: &str) -> Option<IpAddr> {
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// `address` is canonical, so an IPv4 client never matches an IPv6 CIDR by accident; but a
/// CIDR written in IPv4-mapped form (`::ffff:10.0.0.0/104`) still covers the IPv4 addresses
/// it names. Prefixes shorter than 96 bits are IPv6 ranges, not mapped IPv4 ones (`::/0`
/// does not trust every IPv4 peer).
fn net_contains(net: &IpNet, address: IpAddr) -> bool {
    match (net, address) {
        (IpNet::V6(net), IpAddr::V4(v4)) => {
            net.prefix_len() >= 96 && net.contains(&v4.to_ipv6_mapped())
        }
        _ => net.contains(&address),
    }
}

/// An IPv4 address, or an IPv6 network of the policy's `ipv6_prefix` bits: one IPv6 host
/// usually holds a whole /64, so a single address would be a trivially rotated identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddress(Repr);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Repr {
    V4(Ipv4Addr),
    V6 { network: Ipv6Addr, prefix: u8 },
}

impl ClientAddress {
    fn new(address: IpAddr, ipv6_prefix: u8) -> Self {
        match address {
            IpAddr::V4(v4) => ClientAddress(Repr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = ipv6_prefix.min(128);
                // A /0 would shift by the full 128 bits, which overflows; its mask is empty.
                let mask = u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0);
                let network = Ipv6Addr::from_bits(v6.to_bits() & mask);
                ClientAddress(Repr::V6 { network, prefix })
            }
        }
    }
}

impl fmt::Display for ClientAddress {
    /// `203.0.113.7` for IPv4, `2001:db8:1:2::/64` for IPv6, just the address for a /128.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Repr::V4(address) => write!(f, "{address}"),
            Repr::V6 {
                network,
                prefix: 128,
            } => write!(f, "{network}"),
            Repr::V6 { network, prefix } => write!(f, "{network}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const XFF: &str = "x-forwarded-for";
    const CF: &str = "cf-connecting-ip";

    fn policy(trusted: &[&str], header: Option<&str>) -> IdentityPolicy {
        IdentityPolicy {
            trusted_proxies: trusted.iter().map(|net| net.parse().unwrap()).collect(),
            client_header: header.map(|name| HeaderName::from_bytes(name.as_bytes()).unwrap()),
            ipv6_prefix: 64,
        }
    }

    /// Header lines in order; a name given twice becomes two lines.
    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            map.append(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn client(policy: &IdentityPolicy, peer: &str, lines: &[(&str, &str)]) -> String {
        policy
            .client_address(peer.parse().unwrap(), &headers(lines))
            .to_string()
    }

    /// Behind trusted proxies 10.0.0.0/8, from peer 10.0.0.1.
    fn via_xff(value: &str) -> String {
        client(
            &policy(&["10.0.0.0/8"], Some(XFF)),
            "10.0.0.1:4000",
            &[(XFF, value)],
        )
    }

    #[test]
    fn without_a_configured_header_the_peer_is_the_client() {
        let policy = policy(&["10.0.0.0/8"], None);
        let got = client(&policy, "10.0.0.1:4000", &[(XFF, "203.0.113.7")]);
        assert_eq!(got, "10.0.0.1");
    }

    #[test]
    fn a_spoofed_header_from_an_untrusted_peer_is_ignored() {
        for header in [XFF, CF] {
            let policy = policy(&["10.0.0.0/8"], Some(header));
            let got = client(&policy, "198.51.100.9:4000", &[(header, "203.0.113.7")]);
            assert_eq!(got, "198.51.100.9", "header {header}");
        }
    }

    #[test]
    fn a_forged_left_most_entry_is_not_believed() {
        let policy = policy(&["10.0.0.1/32"], Some(XFF));
        let got = client(&policy, "10.0.0.1:4000", &[(XFF, "6.6.6.6, 203.0.113.7")]);
        assert_eq!(got, "203.0.113.7");
    }

    #[test]
    fn trusted_hops_are_walked_past() {
        assert_eq!(via_xff("203.0.113.7, 10.0.0.2"), "203.0.113.7");
        assert_eq!(
            via_xff("6.6.6.6,203.0.113.7,10.0.0.3,10.0.0.2"),
            "203.0.113.7"
        );
    }

    #[test]
    fn when_every_entry_is_trusted_the_left_most_is_the_client() {
        assert_eq!(via_xff("10.0.0.3, 10.0.0.2"), "10.0.0.3");
    }

    #[test]
    fn nothing_left_of_garbage_is_believed() {
        // The nearest trusted hop walked past vouches only for what it saw.
        assert_eq!(via_xff("203.0.113.7, unknown, 10.0.0.2"), "10.0.0.2");
        // Garbage right next to the peer: nothing walked past, so the peer.
        assert_eq!(via_xff("203.0.113.7, unknown"), "10.0.0.1");
        assert_eq!(via_xff("203.0.113.7, _hidden"), "10.0.0.1");
        assert_eq!(via_xff("203.0.113.7, client.example.com"), "10.0.0.1");
        assert_eq!(via_xff("203.0.113.7, [1.2.3.4], 10.0.0.2"), "10.0.0.2");
        assert_eq!(via_xff("203.0.113.7, 1.2.3.4:99999"), "10.0.0.1");
        assert_eq!(via_xff("203.0.113.7, [fe80::1%1]:443"), "10.0.0.1");
    }

    #[test]
    fn an_absent_or_empty_header_gives_the_peer() {
        let policy = policy(&["10.0.0.0/8"], Some(XFF));
        assert_eq!(client(&policy, "10.0.0.1:4000", &[]), "10.0.0.1");
        assert_eq!(via_xff(""), "10.0.0.1");
        assert_eq!(via_xff(" , "), "10.0.0.1");
    }

    #[test]
    fn empty_entries_are_passed_over() {
        assert_eq!(via_xff("203.0.113.7, , 10.0.0.2"), "203.0.113.7");
    }

    #[test]
    fn multiple_header_lines_form_one_chain_in_order() {
        let policy = policy(&["10.0.0.0/8"], Some(XFF));
        let lines = [
            (XFF, "6.6.6.6, 203.0.113.7"),
            (XFF, "10.0.0.3"),
            (XFF, "10.0.0.2"),
        ];
        assert_eq!(client(&policy, "10.0.0.1:4000", &lines), "203.0.113.7");
        let lines = [(XFF, "203.0.113.7"), (XFF, "198.51.100.1")];
        assert_eq!(client(&policy, "10.0.0.1:4000", &lines), "198.51.100.1");
    }

    #[test]
    fn entries_may_carry_ports_and_brackets() {
        let mut policy = policy(&["10.0.0.0/8"], Some(XFF));
        policy.ipv6_prefix = 128;
        let entries = [
            ("203.0.113.7:5678", "203.0.113.7"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            (" 203.0.113.7 ", "203.0.113.7"),
        ];
        for (entry, expected) in entries {
            let got = client(&policy, "10.0.0.1:4000", &[(XFF, entry)]);
            assert_eq!(got, expected, "entry {entry:?}");
        }
    }

    #[test]
    fn the_header_name_is_compared_without_case() {
        let policy = policy(&["10.0.0.0/8"], Some("X-Forwarded-For"));
        let got = client(&policy, "10.0.0.1:4000", &[(XFF, "6.6.6.6, 203.0.113.7")]);
        assert_eq!(got, "203.0.113.7");
    }

    #[test]
    fn an_ipv4_mapped_peer_is_its_ipv4_address() {
        let policy = policy(&[], None);
        assert_eq!(client(&policy, "[::ffff:127.0.0.1]:5000", &[]), "127.0.0.1");
    }

    #[test]
    fn an_ipv4_compatible_address_stays_ipv6() {
        let mut policy = policy(&[], None);
        policy.ipv6_prefix = 128;
        assert_eq!(client(&policy, "[::1.2.3.4]:5000", &[]), "::102:304");
    }

    #[test]
    fn mapped_addresses_inside_the_chain_are_canonical() {
        assert_eq!(via_xff("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(via_xff("[::ffff:203.0.113.7]:443"), "203.0.113.7");
        // A mapped trusted hop is still trusted.
        assert_eq!(via_xff("203.0.113.7, ::ffff:10.0.0.2"), "203.0.113.7");
    }

    #[test]
    fn a_mapped_peer_is_checked_against_ipv4_cidrs() {
        let policy = policy(&["10.0.0.0/8"], Some(XFF));
        let got = client(&policy, "[::ffff:10.0.0.1]:443", &[(XFF, "203.0.113.7")]);
        assert_eq!(got, "203.0.113.7");
    }

    #[test]
    fn a_cidr_in_mapped_form_covers_ipv4_peers() {
        let policy = policy(&["::ffff:10.0.0.0/104"], Some(XFF));
        let got = client(&policy, "10.0.0.1:443", &[(XFF, "203.0.113.7")]);
        assert_eq!(got, "203.0.113.7");
    }

    #[test]
    fn a_wide_ipv6_cidr_does_not_cover_ipv4_peers() {
        let policy = policy(&["::/0"], Some(XFF));
        let got = client(&policy, "10.0.0.1:443", &[(XFF, "203.0.113.7")]);
        assert_eq!(got, "10.0.0.1");
    }

    fn address(ip: &str, prefix: u8) -> ClientAddress {
        ClientAddress::new(ip.parse().unwrap(), prefix)
    }

    #[test]
    fn ipv6_clients_are_aggregated_to_their_64() {
        let policy = policy(&[], None);
        let a = policy.client_address("[2001:db8:1:2::1]:1".parse().unwrap(), &HeaderMap::new());
        let b = policy.client_address("[2001:db8:1:2:ff::9]:2".parse().unwrap(), &HeaderMap::new());
        let c = policy.client_address("[2001:db8:1:3::1]:1".parse().unwrap(), &HeaderMap::new());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn a_56_prefix_aggregates_wider() {
        assert_eq!(
            address("2001:db8:1:2::1", 56),
            address("2001:db8:1:ff::1", 56)
        );
        assert_ne!(
            address("2001:db8:1:2::1", 56),
            address("2001:db8:1:100::1", 56)
        );
        assert_eq!(
            address("2001:db8:1:2::1", 56).to_string(),
            "2001:db8:1::/56"
        );
    }

    #[test]
    fn a_128_prefix_prints_just_the_address_and_larger_prefixes_clamp() {
        assert_eq!(address("2001:db8::1", 128).to_string(), "2001:db8::1");
        assert_eq!(address("2001:db8::1", 200), address("2001:db8::1", 128));
        assert_ne!(address("2001:db8::1", 128), address("2001:db8::2", 128));
    }

    #[test]
    fn a_zero_prefix_is_one_network() {
        assert_eq!(address("2001:db8::1", 0).to_string(), "::/0");
        assert_eq!(address("2001:db8::1", 0), address("fe80::1", 0));
    }

    #[test]
    fn a_single_value_header_gives_its_address() {
        let policy = policy(&["10.0.0.0/8"], Some(CF));
        let got = client(&policy, "10.0.0.1:4000", &[(CF, "203.0.113.7")]);
        assert_eq!(got, "203.0.113.7");
        let got = client(&policy, "10.0.0.1:4000", &[(CF, "[2001:db8:1:2::1]:443")]);
        assert_eq!(got, "2001:db8:1:2::/64");
    }

    #[test]
    fn a_single_value_header_that_is_not_one_address_gives_the_peer() {
        let policy = policy(&["10.0.0.0/8"], Some(CF));
        let two_lines = [(CF, "203.0.113.7"), (CF, "198.51.100.1")];
        assert_eq!(client(&policy, "10.0.0.1:4000", &two_lines), "10.0.0.1");
        let listed = [(CF, "203.0.113.7, 198.51.100.1")];
        assert_eq!(client(&policy, "10.0.0.1:4000", &listed), "10.0.0.1");
        let garbage = [(CF, "unknown")];
        assert_eq!(client(&policy, "10.0.0.1:4000", &garbage), "10.0.0.1");
        assert_eq!(client(&policy, "10.0.0.1:4000", &[]), "10.0.0.1");
    }

    #[test]
    fn a_single_value_header_is_not_walked_like_a_chain() {
        // Only x-forwarded-for is a chain; x-real-ip from a trusted peer is taken as is.
        let policy = policy(&["10.0.0.0/8"], Some("x-real-ip"));
        let got = client(&policy, "10.0.0.1:4000", &[("x-real-ip", "10.0.0.7")]);
        assert_eq!(got, "10.0.0.7");
    }
}
