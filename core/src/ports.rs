//! Free loopback ports for the tools that start Setlist's processes on one
//! machine (the end-to-end tests, `setlist bench pipeline`).

use std::net::TcpListener;

/// Ports below this are left to well-known services.
const LOWEST: u16 = 10_000;

/// The first port of the kernel's ephemeral range (Linux; 32768 elsewhere).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768)
}

/// The first of `count` consecutive free TCP ports on loopback, below the
/// kernel's ephemeral range. Ports the OS hands out (bind to port 0) lie
/// inside that range, where the Kafka clients of the processes being started
/// also take the local ports of their outgoing connections: one of them
/// could take a port between this check and the bind of the process it was
/// meant for. `None` when no such run of ports is free.
pub fn free_loopback_ports(count: u16) -> Option<u16> {
    let span = u32::from(
        ephemeral_start()
            .saturating_sub(LOWEST.saturating_add(count))
            .max(1),
    );
    // Spread concurrent callers over the range instead of letting them race for one base.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = nanos ^ std::process::id().wrapping_mul(2_654_435_761);
    (0..200u32)
        .map(|attempt| LOWEST + (seed.wrapping_add(attempt.wrapping_mul(7_919)) % span) as u16)
        .find(|&base| (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ports_are_free_and_below_the_ephemeral_range() {
        let base = free_loopback_ports(8).expect("8 free ports on loopback");
        assert!(base >= LOWEST);
        assert!(base + 8 <= ephemeral_start());
        for port in base..base + 8 {
            TcpListener::bind(("127.0.0.1", port)).expect("the port is still free");
        }
    }
}
