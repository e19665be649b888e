#!/usr/bin/env bash
# SIP calls-per-second benchmark: sbcd vs Kamailio, each pinned to one core.
# On demand only (not in CI); needs root and the packages in .ci/packages/test-e2e.txt.
# Usage: tests/bench/sip_cps.sh [--duration 10] [--proxies kamailio,sbcd] [--fixed-rate N]
#        [--start-rate 1000] [--max-rate 40000] [--kamailio-children 2]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p sbc-daemon
exec cargo run --release -p portcullis-tests --bin sip-cps-bench -- "$@"
