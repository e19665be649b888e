//! A real Prometheus server (Debian's `prometheus`) scrapes sbcd's `/metrics`: the
//! exposition parses, the target is up and the required series are queryable. Both run in
//! a private network namespace (the SBC host of the test topology), so nothing touches the
//! host's ports.

use std::net::Ipv4Addr;
use std::time::Duration;

use portcullis_tests::env::wait_until;
use portcullis_tests::privileged::{require_root, require_tool};
use portcullis_tests::process::Spec;
use portcullis_tests::proxy::sbcd_binary;
use portcullis_tests::sipp::{is_listening, Transport};
use portcullis_tests::TestEnv;

fn query(ns: &str, q: &str) -> String {
    portcullis_tests::netns::run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "curl",
            "-s",
            "--get",
            "--data-urlencode",
            &format!("query={q}"),
            "http://127.0.0.1:9091/api/v1/query",
        ],
    )
    .unwrap_or_default()
}

#[test]
fn prometheus_scrapes_sbcd_metrics() {
    let test = "prometheus_scrape";
    if !require_root(test) {
        return;
    }
    require_tool("prometheus", "prometheus");
    require_tool("curl", "curl");
    let mut env = TestEnv::new(test).unwrap_or_else(|e| panic!("{test}: setup: {e}"));
    let ns = env.topo.sbc.name().to_string();
    let bin = sbcd_binary("debug").unwrap_or_else(|e| panic!("{e}"));
    env.spawn(&Spec::new("sbcd", bin.display().to_string()).netns(&ns))
        .unwrap_or_else(|e| panic!("starting sbcd: {e}"));
    wait_until("sbcd metrics endpoint", Duration::from_secs(10), || {
        is_listening(&ns, Transport::Tcp, Ipv4Addr::LOCALHOST, 9090)
    })
    .unwrap_or_else(|e| {
        env.dump_logs();
        panic!("{e}")
    });
    let cfg = env.dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sbcd\n    static_configs:\n      - targets: ['127.0.0.1:9090']\n",
    )
    .expect("write prometheus.yml");
    let data = env.dir.join("tsdb");
    env.spawn(&Spec::new("prometheus", "prometheus").netns(&ns).args([
        format!("--config.file={}", cfg.display()),
        format!("--storage.tsdb.path={}", data.display()),
        "--web.listen-address=127.0.0.1:9091".to_string(),
    ]))
    .unwrap_or_else(|e| panic!("starting prometheus: {e}"));
    let ok = wait_until("prometheus scraped sbcd", Duration::from_secs(40), || {
        Ok(query(&ns, "up{job=\"sbcd\"}").contains("\"value\":[")
            && query(&ns, "up{job=\"sbcd\"}").contains(",\"1\"]"))
    });
    if ok.is_err() {
        env.dump_logs();
        panic!(
            "prometheus never saw the sbcd target up: {}",
            query(&ns, "up")
        );
    }
    let build = query(&ns, "sbc_build_info");
    assert!(
        build.contains(&format!("\"version\":\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    for series in [
        "sbc_sip_requests_total",
        "sbc_sip_responses_total",
        "sbc_sip_transactions",
        "sbc_sip_parse_errors_total",
    ] {
        let r = query(&ns, series);
        assert!(
            r.contains("\"result\":[{"),
            "{series} not in Prometheus: {r}"
        );
    }
}
