//! `trustmesh-sidecar init`: the nat-table rules that send a pod's TCP traffic through the sidecar.
//!
//! Like Istio's, simplified. Four chains of our own in table `nat`:
//!
//! ```text
//! PREROUTING -p tcp -j TRUSTMESH_INBOUND
//!   TRUSTMESH_INBOUND       RETURN for the sidecar's ports (15006, 15001, 15020) and excluded ports,
//!                           then the included ports (or all) -> TRUSTMESH_IN_REDIRECT
//!   TRUSTMESH_IN_REDIRECT   REDIRECT --to-ports 15006
//! OUTPUT -p tcp -j TRUSTMESH_OUTPUT
//!   TRUSTMESH_OUTPUT        RETURN for the sidecar's uid (and gid), loopback, excluded ports and
//!                           excluded CIDRs, then -> TRUSTMESH_OUT_REDIRECT
//!   TRUSTMESH_OUT_REDIRECT  REDIRECT --to-ports 15001
//! ```
//!
//! [`rules`] is the pure part (argument vectors, testable without root); [`apply`] and [`cleanup`]
//! run them through a [`Runner`], which can prefix every command (`ip netns exec NS`). `apply` is
//! idempotent: it first removes every `TRUSTMESH_*` chain and every jump to one (found by listing
//! the table, so nothing is guessed), then installs the chains, and the two jumps last so traffic
//! is never half-redirected. With `ipv6: true` the same rules go through `ip6tables`.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::process::{Command, Output};

/// Prefix shared by every chain we own; cleanup removes exactly the chains that carry it.
pub const CHAIN_PREFIX: &str = "TRUSTMESH_";
/// Inbound entry chain (jumped to from PREROUTING).
pub const INBOUND: &str = "TRUSTMESH_INBOUND";
/// Inbound redirect to the inbound listener.
pub const IN_REDIRECT: &str = "TRUSTMESH_IN_REDIRECT";
/// Outbound entry chain (jumped to from OUTPUT).
pub const OUTPUT: &str = "TRUSTMESH_OUTPUT";
/// Outbound redirect to the outbound listener.
pub const OUT_REDIRECT: &str = "TRUSTMESH_OUT_REDIRECT";
/// The sidecar's admin port, never redirected.
pub const ADMIN_PORT: u16 = 15020;

/// Which ports are redirected to the sidecar (inbound: local ports; outbound: destination ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSelection {
    /// Every TCP port (`*`) except the excluded ones.
    All,
    /// Only these ports (an empty list redirects nothing inbound).
    Only(Vec<u16>),
}

/// What `init` installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitConfig {
    /// The sidecar's inbound listener (15006).
    pub inbound_port: u16,
    /// The sidecar's outbound listener (15001).
    pub outbound_port: u16,
    /// The uid the sidecar runs as; its own traffic is never redirected (1337).
    pub proxy_uid: u32,
    /// Optionally a gid whose traffic is never redirected either.
    pub proxy_gid: Option<u32>,
    /// Inbound ports to redirect.
    pub include_inbound_ports: PortSelection,
    /// Inbound ports never redirected (the sidecar's own ports always are excluded).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports to redirect (`All` by default).
    pub include_outbound_ports: PortSelection,
    /// Outbound destination ports never redirected.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destination CIDRs never redirected (`10.0.0.0/8`, `fd00::/8`); IPv6 ones only
    /// matter with `ipv6`.
    pub exclude_outbound_cidrs: Vec<String>,
    /// Install the same rules with `ip6tables` too.
    pub ipv6: bool,
}

impl Default for InitConfig {
    fn default() -> Self {
        Self {
            inbound_port: 15006,
            outbound_port: 15001,
            proxy_uid: 1337,
            proxy_gid: None,
            include_inbound_ports: PortSelection::All,
            exclude_inbound_ports: Vec::new(),
            include_outbound_ports: PortSelection::All,
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
            ipv6: false,
        }
    }
}

