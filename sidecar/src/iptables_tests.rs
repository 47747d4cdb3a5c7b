//! The pure parts of `init`: rule generation, parsing of ports and CIDRs, cleanup planning.

use super::*;

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

fn lines(cmds: &[Vec<String>]) -> Vec<String> {
    cmds.iter().map(|c| c.join(" ")).collect()
}

const HEAD: &[&str] = &[
    "iptables -t nat -N TRUSTMESH_INBOUND",
    "iptables -t nat -N TRUSTMESH_IN_REDIRECT",
    "iptables -t nat -N TRUSTMESH_OUTPUT",
    "iptables -t nat -N TRUSTMESH_OUT_REDIRECT",
    "iptables -t nat -A TRUSTMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
    "iptables -t nat -A TRUSTMESH_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
    "iptables -t nat -A TRUSTMESH_INBOUND -p tcp --dport 15006 -j RETURN",
    "iptables -t nat -A TRUSTMESH_INBOUND -p tcp --dport 15001 -j RETURN",
    "iptables -t nat -A TRUSTMESH_INBOUND -p tcp --dport 15020 -j RETURN",
];
const JUMPS: &[&str] = &[
    "iptables -t nat -A PREROUTING -p tcp -j TRUSTMESH_INBOUND",
    "iptables -t nat -A OUTPUT -p tcp -j TRUSTMESH_OUTPUT",
];

fn expected(middle: &[&str]) -> Vec<String> {
    HEAD.iter().chain(middle).chain(JUMPS).map(|s| (*s).to_owned()).collect()
}

#[test]
fn rules_table() {
    let cases: Vec<(&str, InitConfig, Vec<&str>)> = vec![
        (
            "default: everything inbound, everything outbound but the proxy uid and loopback",
            InitConfig::default(),
            vec![
                "iptables -t nat -A TRUSTMESH_INBOUND -p tcp -j TRUSTMESH_IN_REDIRECT",
                "iptables -t nat -A TRUSTMESH_OUTPUT -m owner --uid-owner 1337 -j RETURN",
                "iptables -t nat -A TRUSTMESH_OUTPUT -d 127.0.0.1/32 -j RETURN",
                "iptables -t nat -A TRUSTMESH_OUTPUT -j TRUSTMESH_OUT_REDIRECT",
            ],
        ),
        (
            "include list, exclusions, gid, CIDRs (the IPv6 one ignored without ipv6)",
            InitConfig {
                proxy_uid: 2000,
                proxy_gid: Some(3000),
                include_inbound_ports: PortSelection::Only(vec![8080, 9090, 8080]),
                exclude_inbound_ports: vec![22, 15006],
                exclude_outbound_ports: vec![5432, 6379],
                exclude_outbound_cidrs: vec!["10.96.0.0/12".into(), "fd00::/8".into(), "169.254.169.254".into()],
                ..InitConfig::default()
            },
            vec![
                "iptables -t nat -A TRUSTMESH_INBOUND -p tcp --dport 22 -j RETURN",
                "iptables -t nat -A TRUSTMESH_INBOUND -p tcp --dport 8080 -j TRUSTMESH_IN_REDIRECT",
                "iptables -t nat -A TRUSTMESH_INBOUND -p tcp --dport 9090 -j TRUSTMESH_IN_REDIRECT",
                "iptables -t nat -A TRUSTMESH_OUTPUT -m owner --uid-owner 2000 -j RETURN",
                "iptables -t nat -A TRUSTMESH_OUTPUT -m owner --gid-owner 3000 -j RETURN",
                "iptables -t nat -A TRUSTMESH_OUTPUT -d 127.0.0.1/32 -j RETURN",
                "iptables -t nat -A TRUSTMESH_OUTPUT -p tcp --dport 5432 -j RETURN",
                "iptables -t nat -A TRUSTMESH_OUTPUT -p tcp --dport 6379 -j RETURN",
                "iptables -t nat -A TRUSTMESH_OUTPUT -d 10.96.0.0/12 -j RETURN",
                "iptables -t nat -A TRUSTMESH_OUTPUT -d 169.254.169.254/32 -j RETURN",
                "iptables -t nat -A TRUSTMESH_OUTPUT -j TRUSTMESH_OUT_REDIRECT",
            ],
        ),
        (
            "empty include list: no inbound redirect at all",
            InitConfig { include_inbound_ports: PortSelection::Only(vec![]), ..InitConfig::default() },
            vec![
                "iptables -t nat -A TRUSTMESH_OUTPUT -m owner --uid-owner 1337 -j RETURN",
                "iptables -t nat -A TRUSTMESH_OUTPUT -d 127.0.0.1/32 -j RETURN",
                "iptables -t nat -A TRUSTMESH_OUTPUT -j TRUSTMESH_OUT_REDIRECT",
            ],
        ),
        (
            "outbound include list: only calls to these destination ports go through the sidecar",
            InitConfig { include_outbound_ports: PortSelection::Only(vec![80, 8080, 80]), ..InitConfig::default() },
            vec![
                "iptables -t nat -A TRUSTMESH_INBOUND -p tcp -j TRUSTMESH_IN_REDIRECT",
                "iptables -t nat -A TRUSTMESH_OUTPUT -m owner --uid-owner 1337 -j RETURN",
                "iptables -t nat -A TRUSTMESH_OUTPUT -d 127.0.0.1/32 -j RETURN",
                "iptables -t nat -A TRUSTMESH_OUTPUT -p tcp --dport 80 -j TRUSTMESH_OUT_REDIRECT",
                "iptables -t nat -A TRUSTMESH_OUTPUT -p tcp --dport 8080 -j TRUSTMESH_OUT_REDIRECT",
            ],
        ),
    ];
    for (name, cfg, middle) in cases {
        assert_eq!(lines(&rules(&cfg)), expected(&middle), "{name}");
    }
}

