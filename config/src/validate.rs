//! Semantic checks across the typed configuration: unique names, references
//! between sections, port ranges and bind conflicts, timer relations.
//! Values whose key path already had an error are skipped so one mistake is
//! reported once.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::build::{index, join, Cx};
use crate::model::*;

pub(crate) fn check(cfg: &Config, cx: &mut Cx<'_>) {
    interfaces_present(cfg, cx);
    unique_names(cfg, cx);
    listeners(cfg, cx);
    media(cfg, cx);
    trunks(cfg, cx);
    routes(cfg, cx);
    timers(cfg, cx);
    registrar(cfg, cx);
}

fn registrar(cfg: &Config, cx: &mut Cx<'_>) {
    let r = &cfg.registrar;
    if let Some(g) = &r.upstream {
        if !cx.is_bad("registrar.upstream") && cfg.trunks_in_group(g).next().is_none() {
            cx.error_at(
                "registrar.upstream",
                format!("trunk group '{g}' has no trunks"),
            );
        }
    }
    for (i, iface) in cfg.interfaces.iter().enumerate() {
        let p = &iface.policy;
        if p.registration_client_expires > 0
            && p.registration_client_expires >= p.registration_upstream_expires
        {
            let path = format!("interfaces[{i}].policy.registration_client_expires");
            if !cx.is_bad(&path) {
                cx.error_at(
                    &path,
                    format!(
                        "must be < registration_upstream_expires ({}), got {}",
                        p.registration_upstream_expires, p.registration_client_expires
                    ),
                );
            }
        }
    }
    if cx.is_bad("registrar.min_expires") {
        return;
    }
    for (key, v) in [
        ("default_expires", r.default_expires),
        ("max_expires", r.max_expires),
    ] {
        let p = format!("registrar.{key}");
        if !cx.is_bad(&p) && v < r.min_expires {
            cx.error_at(
                &p,
                format!("must be >= min_expires ({}), got {v}", r.min_expires),
            );
        }
    }
    if !cx.is_bad("registrar.max_expires")
        && !cx.is_bad("registrar.default_expires")
        && r.default_expires > r.max_expires
    {
        cx.error_at(
            "registrar.default_expires",
            format!(
                "must be <= max_expires ({}), got {}",
                r.max_expires, r.default_expires
            ),
        );
    }
}

fn interfaces_present(cfg: &Config, cx: &mut Cx<'_>) {
    if cx.is_bad("interfaces") {
        return;
    }
    if cfg.interfaces.is_empty() {
        cx.error_at("interfaces", "at least one interface is required");
        return;
    }
    let any_bad =
        (0..cfg.interfaces.len()).any(|i| cx.is_bad(&join(&index("interfaces", i), "listeners")));
    if !any_bad && cfg.interfaces.iter().all(|i| i.listeners.is_empty()) {
        cx.error_at(
            "interfaces",
            "at least one interface needs at least one listener",
        );
    }
}

/// Report duplicates among (path, name) pairs, skipping bad or empty names.
fn duplicates(cx: &mut Cx<'_>, what: &str, items: Vec<(String, &str)>) {
    let mut seen: HashMap<&str, String> = HashMap::new();
    for (path, name) in items {
        if name.is_empty() || cx.is_bad(&path) {
            continue;
        }
        if let Some(first) = seen.get(name) {
            let line = cx.loc(first).line;
            let msg =
                format!("duplicate {what} name '{name}' (first used at {first}, line {line})");
            cx.error_at(&path, msg);
        } else {
            seen.insert(name, path);
        }
    }
}

fn unique_names(cfg: &Config, cx: &mut Cx<'_>) {
    let ifaces = cfg
        .interfaces
        .iter()
        .enumerate()
        .map(|(i, x)| (join(&index("interfaces", i), "name"), x.name.as_str()))
        .collect();
    duplicates(cx, "interface", ifaces);
    let mut ls = Vec::new();
    for (i, x) in cfg.interfaces.iter().enumerate() {
        for (j, l) in x.listeners.iter().enumerate() {
            let p = index(&join(&index("interfaces", i), "listeners"), j);
            ls.push((join(&p, "name"), l.name.as_str()));
        }
    }
    duplicates(cx, "listener", ls);
    let trunks = cfg
        .trunks
        .iter()
        .enumerate()
        .map(|(i, x)| (join(&index("trunks", i), "name"), x.name.as_str()))
        .collect();
    duplicates(cx, "trunk", trunks);
    let routes = cfg
        .routes
        .iter()
        .enumerate()
        .map(|(i, x)| (join(&index("routes", i), "name"), x.name.as_str()))
        .collect();
    duplicates(cx, "route", routes);
    let users = cfg
        .registrar
        .users
        .iter()
        .enumerate()
        .map(|(i, x)| (join(&index("registrar.users", i), "user"), x.user.as_str()))
        .collect();
    duplicates(cx, "registrar user", users);
}