impl InitConfig {
    /// Checks what iptables would otherwise reject half-way through: ports and CIDRs.
    pub fn validate(&self) -> Result<(), InitError> {
        for (what, port) in [("inbound port", self.inbound_port), ("outbound port", self.outbound_port)] {
            if port == 0 {
                return Err(InitError::InvalidPort { input: "0".into(), reason: format!("the {what} cannot be 0") });
            }
        }
        for cidr in &self.exclude_outbound_cidrs {
            parse_cidr(cidr)?;
        }
        Ok(())
    }
}

/// Why `init` failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A port list entry is not a port.
    #[error("invalid port {input:?}: {reason}; expected a comma-separated list of ports 1-65535 (or `*` for all)")]
    InvalidPort {
        /// The offending text.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An excluded CIDR is malformed.
    #[error("invalid CIDR {input:?}: {reason}; expected ADDRESS/PREFIX such as 10.0.0.0/8 or fd00::/8")]
    InvalidCidr {
        /// The offending text.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The command could not be started.
    #[error(
        "cannot run `{command}`: {source}; is iptables installed (Debian: apt-get install iptables) and on the PATH?"
    )]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: io::Error,
    },
    /// The command ran and failed.
    #[error(
        "`{command}` failed ({status}): {stderr}; init needs the NET_ADMIN capability in the pod's network namespace (run as root or add NET_ADMIN) and a kernel with the iptables nat table and owner match"
    )]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
}

/// The address family a command set is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `iptables`.
    V4,
    /// `ip6tables`.
    V6,
}

impl Family {
    /// The iptables binary for this family.
    pub fn bin(self) -> &'static str {
        match self {
            Self::V4 => "iptables",
            Self::V6 => "ip6tables",
        }
    }

    /// The loopback destination excluded from outbound redirection.
    fn loopback(self) -> &'static str {
        match self {
            Self::V4 => "127.0.0.1/32",
            Self::V6 => "::1/128",
        }
    }
}

/// Parses a comma-separated port list (`80,443, 8080`); empty text is an empty list. `*` is
/// refused here: only the inbound include list accepts it (see [`parse_port_selection`]).
pub fn parse_ports(s: &str) -> Result<Vec<u16>, InitError> {
    let mut ports = Vec::new();
    for item in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |reason: &str| InitError::InvalidPort { input: item.to_owned(), reason: reason.to_owned() };
        if item == "*" {
            return Err(bad("`*` (all ports) is only accepted for the include lists"));
        }
        let port: u16 = item.parse().map_err(|_| bad("not a number between 1 and 65535"))?;
        if port == 0 {
            return Err(bad("port 0 cannot be redirected"));
        }
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok(ports)
}

/// Parses an include list: `*` for every port, otherwise a list as in [`parse_ports`].
pub fn parse_port_selection(s: &str) -> Result<PortSelection, InitError> {
    if s.trim() == "*" { Ok(PortSelection::All) } else { parse_ports(s).map(PortSelection::Only) }
}

/// Validates a CIDR and returns it normalized (`ADDRESS/PREFIX`; a bare address becomes a host
/// route, `/32` or `/128`).
pub fn parse_cidr(s: &str) -> Result<String, InitError> {
    let bad = |reason: &str| InitError::InvalidCidr { input: s.to_owned(), reason: reason.to_owned() };
    let (addr, prefix) = match s.trim().split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s.trim(), None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| bad("not an IPv4 or IPv6 address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match prefix {
        None => max,
        Some(p) => p.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(|| bad("prefix length out of range"))?,
    };
    Ok(format!("{ip}/{len}"))
}

fn cidr_family(s: &str) -> Option<(Family, String)> {
    let cidr = parse_cidr(s).ok()?;
    let fam = if cidr.contains(':') { Family::V6 } else { Family::V4 };
    Some((fam, cidr))
}

/// Every command `apply` runs after cleaning up, in order: `iptables` ones, then `ip6tables`
/// ones if `cfg.ipv6`. Each vector starts with the binary. Assumes a validated config (invalid
/// CIDRs are left out; [`InitConfig::validate`] reports them).
pub fn rules(cfg: &InitConfig) -> Vec<Vec<String>> {
    let mut out = family_rules(cfg, Family::V4);
    if cfg.ipv6 {
        out.extend(family_rules(cfg, Family::V6));
    }
    out
}

