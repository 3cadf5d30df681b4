//! IPv4 subnets and the choice of free addresses and free subnets (the bookkeeping of who holds
//! what is in the database; this is the arithmetic).

use std::collections::HashSet;
use std::net::Ipv4Addr;

/// `a.b.c.d/len`, its base address aligned to the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// Reads `a.b.c.d/len` (8 ≤ len ≤ 30: room for a gateway and containers).
    pub fn parse(text: &str) -> Result<Subnet, String> {
        let bad = |why: &str| format!("subnet {text:?}: {why}");
        let (ip, len) = text
            .split_once('/')
            .ok_or_else(|| bad("give it as a.b.c.d/len"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = len.parse().map_err(|_| bad("the length is not a number"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("the length must be between 8 and 30"));
        }
        let subnet = Subnet {
            base: Ipv4Addr::from(u32::from(ip) & mask(prefix)),
            prefix,
        };
        if subnet.base != ip {
            return Err(bad(&format!("it is not aligned: did you mean {subnet}?")));
        }
        Ok(subnet)
    }

    fn last(&self) -> u32 {
        u32::from(self.base) | !mask(self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.base)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.base) || other.contains(self.base)
    }

    /// The first host address: the bridge's.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    /// Whether `ip` may be given to a container: inside, not the network, broadcast or gateway.
    pub fn assignable(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        self.contains(ip) && n > u32::from(self.base) + 1 && n < self.last()
    }

    /// The lowest address a container may have that nobody holds.
    pub fn pick(&self, taken: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        (u32::from(self.base) + 2..self.last())
            .map(Ipv4Addr::from)
            .find(|ip| !taken.contains(ip))
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

/// The first /24 of `pool` that overlaps none of `used`: subnets for new networks.
pub fn free_subnet(pool: &Subnet, used: &[Subnet]) -> Option<Subnet> {
    let step = 1u32 << 8;
    let mut base = u32::from(pool.base);
    while base < pool.last() {
        let candidate = Subnet {
            base: Ipv4Addr::from(base),
            prefix: 24,
        };
        if !used.iter().any(|u| u.overlaps(&candidate)) {
            return Some(candidate);
        }
        base += step;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_say_what_is_wrong() {
        let s = Subnet::parse("172.30.0.0/16").unwrap();
        assert_eq!(s.to_string(), "172.30.0.0/16");
        assert_eq!(s.gateway(), Ipv4Addr::new(172, 30, 0, 1));
        assert!(
            Subnet::parse("172.30.0.1/16")
                .unwrap_err()
                .contains("did you mean 172.30.0.0/16")
        );
        assert!(Subnet::parse("172.30.0.0").is_err());
        assert!(Subnet::parse("10.0.0.0/31").is_err());
        assert!(Subnet::parse("300.0.0.0/8").is_err());
    }

    #[test]
    fn addresses_are_picked_lowest_first_and_never_twice() {
        let s = Subnet::parse("10.1.2.0/30").unwrap();
        let mut taken = HashSet::new();
        assert_eq!(s.pick(&taken), Some(Ipv4Addr::new(10, 1, 2, 2)));
        taken.insert(Ipv4Addr::new(10, 1, 2, 2));
        assert_eq!(s.pick(&taken), None, "a /30 holds one container");
        assert!(!s.assignable(Ipv4Addr::new(10, 1, 2, 1)), "the gateway");
        assert!(!s.assignable(Ipv4Addr::new(10, 1, 2, 3)), "broadcast");
        assert!(!s.assignable(Ipv4Addr::new(10, 1, 3, 2)), "outside");
    }

    #[test]
    fn free_subnets_skip_the_used_ones() {
        let pool = Subnet::parse("10.90.0.0/16").unwrap();
        let used = [
            Subnet::parse("10.90.0.0/24").unwrap(),
            Subnet::parse("10.90.1.0/25").unwrap(),
        ];
        assert_eq!(
            free_subnet(&pool, &used).unwrap().to_string(),
            "10.90.2.0/24"
        );
        let all = [pool];
        assert_eq!(free_subnet(&pool, &all), None);
    }
}