fn listener_path(i: usize, j: usize) -> String {
    index(&join(&index("interfaces", i), "listeners"), j)
}

fn listeners(cfg: &Config, cx: &mut Cx<'_>) {
    // (is_stream, address, port) -> (path, listener)
    let mut binds: HashMap<(bool, IpAddr, u16), (String, &Listener)> = HashMap::new();
    for (i, iface) in cfg.interfaces.iter().enumerate() {
        for (j, l) in iface.listeners.iter().enumerate() {
            let p = listener_path(i, j);
            if cx.is_bad(&p) {
                continue;
            }
            if l.proto.is_secure() && l.tls.is_none() {
                cx.error_at(
                    &p,
                    format!(
                        "proto {} requires tls.certificate and tls.private_key",
                        l.proto.as_str()
                    ),
                );
            }
            if !l.proto.is_secure() && l.tls.is_some() {
                cx.error_at(
                    &join(&p, "tls"),
                    format!(
                        "tls settings are only allowed for proto tls or wss, not {}",
                        l.proto.as_str()
                    ),
                );
            }
            if ["address", "port", "proto"]
                .iter()
                .any(|k| cx.is_bad(&join(&p, k)))
            {
                continue;
            }
            let key = (l.proto.is_stream(), l.address, l.port);
            if let Some((first, other)) = binds.get(&key) {
                let msg = if other.proto == l.proto {
                    format!(
                        "listener '{}' binds the same {} {}:{} as listener '{}' ({first})",
                        l.name,
                        l.proto.as_str(),
                        l.address,
                        l.port,
                        other.name
                    )
                } else {
                    format!(
                        "{} listener '{}' and {} listener '{}' ({first}) both need TCP port {} on {}",
                        l.proto.as_str(),
                        l.name,
                        other.proto.as_str(),
                        other.name,
                        l.port,
                        l.address
                    )
                };
                cx.error_at(&join(&p, "port"), msg);
            } else {
                binds.insert(key, (p, l));
            }
        }
    }
}

fn media(cfg: &Config, cx: &mut Cx<'_>) {
    let mut ranges: Vec<(String, IpAddr, u16, u16)> = Vec::new();
    for (i, iface) in cfg.interfaces.iter().enumerate() {
        let Some(m) = &iface.media else { continue };
        let p = join(&index("interfaces", i), "media");
        let min_p = join(&p, "port_min");
        let max_p = join(&p, "port_max");
        if cx.is_bad(&min_p) || cx.is_bad(&max_p) {
            continue;
        }
        if m.port_min % 2 != 0 {
            cx.error_at(
                &min_p,
                format!(
                    "must be even (RTP uses the even port, RTCP the next), got {}",
                    m.port_min
                ),
            );
        }
        if m.port_min > m.port_max {
            cx.error_at(
                &max_p,
                format!(
                    "port_max ({}) must not be below port_min ({})",
                    m.port_max, m.port_min
                ),
            );
            continue;
        }
        if cx.is_bad(&join(&p, "address")) {
            continue;
        }
        let overlap = ranges.iter().find(|(_, a, lo, hi)| {
            (*a == m.address || a.is_unspecified() || m.address.is_unspecified())
                && m.port_min <= *hi
                && *lo <= m.port_max
        });
        if let Some((other, _, lo, hi)) = overlap {
            let msg = format!(
                "media ports {}-{} on {} overlap {other} ({lo}-{hi})",
                m.port_min, m.port_max, m.address
            );
            cx.error_at(&p, msg);
        } else {
            ranges.push((p, m.address, m.port_min, m.port_max));
        }
    }
}

/// True when every interface name is known (no error on any of them), so
/// "unknown interface" would not be a follow-on error.
fn interface_names_complete(cfg: &Config, cx: &Cx<'_>) -> bool {
    !cx.is_bad("interfaces")
        && (0..cfg.interfaces.len()).all(|i| !cx.is_bad(&join(&index("interfaces", i), "name")))
}