/// The commands for one family.
pub fn family_rules(cfg: &InitConfig, fam: Family) -> Vec<Vec<String>> {
    let mut cmds: Vec<Vec<String>> = Vec::new();
    let mut add = |args: &[&str]| {
        let mut cmd = vec![fam.bin().to_owned(), "-t".to_owned(), "nat".to_owned()];
        cmd.extend(args.iter().map(|a| (*a).to_owned()));
        cmds.push(cmd);
    };
    for chain in [INBOUND, IN_REDIRECT, OUTPUT, OUT_REDIRECT] {
        add(&["-N", chain]);
    }
    let (inbound, outbound) = (cfg.inbound_port.to_string(), cfg.outbound_port.to_string());
    add(&["-A", IN_REDIRECT, "-p", "tcp", "-j", "REDIRECT", "--to-ports", &inbound]);
    add(&["-A", OUT_REDIRECT, "-p", "tcp", "-j", "REDIRECT", "--to-ports", &outbound]);

    let mut excluded_in = vec![cfg.inbound_port, cfg.outbound_port, ADMIN_PORT];
    excluded_in.extend(&cfg.exclude_inbound_ports);
    for port in dedup(&excluded_in) {
        add(&["-A", INBOUND, "-p", "tcp", "--dport", &port.to_string(), "-j", "RETURN"]);
    }
    match &cfg.include_inbound_ports {
        PortSelection::All => add(&["-A", INBOUND, "-p", "tcp", "-j", IN_REDIRECT]),
        PortSelection::Only(ports) => {
            for port in dedup(ports) {
                add(&["-A", INBOUND, "-p", "tcp", "--dport", &port.to_string(), "-j", IN_REDIRECT]);
            }
        }
    }

    add(&["-A", OUTPUT, "-m", "owner", "--uid-owner", &cfg.proxy_uid.to_string(), "-j", "RETURN"]);
    if let Some(gid) = cfg.proxy_gid {
        add(&["-A", OUTPUT, "-m", "owner", "--gid-owner", &gid.to_string(), "-j", "RETURN"]);
    }
    add(&["-A", OUTPUT, "-d", fam.loopback(), "-j", "RETURN"]);
    for port in dedup(&cfg.exclude_outbound_ports) {
        add(&["-A", OUTPUT, "-p", "tcp", "--dport", &port.to_string(), "-j", "RETURN"]);
    }
    let mut seen = BTreeSet::new();
    for (cidr_fam, cidr) in cfg.exclude_outbound_cidrs.iter().filter_map(|c| cidr_family(c)) {
        if cidr_fam == fam && seen.insert(cidr.clone()) {
            add(&["-A", OUTPUT, "-d", &cidr, "-j", "RETURN"]);
        }
    }
    match &cfg.include_outbound_ports {
        PortSelection::All => add(&["-A", OUTPUT, "-j", OUT_REDIRECT]),
        PortSelection::Only(ports) => {
            for port in dedup(ports) {
                add(&["-A", OUTPUT, "-p", "tcp", "--dport", &port.to_string(), "-j", OUT_REDIRECT]);
            }
        }
    }

    add(&["-A", "PREROUTING", "-p", "tcp", "-j", INBOUND]);
    add(&["-A", "OUTPUT", "-p", "tcp", "-j", OUTPUT]);
    cmds
}

fn dedup(ports: &[u16]) -> Vec<u16> {
    let mut out = Vec::with_capacity(ports.len());
    for p in ports {
        if !out.contains(p) {
            out.push(*p);
        }
    }
    out
}

