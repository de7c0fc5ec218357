#!/usr/bin/env bash
# Example appliance setup for aigate in transparent mode (systemd/aigate-transparent.service).
#
# This host routes the LAN: clients use it as their default gateway (DHCP option 3, or a route
# on the upstream router). Outbound TCP 80/443 arriving on the LAN interface is diverted to the
# transparent listener ([transparent] listen = "0.0.0.0:3129"); everything else is forwarded
# untouched. The gateway's own upstream connections leave through OUTPUT, which no rule here
# touches, so they are never diverted back into it (and the listener refuses anything whose
# original destination is itself).
#
#   appliance-iptables.sh up      install the rules (idempotent: flushes its own chains first)
#   appliance-iptables.sh down    remove them
#
# Environment:
#   LAN_IF=eth1        interface the clients are on
#   WAN_IF=            when set, masquerade forwarded traffic leaving on it (appliance is the NAT)
#   AIGATE_PORT=3129   the transparent listener's port
#   MODE=redirect      "redirect" (NAT REDIRECT, SO_ORIGINAL_DST) or "tproxy" (needs
#                      [transparent] tproxy = true; no NAT, the gateway sees the real destination
#                      as its local address, and IPv6 works the same way)
#   FWMARK=0x1 TABLE=100   policy-routing mark and table of the tproxy variant
#
# Clients must trust the aigate CA (GET http://<gateway>:9090/ca.pem) for intercepted AI
# services; every other host is tunnelled with its own certificate.
#
# The nftables equivalent is systemd/appliance.nft.
set -euo pipefail

LAN_IF=${LAN_IF:-eth1}
WAN_IF=${WAN_IF:-}
AIGATE_PORT=${AIGATE_PORT:-3129}
MODE=${MODE:-redirect}
FWMARK=${FWMARK:-0x1}
TABLE=${TABLE:-100}

ipt() {
    # Both address families get the same rules; an IPv4-only host simply lacks ip6tables.
    iptables "$@"
    if command -v ip6tables >/dev/null 2>&1; then
        ip6tables "$@"
    fi
}

down() {
    for table in nat mangle; do
        for hook in PREROUTING POSTROUTING; do
            while ipt -t "$table" -D "$hook" -j "AIGATE_${hook}" 2>/dev/null; do :; done
            ipt -t "$table" -F "AIGATE_${hook}" 2>/dev/null || true
            ipt -t "$table" -X "AIGATE_${hook}" 2>/dev/null || true
        done
    done
    ipt -t mangle -F AIGATE_DIVERT 2>/dev/null || true
    ipt -t mangle -X AIGATE_DIVERT 2>/dev/null || true
    ip rule del fwmark "$FWMARK" lookup "$TABLE" 2>/dev/null || true
    ip -6 rule del fwmark "$FWMARK" lookup "$TABLE" 2>/dev/null || true
    ip route flush table "$TABLE" 2>/dev/null || true
    ip -6 route flush table "$TABLE" 2>/dev/null || true
}

chain() {
    # chain TABLE HOOK: a fresh AIGATE_<HOOK> chain jumped to from HOOK.
    ipt -t "$1" -N "AIGATE_$2" 2>/dev/null || ipt -t "$1" -F "AIGATE_$2"
    ipt -t "$1" -C "$2" -j "AIGATE_$2" 2>/dev/null || ipt -t "$1" -A "$2" -j "AIGATE_$2"
}

up() {
    sysctl -qw net.ipv4.ip_forward=1
    sysctl -qw net.ipv6.conf.all.forwarding=1 2>/dev/null || true

    case "$MODE" in
    redirect)
        chain nat PREROUTING
        # Traffic for this host itself (management UI, SSH, the explicit proxy) is not diverted.
        ipt -t nat -A AIGATE_PREROUTING -m addrtype --dst-type LOCAL -j RETURN
        ipt -t nat -A AIGATE_PREROUTING -i "$LAN_IF" -p tcp -m multiport --dports 80,443 \
            -j REDIRECT --to-ports "$AIGATE_PORT"
        ;;
    tproxy)
        # Packets of connections the gateway already holds (a transparent socket exists) are
        # marked and delivered locally without another TPROXY lookup.
        ipt -t mangle -N AIGATE_DIVERT 2>/dev/null || ipt -t mangle -F AIGATE_DIVERT
        ipt -t mangle -A AIGATE_DIVERT -j MARK --set-mark "$FWMARK"
        ipt -t mangle -A AIGATE_DIVERT -j ACCEPT
        chain mangle PREROUTING
        ipt -t mangle -A AIGATE_PREROUTING -p tcp -m socket --transparent -j AIGATE_DIVERT
        ipt -t mangle -A AIGATE_PREROUTING -m addrtype --dst-type LOCAL -j RETURN
        ipt -t mangle -A AIGATE_PREROUTING -i "$LAN_IF" -p tcp -m multiport --dports 80,443 \
            -j TPROXY --on-port "$AIGATE_PORT" --tproxy-mark "$FWMARK/$FWMARK"
        # Marked packets are routed to this host, whatever their destination address.
        ip rule add fwmark "$FWMARK" lookup "$TABLE" 2>/dev/null || true
        ip route replace local 0.0.0.0/0 dev lo table "$TABLE"
        ip -6 rule add fwmark "$FWMARK" lookup "$TABLE" 2>/dev/null || true
        ip -6 route replace local ::/0 dev lo table "$TABLE" 2>/dev/null || true
        ;;
    *)
        echo "MODE must be redirect or tproxy, not $MODE" >&2
        exit 2
        ;;
    esac

    if [[ -n "$WAN_IF" ]]; then
        chain nat POSTROUTING
        iptables -t nat -A AIGATE_POSTROUTING -o "$WAN_IF" -j MASQUERADE
    fi
}

case "${1:-}" in
up) down; up ;;
down) down ;;
*)
    echo "usage: $0 up|down   (LAN_IF=$LAN_IF MODE=$MODE AIGATE_PORT=$AIGATE_PORT)" >&2
    exit 2
    ;;
esac