fn known(names: impl Iterator<Item = String>) -> String {
    let mut v: Vec<String> = Vec::new();
    for n in names {
        let q = format!("'{n}'");
        if !n.is_empty() && !v.contains(&q) {
            v.push(q);
        }
    }
    if v.is_empty() {
        "none defined".into()
    } else {
        format!("known: {}", v.join(", "))
    }
}

fn trunks(cfg: &Config, cx: &mut Cx<'_>) {
    let complete = interface_names_complete(cfg, cx);
    for (i, t) in cfg.trunks.iter().enumerate() {
        let p = index("trunks", i);
        let ip = join(&p, "interface");
        if cx.is_bad(&ip) {
            continue;
        }
        let Some((ii, iface)) = cfg
            .interfaces
            .iter()
            .enumerate()
            .find(|(_, x)| x.name == t.interface)
        else {
            if complete {
                let k = known(cfg.interfaces.iter().map(|x| x.name.clone()));
                cx.error_at(&ip, format!("unknown interface '{}' ({k})", t.interface));
            }
            continue;
        };
        if iface.listeners.is_empty() && !cx.is_bad(&index("interfaces", ii)) {
            cx.error_at(&ip, format!("interface '{}' has no listeners", t.interface));
            continue;
        }
        // (With a pinned listener, the listener's own check below says it.)
        if t.transport == TrunkTransport::Tls
            && t.listener.is_none()
            && !cx.is_bad(&join(&p, "transport"))
            && !iface.listeners.iter().any(|l| l.proto == Proto::Tls)
            && !cx.is_bad(&index("interfaces", ii))
        {
            cx.error_at(
                &join(&p, "transport"),
                format!(
                    "transport tls needs a tls listener on interface '{}' (sbcd sends from it \
                     and presents its certificate when the trunk asks for one)",
                    t.interface
                ),
            );
            continue;
        }
        let lp = join(&p, "listener");
        let Some(lname) = &t.listener else { continue };
        if cx.is_bad(&lp) {
            continue;
        }
        let names_ok =
            (0..iface.listeners.len()).all(|j| !cx.is_bad(&join(&listener_path(ii, j), "name")));
        match iface.listeners.iter().find(|l| &l.name == lname) {
            None if names_ok => {
                let k = known(iface.listeners.iter().map(|l| l.name.clone()));
                cx.error_at(
                    &lp,
                    format!(
                        "interface '{}' has no listener '{lname}' ({k})",
                        t.interface
                    ),
                );
            }
            Some(l) if l.proto != t.transport.proto() && !cx.is_bad(&join(&p, "transport")) => {
                cx.error_at(
                    &lp,
                    format!(
                        "listener '{lname}' is {} but the trunk transport is {}",
                        l.proto.as_str(),
                        t.transport.as_str()
                    ),
                );
            }
            _ => {}
        }
    }
}

fn routes(cfg: &Config, cx: &mut Cx<'_>) {
    let complete = interface_names_complete(cfg, cx);
    let groups_complete = !cx.is_bad("trunks")
        && (0..cfg.trunks.len()).all(|i| !cx.is_bad(&join(&index("trunks", i), "group")));
    for (i, r) in cfg.routes.iter().enumerate() {
        let p = index("routes", i);
        if let Some(iname) = &r.r#match.interface {
            let ip = join(&join(&p, "match"), "interface");
            if complete && !cx.is_bad(&ip) && cfg.interface(iname).is_none() {
                let k = known(cfg.interfaces.iter().map(|x| x.name.clone()));
                cx.error_at(&ip, format!("unknown interface '{iname}' ({k})"));
            }
        }
        let gp = join(&p, "group");
        if groups_complete
            && !cx.is_bad(&gp)
            && !r.group.is_empty()
            && cfg.trunks_in_group(&r.group).next().is_none()
        {
            let mut groups: Vec<String> = cfg.trunks.iter().map(|t| t.group.clone()).collect();
            groups.sort();
            groups.dedup();
            let k = known(groups.into_iter());
            cx.error_at(
                &gp,
                format!("no trunk belongs to group '{}' ({k})", r.group),
            );
        }
    }
}

fn timers(cfg: &Config, cx: &mut Cx<'_>) {
    let t = &cfg.sip.timers;
    let t1 = "sip.timers.t1_ms";
    if cx.is_bad(t1) {
        return;
    }
    for (key, v) in [("t2_ms", t.t2_ms), ("t4_ms", t.t4_ms)] {
        let p = format!("sip.timers.{key}");
        if !cx.is_bad(&p) && v < t.t1_ms {
            cx.error_at(&p, format!("must be >= t1_ms ({}), got {v}", t.t1_ms));
        }
    }
}