/// The commands that remove everything of ours from a `<bin> -t nat -S` listing: jumps into a
/// `TRUSTMESH_*` chain from other chains, then a flush and a delete of every `TRUSTMESH_*` chain.
/// Each vector starts with the binary.
pub fn cleanup_commands(fam: Family, listing: &str) -> Vec<Vec<String>> {
    let head = || vec![fam.bin().to_owned(), "-t".to_owned(), "nat".to_owned()];
    let mut jumps = Vec::new();
    let mut chains = Vec::new();
    for line in listing.lines() {
        let tokens = split_quoted(line);
        match tokens.first().map(String::as_str) {
            Some("-N") if tokens.get(1).is_some_and(|c| c.starts_with(CHAIN_PREFIX)) => {
                chains.push(tokens[1].clone());
            }
            Some("-A") if tokens.get(1).is_some_and(|c| !c.starts_with(CHAIN_PREFIX)) => {
                let target = tokens.iter().skip_while(|t| *t != "-j" && *t != "-g").nth(1);
                if target.is_some_and(|t| t.starts_with(CHAIN_PREFIX)) {
                    let mut cmd = head();
                    cmd.push("-D".to_owned());
                    cmd.extend(tokens[1..].iter().cloned());
                    jumps.push(cmd);
                }
            }
            _ => {}
        }
    }
    let mut out = jumps;
    for (op, chain) in chains.iter().map(|c| ("-F", c)).chain(chains.iter().map(|c| ("-X", c))) {
        let mut cmd = head();
        cmd.extend([op.to_owned(), chain.clone()]);
        out.push(cmd);
    }
    out
}

/// Splits an `iptables -S` line into words, honouring the double quotes it puts around comments.
fn split_quoted(line: &str) -> Vec<String> {
    let (mut words, mut cur, mut quoted, mut has) = (Vec::new(), String::new(), false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => (quoted, has) = (!quoted, true),
            '\\' if quoted => cur.extend(chars.next()),
            c if c.is_whitespace() && !quoted => {
                if has || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                has = false;
            }
            c => cur.push(c),
        }
    }
    if has || !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Runs iptables commands, optionally behind a prefix such as `ip netns exec NS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runner {
    /// Words put before the binary (empty: run it directly).
    pub prefix: Vec<String>,
}

impl Runner {
    /// Runs commands in the current network namespace.
    pub fn local() -> Self {
        Self::default()
    }

    /// Runs commands in the named network namespace through `ip netns exec`.
    pub fn in_netns(name: &str) -> Self {
        Self { prefix: ["ip", "netns", "exec", name].map(String::from).to_vec() }
    }

    /// Runs `bin args...` (behind the prefix) and collects its output; the status is not checked.
    pub fn run(&self, bin: &str, args: &[String]) -> Result<Output, io::Error> {
        let mut words = self.prefix.iter().map(String::as_str).chain(std::iter::once(bin));
        let first = words.next().unwrap_or(bin);
        Command::new(first).args(words).args(args).output()
    }

    /// Runs a command vector (binary first) and fails unless it exits 0.
    fn check(&self, cmd: &[String]) -> Result<Output, InitError> {
        let (bin, args) = cmd.split_first().map_or(("", &[][..]), |(b, a)| (b.as_str(), a));
        let command = self.prefix.iter().chain(cmd).cloned().collect::<Vec<_>>().join(" ");
        let out = self.run(bin, args).map_err(|source| InitError::Spawn { command: command.clone(), source })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(InitError::Failed { command, status: out.status, stderr });
        }
        Ok(out)
    }
}

/// Installs the rules in the runner's network namespace, replacing any earlier trustmesh rules.
/// On failure it tries to remove what it had installed and returns the first error.
pub fn apply(cfg: &InitConfig, runner: &Runner) -> Result<(), InitError> {
    cfg.validate()?;
    cleanup(cfg, runner)?;
    for cmd in rules(cfg) {
        if let Err(e) = runner.check(&cmd) {
            let _ = cleanup(cfg, runner);
            return Err(e);
        }
    }
    Ok(())
}

/// Removes every trustmesh chain and jump. IPv4 always; IPv6 when `cfg.ipv6` (where failures
/// count) and otherwise best-effort, so rules left by an earlier `ipv6: true` run go too.
pub fn cleanup(cfg: &InitConfig, runner: &Runner) -> Result<(), InitError> {
    cleanup_family(Family::V4, runner)?;
    match cleanup_family(Family::V6, runner) {
        Err(e) if cfg.ipv6 => Err(e),
        _ => Ok(()),
    }
}

fn cleanup_family(fam: Family, runner: &Runner) -> Result<(), InitError> {
    let list = [fam.bin(), "-t", "nat", "-S"].map(String::from);
    let listing = runner.check(&list)?;
    for cmd in cleanup_commands(fam, &String::from_utf8_lossy(&listing.stdout)) {
        runner.check(&cmd)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "iptables_tests.rs"]
mod tests;