#[test]
fn custom_listener_ports_are_redirect_targets_and_excluded() {
    let cfg = InitConfig { inbound_port: 7006, outbound_port: 7001, ..InitConfig::default() };
    let got = lines(&rules(&cfg));
    for want in [
        "iptables -t nat -A TRUSTMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 7006",
        "iptables -t nat -A TRUSTMESH_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 7001",
        "iptables -t nat -A TRUSTMESH_INBOUND -p tcp --dport 7006 -j RETURN",
        "iptables -t nat -A TRUSTMESH_INBOUND -p tcp --dport 7001 -j RETURN",
        "iptables -t nat -A TRUSTMESH_INBOUND -p tcp --dport 15020 -j RETURN",
    ] {
        assert!(got.iter().any(|l| l == want), "missing {want}: {got:#?}");
    }
}

#[test]
fn ipv6_repeats_the_rules_with_ip6tables() {
    let cfg = InitConfig {
        ipv6: true,
        exclude_outbound_cidrs: vec!["10.0.0.0/8".into(), "fd00::/8".into()],
        ..InitConfig::default()
    };
    let all = rules(&cfg);
    let (v4, v6): (Vec<_>, Vec<_>) = all.iter().partition(|c| c[0] == "iptables");
    assert!(v6.iter().all(|c| c[0] == "ip6tables"));
    assert_eq!(v4.len(), v6.len());
    let v6 = lines(&v6.into_iter().cloned().collect::<Vec<_>>());
    assert!(v6.contains(&"ip6tables -t nat -A TRUSTMESH_OUTPUT -d ::1/128 -j RETURN".to_owned()));
    assert!(v6.contains(&"ip6tables -t nat -A TRUSTMESH_OUTPUT -d fd00::/8 -j RETURN".to_owned()));
    assert!(!v6.iter().any(|l| l.contains("10.0.0.0/8") || l.contains("127.0.0.1")));
    assert_eq!(v6.last().map(String::as_str), Some("ip6tables -t nat -A OUTPUT -p tcp -j TRUSTMESH_OUTPUT"));
    assert_eq!(rules(&InitConfig::default()).len(), 15);
}

#[test]
fn port_parsing() {
    assert_eq!(parse_ports("").expect("empty"), Vec::<u16>::new());
    assert_eq!(parse_ports("80, 443,80,,8080").expect("list"), vec![80, 443, 8080]);
    assert_eq!(parse_port_selection(" * ").expect("all"), PortSelection::All);
    assert_eq!(parse_port_selection("9090").expect("one"), PortSelection::Only(vec![9090]));
    for bad in ["0", "65536", "http", "80;443", "*"] {
        let err = parse_ports(bad).expect_err(bad);
        assert!(matches!(err, InitError::InvalidPort { .. }), "{bad}: {err}");
        assert!(err.to_string().contains("invalid port"), "{err}");
    }
    assert!(parse_port_selection("*,80").is_err());
}

