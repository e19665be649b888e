//! End-to-end: a trunk reached over TLS that sbcd opens itself. The trunk is a sipp callee
//! (TCP, on 127.0.0.1 of the inside namespace) behind stunnel, which terminates TLS on
//! 198.51.100.2:5061 with a certificate for `pbx.core.test` from a test CA, and requires a
//! client certificate from that CA. sbcd's trunk names the CA and the server name; its inside
//! TLS listener holds a certificate from the same CA, which it presents as the client
//! certificate. Real peers throughout: sipp, stunnel (OpenSSL) and certificates made by the
//! openssl tool.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use portcullis_tests::env::wait_until;
use portcullis_tests::netns::{CLIENT_IP, CORE_IP, SBC_INSIDE_IP, SBC_OUTSIDE_IP};
use portcullis_tests::privileged::{require_root, require_tool};
use portcullis_tests::process::Spec;
use portcullis_tests::proxy::{sbcd_config_with_listeners, Proxy, ProxySpec, Trunk};
use portcullis_tests::sipp::{finish_pair, render, Sipp, SippConfig, Transport};
use portcullis_tests::TestEnv;

const CALLS: u32 = 3;

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA, and two certificates it signs: `<name>.pem` / `<name>.key` for each of
/// `(name, subjectAltName, extendedKeyUsage)`.
fn make_pki(dir: &Path, leaves: &[(&str, &str, &str)]) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-days",
        "2",
        "-subj",
        "/CN=Portcullis test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(dir, &ca);
    for (name, san, eku) in leaves {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={eku}\n"
            ),
        )
        .expect("write extensions");
        let mut req = vec!["req", "-new"];
        req.extend(ec);
        let subj = format!("/CN={name}");
        req.extend(["-subj", &subj, "-keyout", &key, "-out", &csr]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        );
    }
}

#[test]
fn call_through_a_tls_trunk_with_mutual_certificates() {
    const TEST: &str = "tls_trunk_call";
    if !require_root(TEST) {
        return;
    }
    require_tool("sipp", "sip-tester");
    require_tool("stunnel4", "stunnel4");
    require_tool("openssl", "openssl");
    require_tool("ss", "iproute2");
    let mut env = TestEnv::new(TEST).unwrap_or_else(|e| panic!("{TEST}: topology setup: {e}"));
    let (out_ns, sbc_ns, in_ns) = env.topo.names();
    let dir = env.dir.clone();
    make_pki(
        &dir,
        &[
            ("pbx.core.test", "DNS:pbx.core.test", "serverAuth"),
            (
                "sbc.inside.test",
                "DNS:sbc.inside.test",
                "clientAuth,serverAuth",
            ),
        ],
    );
    let path = |f: &str| dir.join(f).display().to_string();

    // The trunk: stunnel (TLS, client certificate required and checked against the CA) in
    // front of the sipp callee, which only stunnel can reach.
    let stunnel_conf = dir.join("stunnel.conf");
    std::fs::write(
        &stunnel_conf,
        format!(
            "foreground = yes\npid =\ndebug = info\n[sip]\naccept = {CORE_IP}:5061\nconnect = 127.0.0.1:5060\n\
             cert = {}\nkey = {}\nCAfile = {}\nrequireCert = yes\nverifyChain = yes\n",
            path("pbx.core.test.pem"),
            path("pbx.core.test.key"),
            path("ca.pem"),
        ),
    )
    .expect("write stunnel.conf");
    let stunnel = env
        .spawn(
            &Spec::new("stunnel", "stunnel4")
                .netns(&in_ns)
                .args([stunnel_conf.display().to_string()]),
        )
        .expect("start stunnel");
    let vars = vec![("UAC_TP".to_string(), "UDP".to_string())];
    let uas_scn = render("uas_tls_trunk.xml", &vars, &dir).expect("render uas");
    let uac_scn = render("uac_tls_trunk.xml", &vars, &dir).expect("render uac");
    let uas = Sipp::start(
        &mut env,
        SippConfig::uas("uas", &in_ns, uas_scn, Ipv4Addr::LOCALHOST, Transport::Tcp).calls(CALLS),
    )
    .expect("start sipp uas");
    let listening = |port: &str| {
        let ns = in_ns.clone();
        let port = port.to_string();
        move || {
            // (`ss` was checked above; a failed run counts as not listening yet.)
            let out = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    "ss",
                    "-ltnH",
                    &format!("sport = :{port}"),
                ])
                .output();
            Ok(out.is_ok_and(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty()))
        }
    };
    wait_until(
        "stunnel listening",
        Duration::from_secs(10),
        listening("5061"),
    )
    .expect("stunnel listens on 5061");
    wait_until("sipp listening", Duration::from_secs(10), listening("5060"))
        .expect("sipp listens on 5060");

    // sbcd: an inside TLS listener (the client certificate), and the trunk over TLS.
    let trunk = Trunk {
        port: 5061,
        tls: Some(format!(
            "{{ ca: {}, server_name: pbx.core.test }}",
            path("ca.pem")
        )),
        ..Trunk::new("pbx", CORE_IP, Transport::Tcp, 1)
    };
    let spec = ProxySpec::standard(vec![trunk]);
    let tls_listener = format!(
        "{{ name: in-tls, proto: tls, address: {SBC_INSIDE_IP}, port: 5061, tls: {{ certificate: {}, private_key: {} }} }}",
        path("sbc.inside.test.pem"),
        path("sbc.inside.test.key")
    );
    let yaml = sbcd_config_with_listeners(&spec, &[], &[tls_listener]);
    let mut proxy = Proxy::start_sbcd_with_config(&mut env, &sbc_ns, spec, yaml)
        .unwrap_or_else(|e| panic!("starting sbcd: {e}"));

    let uac = Sipp::start(
        &mut env,
        SippConfig::uac(
            "uac",
            &out_ns,
            uac_scn,
            CLIENT_IP,
            Transport::Udp,
            (SBC_OUTSIDE_IP, 5060),
        )
        .calls(CALLS)
        .rate(10),
    )
    .expect("start sipp uac");
    let (uac, uas) = finish_pair(uac, uas, Duration::from_secs(40));
    // Everything the callee got came through stunnel, i.e. over TLS, including the
    // end-to-end ACKs and BYEs sent to its TLS Contact.
    for (what, n) in [
        ("INVITE", uas.received_requests("INVITE").len()),
        ("ACK", uas.received_requests("ACK").len()),
        ("BYE", uas.received_requests("BYE").len()),
    ] {
        assert_eq!(n, CALLS as usize, "{what}s at the callee");
    }
    assert_eq!(
        uac.received_responses(200, "INVITE").len(),
        CALLS as usize,
        "200 (INVITE) at the caller"
    );
    // stunnel checked sbcd's client certificate (mutual TLS).
    let log = env.process(stunnel).stderr_text() + &env.process(stunnel).stdout_text();
    assert!(
        log.contains("Certificate accepted") && log.contains("sbc.inside.test"),
        "stunnel accepted sbcd's client certificate:\n{}",
        portcullis_tests::process::tail(&log, 30)
    );
    proxy
        .ensure_running()
        .expect("sbcd still running after the calls");
}