#[test]
fn cidr_parsing_and_validation() {
    assert_eq!(parse_cidr("10.0.0.0/8").expect("v4"), "10.0.0.0/8");
    assert_eq!(parse_cidr(" 10.1.2.3 ").expect("host"), "10.1.2.3/32");
    assert_eq!(parse_cidr("fd00::/8").expect("v6"), "fd00::/8");
    assert_eq!(parse_cidr("::1").expect("v6 host"), "::1/128");
    for bad in ["10.0.0.0/33", "fd00::/129", "10.0.0/8", "example.com/8", "10.0.0.0/", ""] {
        assert!(matches!(parse_cidr(bad), Err(InitError::InvalidCidr { .. })), "{bad}");
    }
    let cfg = InitConfig { exclude_outbound_cidrs: vec!["10.0.0.0/40".into()], ..InitConfig::default() };
    let err = cfg.validate().expect_err("bad cidr");
    assert!(err.to_string().contains("10.0.0.0/40"), "{err}");
    assert!(InitConfig { inbound_port: 0, ..InitConfig::default() }.validate().is_err());
    assert!(InitConfig::default().validate().is_ok());
}

#[test]
fn cleanup_plan_from_listing() {
    let listing = "-P PREROUTING ACCEPT\n-P OUTPUT ACCEPT\n-N KUBE-SERVICES\n-N TRUSTMESH_INBOUND\n\
        -N TRUSTMESH_OUTPUT\n-A PREROUTING -p tcp -j TRUSTMESH_INBOUND\n\
        -A PREROUTING -p tcp -j TRUSTMESH_INBOUND\n-A PREROUTING -j KUBE-SERVICES\n\
        -A OUTPUT -p tcp -m comment --comment \"trustmesh jump\" -j TRUSTMESH_OUTPUT\n\
        -A TRUSTMESH_INBOUND -p tcp -j TRUSTMESH_IN_REDIRECT\n";
    let got = lines(&cleanup_commands(Family::V6, listing));
    assert_eq!(
        got,
        vec![
            "ip6tables -t nat -D PREROUTING -p tcp -j TRUSTMESH_INBOUND",
            "ip6tables -t nat -D PREROUTING -p tcp -j TRUSTMESH_INBOUND",
            "ip6tables -t nat -D OUTPUT -p tcp -m comment --comment trustmesh jump -j TRUSTMESH_OUTPUT",
            "ip6tables -t nat -F TRUSTMESH_INBOUND",
            "ip6tables -t nat -F TRUSTMESH_OUTPUT",
            "ip6tables -t nat -X TRUSTMESH_INBOUND",
            "ip6tables -t nat -X TRUSTMESH_OUTPUT",
        ]
    );
    // The quoted comment stays one argument.
    let plan = cleanup_commands(Family::V4, "-A OUTPUT -m comment --comment \"a b\" -j TRUSTMESH_OUTPUT");
    assert_eq!(plan[0][8], "a b");
    assert!(cleanup_commands(Family::V4, "-P OUTPUT ACCEPT\n-A OUTPUT -j RETURN\n").is_empty());
}

#[test]
fn runner_reports_the_command_and_the_fix() {
    let runner = Runner { prefix: words("env") };
    let err = runner.check(&words("trustmesh-no-such-binary -t nat -S")).expect_err("spawn");
    let msg = err.to_string();
    assert!(msg.contains("env trustmesh-no-such-binary -t nat -S"), "{msg}");
    assert!(msg.contains("NET_ADMIN"), "{msg}");

    let err = Runner::local().check(&words("trustmesh-no-such-binary -S")).expect_err("spawn");
    assert!(matches!(err, InitError::Spawn { .. }), "{err}");
    assert!(err.to_string().contains("is iptables installed"), "{err}");

    assert!(Runner::local().check(&words("true")).is_ok());
    assert_eq!(Runner::in_netns("ns1").prefix, words("ip netns exec ns1"));
}
