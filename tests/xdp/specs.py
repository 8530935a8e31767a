#!/usr/bin/env python3
"""Writes the test specs tests/xdp/<name>.json from the packet recipes below.

The JSON files are what the suite reads (format: crates/difftest/src/spec.rs,
tests/xdp/README.md); this script only saves writing packets and checksums by
hand. Run it after changing a recipe: `python3 tests/xdp/specs.py`.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def h(b):
    return b.hex()


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def mac(s):
    return bytes.fromhex(s.replace(":", ""))


def ip4(s):
    return bytes(int(x) for x in s.split("."))


def ip6(s):
    import ipaddress
    return ipaddress.IPv6Address(s).packed


A = mac("02:00:00:00:00:0a")
B = mac("02:00:00:00:00:0b")
BCAST = mac("ff:ff:ff:ff:ff:ff")


def eth(proto, dst=B, src=A):
    return dst + src + struct.pack("!H", proto)


def vlan(vid, proto, prio=0):
    return struct.pack("!HH", (prio << 13) | vid, proto)


def ipv4(src, dst, proto, payload, ttl=64, options=b"", frag=0, ident=1, tot=None):
    ihl = 5 + len(options) // 4
    tot = 20 + len(options) + len(payload) if tot is None else tot
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, tot, ident, frag, ttl, proto, 0,
                      ip4(src), ip4(dst)) + options
    c = csum(hdr)
    return hdr[:10] + struct.pack("!H", c) + hdr[12:]


def l4sum(src, dst, proto, seg):
    pseudo = ip4(src) + ip4(dst) + struct.pack("!BBH", 0, proto, len(seg))
    return csum(pseudo + seg)


def tcp(src, dst, sport, dport, flags, seq=1000, payload=b""):
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload
    c = l4sum(src, dst, 6, seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def udp(src, dst, sport, dport, payload=b""):
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    c = l4sum(src, dst, 17, seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", c) + seg[8:]


def icmp(typ, code=0, ident=1, seq=1, payload=b"ping"):
    m = struct.pack("!BBHHH", typ, code, 0, ident, seq) + payload
    c = csum(m)
    return m[:2] + struct.pack("!H", c) + m[4:]


def ipv6(src, dst, nh, payload, hlim=64):
    return struct.pack("!IHBB", 0x60000000, len(payload), nh, hlim) + ip6(src) + ip6(dst)


def arp():
    return bytes.fromhex("0001080006040001") + A + ip4("10.0.0.1") + bytes(6) + ip4("10.0.0.2")


# ---- packet recipes -------------------------------------------------------

def p(name, pieces, expect=None):
    d = {"name": name, "hex": [h(x) for x in pieces]}
    if expect:
        d["expect"] = expect
    return d


def tcp4(src, dst, sport, dport, flags=0x10, payload=b"", seq=1000, ttl=64, options=b"", **kw):
    t = tcp(src, dst, sport, dport, flags, seq, payload)
    return [eth(0x0800, dst=kw.get('dmac', B), src=kw.get('smac', A)), ipv4(src, dst, 6, t, ttl=ttl, options=options), t]


def udp4(src, dst, sport, dport, payload=b"", ttl=64, options=b"", frag=0, **kw):
    u = udp(src, dst, sport, dport, payload)
    return [eth(0x0800, dst=kw.get('dmac', B), src=kw.get('smac', A)), ipv4(src, dst, 17, u, ttl=ttl, options=options, frag=frag), u]


def icmp4(src, dst, typ=8, ttl=64, **kw):
    m = icmp(typ)
    return [eth(0x0800, dst=kw.get('dmac', B), src=kw.get('smac', A)), ipv4(src, dst, 1, m, ttl=ttl), m]


def udp6(src, dst, sport, dport, payload=b"", hlim=64):
    u = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return [eth(0x86DD), ipv6(src, dst, 17, u, hlim=hlim), u]


def short13():
    return p("13 bytes: shorter than an Ethernet header", [eth(0x0800)[:13]], "error")


def eth_only(expect=None):
    return p("Ethernet header only, IPv4 ethertype", [eth(0x0800)], expect)


def trunc_ip(expect=None):
    full = udp4("10.0.0.1", "10.0.0.2", 1000, 53, b"abcd")
    return p("IPv4 header cut at 10 bytes", [full[0], full[1][:10]], expect)


def u32(n):
    return h(struct.pack("<I", n))


def u64(n):
    return h(struct.pack("<Q", n & 0xFFFFFFFFFFFFFFFF))


RR_OPT = bytes([7, 7, 4]) + bytes(4) + bytes([1])  # record route (7 bytes) + NOP = 8


SPECS = {}


def spec(name, **kw):
    SPECS[name] = kw


# ---- the specs ------------------------------------------------------------

spec("parse_stats", object="parse_stats.o", program="xdp_parse_stats",
     about="protocol classes, drops of truncated headers and expiring TTLs",
     packets=[
         p("TCP over IPv4", tcp4("10.0.0.1", "10.0.0.2", 1234, 80, 0x02), "XDP_PASS"),
         p("UDP over IPv6", udp6("2001:db8::1", "2001:db8::2", 1000, 53, b"q"), "XDP_PASS"),
         p("ARP request", [eth(0x0806, dst=BCAST), arp()], "XDP_PASS"),
         p("VLAN 100 TCP", [eth(0x8100), vlan(100, 0x0800)] + tcp4("10.0.0.1", "10.0.0.2", 1, 2)[1:], "XDP_PASS"),
         p("QinQ UDP", [eth(0x88A8), vlan(10, 0x8100), vlan(20, 0x0800)] + udp4("10.0.0.1", "10.0.0.2", 1, 2)[1:], "XDP_PASS"),
         p("IPv4 with options", udp4("10.0.0.1", "10.0.0.2", 1, 2, options=RR_OPT), "XDP_PASS"),
         p("TTL 1", udp4("10.0.0.1", "10.0.0.2", 1, 2, ttl=1), "XDP_DROP"),
         p("IPv6 hop limit 0", udp6("2001:db8::1", "2001:db8::2", 1, 2, hlim=0), "XDP_DROP"),
         p("LLDP (odd ethertype)", [eth(0x88CC, dst=mac("01:80:c2:00:00:0e")), bytes(10)], "XDP_PASS"),
         p("IPv4 with ihl 3", [eth(0x0800), bytes([0x43]) + bytes(19)], "XDP_DROP"),
         p("IPv4 options cut off", [eth(0x0800), bytes([0x4f]) + bytes(30)], "XDP_DROP"),
         p("VLAN tag cut off", [eth(0x8100), b"\x00"], "XDP_DROP"),
         short13(), eth_only("XDP_DROP"), trunc_ip("XDP_DROP"),
     ])

spec("token_bucket", object="token_bucket.o", program="xdp_token_bucket",
     about="S12: two-colour token bucket per source, 300-byte burst, 1 byte/s refill",
     maps={"config": [{"key": u32(0), "value": u64(1) + u64(300)}]},
     normalise=[{"map": "buckets", "rule": "nonzero", "offset": 8, "len": 8,
                 "why": "last_ns is a bpf_ktime_get_ns() time stamp"}],
     packets=[
         p("10.0.0.1: 100 bytes, green", udp4("10.0.0.1", "10.0.0.9", 1, 2, bytes(58)), "XDP_PASS"),
         p("10.0.0.1: 100 bytes, green", udp4("10.0.0.1", "10.0.0.9", 1, 2, bytes(58)), "XDP_PASS"),
         p("10.0.0.2: 60 bytes, green", udp4("10.0.0.2", "10.0.0.9", 1, 2, bytes(18)), "XDP_PASS"),
         p("10.0.0.1: 150 bytes, red (100 left)", udp4("10.0.0.1", "10.0.0.9", 1, 2, bytes(108)), "XDP_DROP"),
         p("10.0.0.1: 100 bytes, green (exactly)", udp4("10.0.0.1", "10.0.0.9", 1, 2, bytes(58)), "XDP_PASS"),
         p("10.0.0.1: 42 bytes, red (empty)", udp4("10.0.0.1", "10.0.0.9", 1, 2), "XDP_DROP"),
         p("10.0.0.3: 400 bytes, red (over burst)", udp4("10.0.0.3", "10.0.0.9", 1, 2, bytes(358)), "XDP_DROP"),
         p("IPv6 is not policed", udp6("2001:db8::1", "2001:db8::2", 1, 2), "XDP_PASS"),
         p("VLAN-tagged IPv4 is policed", [eth(0x8100), vlan(5, 0x0800)] + udp4("10.0.0.2", "10.0.0.9", 1, 2)[1:], "XDP_PASS"),
         short13(), eth_only("XDP_DROP"), trunc_ip("XDP_DROP"),
     ])

VIP = "192.168.1.10"
spec("lb_tx", object="lb_tx.o", program="xdp_lb",
     about="L4 load balancer: VIP lookup, backend by flow hash, header rewrite, XDP_TX",
     maps={
         "vips": [
             {"key": h(ip4(VIP) + struct.pack("!H", 80) + bytes([6, 0])), "value": u32(0) + u32(3)},
             {"key": h(ip4(VIP) + struct.pack("!H", 53) + bytes([17, 0])), "value": u32(3) + u32(2)},
             {"key": h(ip4("192.168.1.11") + struct.pack("!H", 80) + bytes([6, 0])), "value": u32(5) + u32(0)},
         ],
         "backends": [
             {"key": u32(i), "value": h(ip4("10.1.0.%d" % (i + 1)) + mac("02:00:00:00:01:%02x" % i) + bytes(2) + bytes(4) + bytes(16))}
             for i in range(5)
         ],
     },
     packets=[
         p("TCP SYN to the VIP", tcp4("172.16.0.1", VIP, 40000, 80, 0x02), "XDP_TX"),
         p("TCP ACK, other client", tcp4("172.16.0.2", VIP, 40001, 80, 0x10, b"GET /"), "XDP_TX"),
         p("TCP, third client", tcp4("172.16.0.77", VIP, 5555, 80, 0x18, b"x" * 20), "XDP_TX"),
         p("UDP DNS to the VIP", udp4("172.16.0.1", VIP, 3333, 53, b"\x12\x34query"), "XDP_TX"),
         p("UDP without checksum", [eth(0x0800), ipv4("172.16.0.9", VIP, 17, bytes(12)), struct.pack("!HHHH", 9, 53, 12, 0) + b"abcd"], "XDP_TX"),
         p("VIP with IP options", tcp4("172.16.0.5", VIP, 1, 80, 0x02, options=RR_OPT), "XDP_TX"),
         p("VLAN-tagged to the VIP", [eth(0x8100), vlan(7, 0x0800)] + tcp4("172.16.0.6", VIP, 2, 80, 0x02)[1:], "XDP_TX"),
         p("VIP with no backends", tcp4("172.16.0.1", "192.168.1.11", 1, 80, 0x02), "XDP_PASS"),
         p("wrong port", tcp4("172.16.0.1", VIP, 1, 443, 0x02), "XDP_PASS"),
         p("ICMP to the VIP", icmp4("172.16.0.1", VIP), "XDP_PASS"),
         p("TCP header cut", tcp4("172.16.0.1", VIP, 1, 80)[:2] + [b"\x00\x50"], "XDP_DROP"),
         short13(), eth_only("XDP_PASS"), trunc_ip("XDP_PASS"),
     ])

TUN = h(ip4("198.51.100.1") + ip4("203.0.113.7") + mac("02:00:00:00:0e:0e") + struct.pack("<H", 42))
spec("encap", object="encap.o", program="xdp_encap",
     about="IPIP encapsulation: adjust_tail (strip padding), adjust_head (outer header), adjust_meta",
     maps={"tunnels": [{"key": h(ip4("10.9.0.1")), "value": TUN}]},
     packets=[
         p("UDP to a tunnelled host", udp4("10.0.0.1", "10.9.0.1", 1000, 2000, b"payload"), "XDP_TX"),
         p("padded to 60 bytes", udp4("10.0.0.1", "10.9.0.1", 1, 2) + [bytes(18)], "XDP_TX"),
         p("TCP with options to the tunnel", tcp4("10.0.0.2", "10.9.0.1", 1, 2, 0x02, options=RR_OPT), "XDP_TX"),
         p("not tunnelled", udp4("10.0.0.1", "10.9.0.2", 1, 2), "XDP_PASS"),
         p("IP total length beyond the frame", [eth(0x0800), ipv4("10.0.0.1", "10.9.0.1", 17, bytes(8), tot=200), bytes(8)], "XDP_DROP"),
         p("VLAN-tagged: passed", [eth(0x8100), vlan(3, 0x0800)] + udp4("10.0.0.1", "10.9.0.1", 1, 2)[1:], "XDP_PASS"),
         p("IPv6: passed", udp6("2001:db8::1", "2001:db8::2", 1, 2), "XDP_PASS"),
         short13(), eth_only("XDP_DROP"), trunc_ip("XDP_DROP"),
     ])

inner = udp4("10.0.0.1", "10.9.0.1", 1000, 2000, b"payload")
outer_ip = ipv4("198.51.100.1", "203.0.113.7", 4, b"".join(inner[1:]))
def pad_to(pieces, n):
    """Pads a packet with a zero trailer to n bytes."""
    have = sum(len(x) for x in pieces)
    assert have <= n, have
    return pieces + ([bytes(n - have)] if have < n else [])

# One ctx_in serves every packet, and BPF_PROG_TEST_RUN wants its data_end to be
# the packet's length: every packet here is 96 bytes, 8 of them metadata.
spec("decap", object="encap.o", program="xdp_decap",
     about="IPIP decapsulation (positive adjust_head) reading 8 bytes of metadata from ctx_in",
     ctx_in=u32(8) + u32(96) + u32(0) + u32(1) + u32(0) + u32(0),
     packets=[
         p("meta + IPIP packet", pad_to([struct.pack("<II", 42, 33), eth(0x0800), outer_ip] + inner[1:], 96), "XDP_PASS"),
         p("meta + plain UDP", pad_to([struct.pack("<II", 7, 0)] + udp4("10.0.0.1", "10.0.0.2", 1, 2), 96), "XDP_PASS"),
         p("meta + IPIP with options outer", pad_to([struct.pack("<II", 9, 0), eth(0x0800), ipv4("1.1.1.1", "2.2.2.2", 4, b"".join(inner[1:]), options=RR_OPT)] + inner[1:], 96), "XDP_PASS"),
         p("meta + IPIP with ihl 6: passed", pad_to([struct.pack("<II", 3, 0), eth(0x0800), ipv4("1.1.1.1", "2.2.2.2", 4, b"".join(inner[1:]), options=bytes(4))] + inner[1:], 96), "XDP_PASS"),
         p("meta + ARP", pad_to([struct.pack("<II", 5, 0), eth(0x0806, dst=BCAST), arp()], 96), "XDP_PASS"),
     ])

R4 = lambda plen, a: h(struct.pack("<I", plen) + ip4(a))
R6 = lambda plen, a: h(struct.pack("<I", plen) + ip6(a))
ROUTE = lambda ifi, d: u32(ifi) + h(mac("02:00:00:00:0d:%02x" % d) + mac("02:00:00:00:05:00")) + "0000" + h(bytes(6)) + u64(0)
spec("lpm_route", object="lpm_route.o", program="xdp_lpm_route",
     about="LPM routing for IPv4 and IPv6, TTL decrement, bpf_redirect",
     maps={
         "routes4": [
             {"key": R4(8, "10.0.0.0"), "value": ROUTE(1, 1)},
             {"key": R4(16, "10.1.0.0"), "value": ROUTE(1, 2)},
             {"key": R4(24, "10.1.2.0"), "value": ROUTE(1, 3)},
             {"key": R4(32, "10.1.2.3"), "value": ROUTE(1, 4)},
             {"key": R4(0, "0.0.0.0"), "value": ROUTE(1, 5)},
         ],
         "routes6": [
             {"key": R6(32, "2001:db8::"), "value": ROUTE(1, 6)},
             {"key": R6(64, "2001:db8:0:1::"), "value": ROUTE(1, 7)},
         ],
     },
     packets=[
         p("to 10.1.2.3 (/32)", udp4("192.0.2.1", "10.1.2.3", 1, 2), "XDP_REDIRECT"),
         p("to 10.1.2.4 (/24)", udp4("192.0.2.1", "10.1.2.4", 1, 2), "XDP_REDIRECT"),
         p("to 10.1.9.9 (/16)", tcp4("192.0.2.1", "10.1.9.9", 1, 2, 0x02), "XDP_REDIRECT"),
         p("to 10.200.0.1 (/8)", udp4("192.0.2.1", "10.200.0.1", 1, 2), "XDP_REDIRECT"),
         p("to 8.8.8.8 (default)", udp4("192.0.2.1", "8.8.8.8", 1, 2), "XDP_REDIRECT"),
         p("TTL 1 to a route", udp4("192.0.2.1", "10.1.2.3", 1, 2, ttl=1), "XDP_PASS"),
         p("to 2001:db8:0:1::5 (/64)", udp6("2001:db8::1", "2001:db8:0:1::5", 1, 2), "XDP_REDIRECT"),
         p("to 2001:db8:ffff::1 (/32)", udp6("2001:db8::1", "2001:db8:ffff::1", 1, 2), "XDP_REDIRECT"),
         p("to 2002::1 (no route)", udp6("2001:db8::1", "2002::1", 1, 2), "XDP_PASS"),
         p("hop limit 1", udp6("2001:db8::1", "2001:db8::2", 1, 2, hlim=1), "XDP_PASS"),
         p("VLAN-tagged to 10.1.2.3", [eth(0x8100), vlan(9, 0x0800)] + udp4("192.0.2.1", "10.1.2.3", 1, 2)[1:], "XDP_REDIRECT"),
         p("ARP", [eth(0x0806, dst=BCAST), arp()], "XDP_PASS"),
         short13(), eth_only("XDP_DROP"), trunc_ip("XDP_DROP"),
     ])

spec("tail_calls", object="tail_calls.o", program="xdp_dispatch",
     about="tail-call dispatch by protocol, a missing slot, and the 33-tail-call limit",
     prog_array={"jump_table": {0: "xdp_ipv4", 1: "xdp_ipv6", 3: "xdp_tcp", 7: "xdp_chain"}},
     packets=[
         p("UDP over IPv4: dispatch -> ipv4", udp4("10.0.0.1", "10.0.0.2", 1, 2), "XDP_PASS"),
         p("TCP over IPv4: dispatch -> ipv4 -> tcp", tcp4("10.0.0.1", "10.0.0.2", 1, 2, 0x02), "XDP_TX"),
         p("IPv6: dispatch -> ipv6", udp6("2001:db8::1", "2001:db8::2", 1, 2), "XDP_DROP"),
         p("ARP: slot 2 is empty", [eth(0x0806, dst=BCAST), arp()], "XDP_PASS"),
         p("0x88b5: the chain runs 33 times (the tail-call limit)", [eth(0x88B5), bytes(46)], "XDP_DROP"),
         p("VLAN TCP", [eth(0x8100), vlan(1, 0x0800)] + tcp4("10.0.0.1", "10.0.0.2", 1, 2, 0x02)[1:], "XDP_TX"),
         p("odd ethertype", [eth(0x9000), bytes(46)], "XDP_PASS"),
         short13(), eth_only("XDP_PASS"), trunc_ip("XDP_PASS"),
     ])

spec("global_data", object="global_data.o", program="xdp_global_data",
     about=".data, .bss, .rodata and .data.ports globals",
     packets=[
         p("UDP to 53", udp4("10.0.0.1", "10.0.0.2", 1, 53), "XDP_PASS"),
         p("TCP to 443", tcp4("10.0.0.1", "10.0.0.2", 1, 443, 0x02, smac=mac("02:00:00:00:00:99")), "XDP_PASS"),
         p("TCP to 23 (blocked)", tcp4("10.0.0.1", "10.0.0.2", 1, 23, 0x02), "XDP_DROP"),
         p("fragment", udp4("10.0.0.1", "10.0.0.2", 1, 53, frag=0x2000), "XDP_DROP"),
         p("ICMP", icmp4("10.0.0.1", "10.0.0.2"), "XDP_PASS"),
         p("VLAN UDP to 80", [eth(0x8100), vlan(2, 0x0800)] + udp4("10.0.0.1", "10.0.0.2", 1, 80)[1:], "XDP_PASS"),
         short13(), eth_only("XDP_DROP"), trunc_ip("XDP_DROP"),
     ])

spec("bpf2bpf", object="bpf2bpf.o", program="xdp_bpf2bpf",
     about="bpf-to-bpf calls: parser, hash chain and accounting in .text",
     packets=[
         p("UDP flow A", udp4("10.0.0.1", "10.0.0.2", 1000, 53), "XDP_PASS"),
         p("UDP flow A again", udp4("10.0.0.1", "10.0.0.2", 1000, 53, b"x"), "XDP_PASS"),
         p("TCP flow B", tcp4("10.0.0.3", "10.0.0.2", 2000, 80, 0x02), "XDP_PASS"),
         p("ICMP flow C", icmp4("10.0.0.4", "10.0.0.2"), "XDP_PASS"),
         p("IP options: not parsed", udp4("10.0.0.1", "10.0.0.2", 1, 2, options=RR_OPT), "XDP_PASS"),
         p("UDP header cut", udp4("10.0.0.1", "10.0.0.2", 1, 2)[:2] + [b"\x00\x01"], "XDP_DROP"),
         p("IPv6", udp6("2001:db8::1", "2001:db8::2", 1, 2), "XDP_PASS"),
         short13(), eth_only("XDP_DROP"), trunc_ip("XDP_DROP"),
     ])

TS_OPT = bytes([68, 12, 5, 0]) + bytes(8)     # timestamp option, 12 bytes
spec("loops", object="loops.o", program="xdp_loops",
     about="bounded loops: VLAN stack, IPv4 options walk, header checksum, payload sum",
     packets=[
         p("UDP, good checksum", udp4("10.0.0.1", "10.0.0.2", 1, 2, b"\x01\x02\x03"), "XDP_PASS"),
         p("options: RR + NOP", udp4("10.0.0.1", "10.0.0.2", 1, 2, b"abc", options=RR_OPT), "XDP_PASS"),
         p("options: NOP NOP TS", udp4("10.0.0.1", "10.0.0.2", 1, 2, options=bytes([1, 1]) + TS_OPT + bytes([0, 0])), "XDP_PASS"),
         p("bad header checksum", [eth(0x0800), bytes.fromhex("450000200001000040110000") + ip4("10.0.0.1") + ip4("10.0.0.2"), bytes(12)], "XDP_DROP"),
         p("option length 1: dropped", [eth(0x0800), ipv4("10.0.0.1", "10.0.0.2", 17, bytes(8), options=bytes([7, 1, 0, 0]))] + [bytes(8)], "XDP_DROP"),
         p("four VLAN tags", [eth(0x8100), vlan(1, 0x8100), vlan(2, 0x88A8), vlan(3, 0x8100), vlan(4, 0x0800)] + udp4("10.0.0.1", "10.0.0.2", 1, 2, bytes(range(70)))[1:], "XDP_PASS"),
         p("five VLAN tags: not IPv4 after four", [eth(0x8100)] + [vlan(i, 0x8100) for i in range(4)] + [vlan(9, 0x0800), bytes(20)], "XDP_PASS"),
         p("ARP", [eth(0x0806, dst=BCAST), arp()], "XDP_PASS"),
         short13(), eth_only("XDP_DROP"), trunc_ip("XDP_DROP"),
     ])

def words(a, b):
    return struct.pack("<QQ", a, b)

spec("atomics", object="atomics.o", program="xdp_atomics",
     about="BPF_ATOMIC add/or/and/xor/xchg/cmpxchg, 32 and 64 bit, fetch and no fetch",
     maps={"cells": [{"key": u32(0), "value": u64(1000) + u64(0x10) + u64(-1) + u64(0xff00) + u64(5) + u64(0x1111) + u32(7) + u32(0) + u32(0xffffffff) + u32(1) + u32(2) + u32(0x1111)}],
           "hash_cells": [{"key": u32(0), "value": u64(0)}]},
     packets=[
         p("operands 0x1111 / 0x2222", [eth(0x0800), words(0x1111, 0x2222)], "XDP_PASS"),
         p("operands with high halves", [eth(0x0800), words(0x1234_5678_0000_1111, 0x9abc_def0_0000_4444)], "XDP_PASS"),
         p("all ones", [eth(0x0800), words(0xffff_ffff_ffff_ffff, 0x1)], "XDP_PASS"),
         p("cmpxchg hits (a = current)", [eth(0x0800), words(0x4444, 0x5555)], "XDP_PASS"),
         p("15 bytes of operands: dropped", [eth(0x0800), bytes(15)], "XDP_DROP"),
         short13(),
     ])

spec("percpu", object="percpu.o", program="xdp_percpu",
     about="per-CPU array and hash counters (compared as sums over CPUs), smp_processor_id",
     maps={"cpu_check": [{"key": u32(0), "value": u32(64)}]},
     packets=[
         p("IPv4 from 10.0.0.1", udp4("10.0.0.1", "10.0.0.2", 1, 2), "XDP_PASS"),
         p("IPv4 from 10.0.0.1 again", tcp4("10.0.0.1", "10.0.0.2", 1, 2, 0x02), "XDP_PASS"),
         p("IPv4 from 10.0.0.7", udp4("10.0.0.7", "10.0.0.2", 1, 2, bytes(100)), "XDP_PASS"),
         p("IPv6", udp6("2001:db8::1", "2001:db8::2", 1, 2), "XDP_PASS"),
         p("ARP", [eth(0x0806, dst=BCAST), arp()], "XDP_PASS"),
         p("VLAN IPv4", [eth(0x8100), vlan(3, 0x0800)] + udp4("10.0.0.7", "10.0.0.2", 1, 2)[1:], "XDP_PASS"),
         short13(), eth_only("XDP_PASS"), trunc_ip("XDP_PASS"),
     ])

spec("lru_flows", object="lru_flows.o", program="xdp_lru_flows",
     about="LRU hash flow table: create, count, delete on FIN/RST",
     packets=[
         p("flow 1 SYN", tcp4("10.0.0.1", "10.0.0.2", 1000, 80, 0x02), "XDP_PASS"),
         p("flow 1 ACK", tcp4("10.0.0.1", "10.0.0.2", 1000, 80, 0x10, b"data"), "XDP_PASS"),
         p("flow 2 UDP", udp4("10.0.0.3", "10.0.0.2", 5000, 53), "XDP_PASS"),
         p("flow 3 ICMP", icmp4("10.0.0.4", "10.0.0.2"), "XDP_PASS"),
         p("flow 1 PSH", tcp4("10.0.0.1", "10.0.0.2", 1000, 80, 0x18, b"more"), "XDP_PASS"),
         p("flow 4 SYN then RST", tcp4("10.0.0.5", "10.0.0.2", 7, 80, 0x02), "XDP_PASS"),
         p("flow 4 RST", tcp4("10.0.0.5", "10.0.0.2", 7, 80, 0x04), "XDP_PASS"),
         p("FIN of an unknown flow", tcp4("10.0.0.6", "10.0.0.2", 8, 80, 0x01), "XDP_PASS"),
         p("TCP flags cut off", tcp4("10.0.0.1", "10.0.0.2", 1000, 80)[:2] + [bytes(12)], "XDP_DROP"),
         short13(), eth_only("XDP_DROP"), trunc_ip("XDP_DROP"),
     ])

spec("lru_percpu", object="lru_percpu.o", program="xdp_lru_percpu",
     about="LRU per-CPU hash of per-source byte quotas",
     maps={"quota": [{"key": u32(0), "value": u64(1000)}]},
     packets=[
         p("10.0.0.1 100 bytes", udp4("10.0.0.1", "10.0.0.2", 1, 2, bytes(58)), "XDP_PASS"),
         p("10.0.0.1 200 bytes", udp4("10.0.0.1", "10.0.0.2", 1, 2, bytes(158)), "XDP_PASS"),
         p("10.0.0.2 60 bytes", udp4("10.0.0.2", "10.0.0.3", 1, 2, bytes(18)), "XDP_PASS"),
         p("10.0.0.3 jumbo 1200 bytes: over quota alone", udp4("10.0.0.3", "10.0.0.2", 1, 2, bytes(1158)), "XDP_DROP"),
         p("IPv6", udp6("2001:db8::1", "2001:db8::2", 1, 2), "XDP_PASS"),
         short13(), eth_only("XDP_DROP"), trunc_ip("XDP_DROP"),
     ])

spec("map_in_map", object="map_in_map.o", program="xdp_map_in_map",
     about="array of maps (tenants) and hash of maps (VLAN verdict tables)",
     maps={"vlan10": [{"key": h(ip4("10.0.0.3")), "value": u32(1)}],
           "vlan20": [{"key": h(ip4("10.0.0.3")), "value": u32(3)}, {"key": h(ip4("10.0.0.1")), "value": u32(9)}]},
     packets=[
         p("tenant 0 UDP", udp4("10.9.0.1", "10.0.0.0", 1, 2), "XDP_PASS"),
         p("tenant 1 TCP", tcp4("10.9.0.1", "10.0.0.1", 1, 2, 0x02), "XDP_PASS"),
         p("tenant 1 UDP", udp4("10.9.0.1", "10.0.0.1", 1, 2, bytes(10)), "XDP_PASS"),
         p("tenant 2: no inner map", udp4("10.9.0.1", "10.0.0.2", 1, 2), "XDP_DROP"),
         p("tenant 3 ICMP", icmp4("10.9.0.1", "10.0.0.3"), "XDP_PASS"),
         p("tenant 9: out of range", udp4("10.9.0.1", "10.0.0.9", 1, 2), "XDP_PASS"),
         p("VLAN 10 to 10.0.0.3: drop verdict", [eth(0x8100), vlan(10, 0x0800)] + udp4("10.9.0.1", "10.0.0.3", 1, 2)[1:], "XDP_DROP"),
         p("VLAN 20 to 10.0.0.3: tx verdict", [eth(0x8100), vlan(20, 0x0800)] + udp4("10.9.0.1", "10.0.0.3", 1, 2)[1:], "XDP_TX"),
         p("VLAN 20 to 10.0.0.1: bad verdict, tenant 1", [eth(0x8100), vlan(20, 0x0800)] + udp4("10.9.0.1", "10.0.0.1", 1, 2)[1:], "XDP_PASS"),
         p("VLAN 30: no table", [eth(0x8100), vlan(30, 0x0800)] + udp4("10.9.0.1", "10.0.0.0", 1, 2)[1:], "XDP_PASS"),
         short13(), eth_only("XDP_DROP"), trunc_ip("XDP_DROP"),
     ])

spec("devmap", object="devmap.o", program="xdp_devmap",
     about="devmap and devmap_hash redirects (ifindex 1), missing entries with fallback actions",
     maps={"tx_ports": [{"key": u32(0), "value": u32(1)}, {"key": u32(2), "value": u32(1)}, {"key": u32(5), "value": u32(1)}],
           "tx_by_id": [{"key": u32(100), "value": u32(1)}, {"key": u32(7), "value": u32(1)}]},
     packets=[
         p("to port 0", udp4("10.0.0.1", "10.0.0.2", 1, 2, dmac=mac("02:00:00:00:00:00")), "XDP_REDIRECT"),
         p("to port 2", udp4("10.0.0.1", "10.0.0.2", 1, 2, dmac=mac("02:00:00:00:00:02")), "XDP_REDIRECT"),
         p("to port 5", tcp4("10.0.0.1", "10.0.0.2", 1, 2, dmac=mac("02:00:00:00:00:05")), "XDP_REDIRECT"),
         p("to port 3: empty slot", udp4("10.0.0.1", "10.0.0.2", 1, 2, dmac=mac("02:00:00:00:00:03")), "XDP_PASS"),
         p("to port 200: out of range", udp4("10.0.0.1", "10.0.0.2", 1, 2, dmac=mac("02:00:00:00:00:c8")), "XDP_PASS"),
         p("VLAN 100", [eth(0x8100), vlan(100, 0x0800)] + udp4("10.0.0.1", "10.0.0.2", 1, 2)[1:], "XDP_REDIRECT"),
         p("VLAN 101: no entry", [eth(0x8100), vlan(101, 0x0800)] + udp4("10.0.0.1", "10.0.0.2", 1, 2)[1:], "XDP_DROP"),
         p("ARP broadcast (port 0xff)", [eth(0x0806, dst=BCAST), arp()], "XDP_PASS"),
         short13(), eth_only("XDP_PASS"),
     ])

spec("devmap_lookup", object="devmap_lookup.o", program="xdp_devmap_lookup",
     about="lookups in devmap_hash and 8-byte devmap values from the program: the same pointer twice, program id 0 for fd 0 and -1",
     maps={"by_id": [{"key": u32(1), "value": u32(1)}, {"key": u32(6), "value": u32(1)}],
           "ports": [{"key": u32(1), "value": u32(1) + u32(0)}, {"key": u32(2), "value": u32(1) + u32(0xffffffff)}]},
     packets=[
         p("key 1: both maps", udp4("10.0.0.1", "10.0.0.2", 1, 2, dmac=mac("02:00:00:00:00:01")), "XDP_REDIRECT"),
         p("key 2: devmap only (fd -1)", udp4("10.0.0.1", "10.0.0.2", 1, 2, dmac=mac("02:00:00:00:00:02")), "XDP_PASS"),
         p("key 6: devmap_hash, devmap port 2", udp4("10.0.0.1", "10.0.0.2", 1, 2, dmac=mac("02:00:00:00:00:06")), "XDP_REDIRECT"),
         p("key 3: neither", udp4("10.0.0.1", "10.0.0.2", 1, 2, dmac=mac("02:00:00:00:00:03")), "XDP_PASS"),
         p("key 1 again", tcp4("10.0.0.1", "10.0.0.2", 1, 2, dmac=mac("02:00:00:00:00:01")), "XDP_REDIRECT"),
         short13(),
     ])

spec("ringbuf", object="ringbuf.o", program="xdp_ringbuf",
     about="ring buffer output/reserve/submit/discard/query until the 4 KiB ring is full",
     packets=[p("TCP event", tcp4("10.0.0.1", "10.0.0.2", 1, 2, 0x02), "XDP_PASS")]
     + [p("UDP to port %d: 1 KiB record, %s" % (n, "discard" if n & 1 else "submit"), udp4("10.0.0.1", "10.0.0.2", 1, n), "XDP_PASS") for n in (2, 3, 4, 6, 8)]
     + [p("UDP to port 0: no record", udp4("10.0.0.1", "10.0.0.2", 1, 0), "XDP_PASS"),
        p("UDP to port 300 (low byte 44): no record", udp4("10.0.0.1", "10.0.0.2", 1, 300), "XDP_PASS"),
        p("IPv6: ignored", udp6("2001:db8::1", "2001:db8::2", 1, 2), "XDP_PASS"),
        short13(), eth_only("XDP_DROP"), trunc_ip("XDP_DROP")])

spec("perf_event", object="perf_event.o", program="xdp_perf_event",
     about="bpf_perf_event_output error codes with no perf event attached",
     packets=[
         p("UDP", udp4("10.0.0.1", "10.0.0.2", 1, 2), "XDP_PASS"),
         p("20-byte frame (sample shorter than 32)", [eth(0x9000), bytes(6)], "XDP_PASS"),
         p("ARP", [eth(0x0806, dst=BCAST), arp()], "XDP_PASS"),
         short13(), eth_only("XDP_PASS"),
     ])

def qcmd(port, operand):
    return udp4("10.0.0.1", "10.0.0.2", 9, port, struct.pack("<I", operand))

spec("queue_stack", object="queue_stack.o", program="xdp_queue_stack",
     about="queue and stack: push, push when full (plain and BPF_EXIST), pop, peek, drain",
     packets=[
         p("peek empty", qcmd(4, 0), "XDP_DROP"),
         p("pop empty", qcmd(3, 0), "XDP_DROP"),
     ] + [p("push %d" % v, qcmd(1, v), "XDP_DROP") for v in (11, 22, 33, 44)] + [
         p("push 55 when full: -E2BIG", qcmd(1, 55), "XDP_DROP"),
         p("push 66 with BPF_EXIST when full", qcmd(2, 66), "XDP_DROP"),
         p("peek", qcmd(4, 0), "XDP_DROP"),
         p("pop", qcmd(3, 0), "XDP_DROP"),
         p("push 77", qcmd(1, 77), "XDP_DROP"),
         p("unknown command", qcmd(9, 0), "XDP_PASS"),
         p("operand cut", udp4("10.0.0.1", "10.0.0.2", 9, 1, b"\x01\x02"), "XDP_DROP"),
         p("drain", qcmd(5, 0), "XDP_DROP"),
         short13(), eth_only("XDP_PASS"), trunc_ip("XDP_PASS"),
     ])

spec("time_rand", object="time_rand.o", program="xdp_time_rand",
     about="ktime (mono, boot, coarse), prandom and the CPU id: only their properties are compared",
     normalise=[{"map": "raw", "rule": "ignore", "why": "time stamps, a random number and a CPU id"}],
     packets=[
         p("UDP", udp4("10.0.0.1", "10.0.0.2", 1, 2), "XDP_PASS"),
         p("ARP", [eth(0x0806, dst=BCAST), arp()], "XDP_PASS"),
         p("IPv6", udp6("2001:db8::1", "2001:db8::2", 1, 2), "XDP_PASS"),
         short13(), eth_only("XDP_PASS"),
     ])

spec("trace_printk", object="trace_printk.o", program="xdp_trace_printk",
     about="bpf_trace_printk with %i, %d, %u, %x, %llx, %lld, %%, an invalid %n, and bpf_printk",
     packets=[
         p("UDP", udp4("10.0.0.1", "10.0.0.2", 1, 2), "XDP_PASS"),
         p("TTL 5", udp4("192.168.100.200", "10.0.0.2", 1, 2, ttl=5), "XDP_PASS"),
         p("big frame", udp4("10.0.0.1", "10.0.0.2", 1, 2, bytes(1000)), "XDP_PASS"),
         p("ARP", [eth(0x0806, dst=BCAST), arp()], "XDP_PASS"),
         short13(), eth_only("XDP_PASS"),
     ])

spec("icmp_echo", object="icmp_echo.o", program="xdp_icmp_echo",
     about="ICMP echo responder: address swap, checksums via csum_diff, XDP_TX",
     packets=[
         p("echo request", icmp4("10.0.0.1", "10.0.0.2"), "XDP_TX"),
         p("echo request TTL 3", icmp4("172.16.5.4", "10.0.0.2", ttl=3), "XDP_TX"),
         p("echo reply", icmp4("10.0.0.1", "10.0.0.2", typ=0), "XDP_PASS"),
         p("echo to multicast", icmp4("10.0.0.1", "224.0.0.1"), "XDP_DROP"),
         p("echo to broadcast MAC", icmp4("10.0.0.1", "10.0.0.255", dmac=BCAST), "XDP_DROP"),
         p("VLAN echo", [eth(0x8100), vlan(4, 0x0800)] + icmp4("10.0.0.1", "10.0.0.2")[1:], "XDP_TX"),
         p("ICMP header cut", icmp4("10.0.0.1", "10.0.0.2")[:2] + [b"\x08\x00"], "XDP_DROP"),
         p("UDP", udp4("10.0.0.1", "10.0.0.2", 1, 2), "XDP_PASS"),
         short13(), eth_only("XDP_PASS"), trunc_ip("XDP_PASS"),
     ])

VA = lambda action, prio=0: u32(action) + u32(prio) + u64(0)
spec("vlan", object="vlan.o", program="xdp_vlan",
     about="VLAN push (adjust_head -4), strip (adjust_head +4) and priority rewrite",
     maps={"port_cfg": [{"key": u32(0), "value": u32(42) + u32(0) + u32(0) + u32(0)}],
           "vlan_actions": [{"key": u32(10), "value": VA(0)}, {"key": u32(20), "value": VA(1)}, {"key": u32(30), "value": VA(2, 5)}]},
     packets=[
         p("untagged: tagged with VLAN 42", udp4("10.0.0.1", "10.0.0.2", 1, 2), "XDP_PASS"),
         p("VLAN 10: kept", [eth(0x8100), vlan(10, 0x0800)] + udp4("10.0.0.1", "10.0.0.2", 1, 2)[1:], "XDP_PASS"),
         p("VLAN 20: stripped", [eth(0x8100), vlan(20, 0x0800, prio=3)] + udp4("10.0.0.1", "10.0.0.2", 1, 2)[1:], "XDP_PASS"),
         p("VLAN 30: priority 5", [eth(0x8100), vlan(30, 0x86DD, prio=1)] + udp6("2001:db8::1", "2001:db8::2", 1, 2)[1:], "XDP_PASS"),
         p("VLAN 40: not allowed", [eth(0x8100), vlan(40, 0x0800)] + udp4("10.0.0.1", "10.0.0.2", 1, 2)[1:], "XDP_DROP"),
         p("VLAN tag cut", [eth(0x8100), b"\x00\x14"], "XDP_DROP"),
         p("untagged ARP", [eth(0x0806, dst=BCAST), arp()], "XDP_PASS"),
         p("VLAN 20 stripped, 18 bytes left", [eth(0x8100), vlan(20, 0x0800)], "XDP_PASS"),
         short13(), eth_only("XDP_PASS"),
     ])

def seg(src, sport, flags, seq=100):
    return tcp4(src, "10.0.0.100", sport, 80, flags, seq=seq)

spec("conntrack", object="conntrack.o", program="xdp_conntrack",
     about="hash map update flags (NOEXIST, EXIST), delete, a full table",
     packets=[
         p("conn 1 SYN", seg("10.0.0.1", 1001, 0x02), "XDP_PASS"),
         p("conn 1 SYN again: -EEXIST", seg("10.0.0.1", 1001, 0x02), "XDP_DROP"),
         p("conn 1 ACK", seg("10.0.0.1", 1001, 0x10, 101), "XDP_PASS"),
         p("unknown ACK: -ENOENT", seg("10.0.0.9", 9, 0x10), "XDP_DROP"),
         p("conn 2 SYN", seg("10.0.0.2", 1002, 0x02), "XDP_PASS"),
         p("conn 3 SYN", seg("10.0.0.3", 1003, 0x02), "XDP_PASS"),
         p("conn 4 SYN", seg("10.0.0.4", 1004, 0x02), "XDP_PASS"),
         p("conn 5 SYN: table full, -E2BIG", seg("10.0.0.5", 1005, 0x02), "XDP_DROP"),
         p("conn 2 FIN: deleted", seg("10.0.0.2", 1002, 0x11), "XDP_PASS"),
         p("conn 2 RST: -ENOENT", seg("10.0.0.2", 1002, 0x04), "XDP_PASS"),
         p("conn 5 SYN: room again", seg("10.0.0.5", 1005, 0x02), "XDP_PASS"),
         p("SYN-ACK is an update", seg("10.0.0.3", 1003, 0x12, 500), "XDP_PASS"),
         p("UDP: ignored", udp4("10.0.0.1", "10.0.0.2", 1, 2), "XDP_PASS"),
         p("TCP header cut", seg("10.0.0.1", 1, 2)[:2] + [bytes(10)], "XDP_DROP"),
         short13(), eth_only("XDP_PASS"), trunc_ip("XDP_PASS"),
     ])

spec("adjust_tail", object="adjust_tail.o", program="xdp_adjust_tail",
     about="adjust_tail: truncate to max_len, grow by an 8-byte trailer, refuse to cut below 14 bytes",
     maps={"tail_cfg": [{"key": u32(0), "value": u32(128)}]},
     packets=[
         p("UDP to 9: trailer", udp4("10.0.0.1", "10.0.0.2", 1, 9, b"hello"), "XDP_TX"),
         p("UDP to 9 again: trailer 2", udp4("10.0.0.1", "10.0.0.2", 1, 9, b"again!"), "XDP_TX"),
         p("300 bytes: cut to 128", udp4("10.0.0.1", "10.0.0.2", 1, 2, bytes(range(256)) + bytes(2)), "XDP_PASS"),
         p("129 bytes: cut by one", udp4("10.0.0.1", "10.0.0.2", 1, 9, bytes(87)), "XDP_PASS"),
         p("15 bytes: shrink by 2 refused", [eth(0x0800), b"\x45"], "XDP_DROP"),
         p("UDP to 10", udp4("10.0.0.1", "10.0.0.2", 1, 10), "XDP_PASS"),
         short13(), eth_only("XDP_PASS"), trunc_ip("XDP_PASS"),
     ])


spec("loop_sum", object="loop_sum.o", program="xdp_loop_sum",
     about="bpf_loop: index-weighted byte sum, early stop at 0xff, nested bpf_loop, a counter loop sized by the packet, -EINVAL, -E2BIG, nr_loops 0",
     packets=[
         p("UDP: no 0xff", udp4("10.0.0.1", "10.0.0.2", 1000, 53, b"abcd"), "XDP_PASS"),
         p("0xff at byte 40: stops there", udp4("10.0.0.1", "10.0.0.2", 1000, 53, b"\x01\x02\xff\x04"), "XDP_DROP"),
         p("0xff in the MAC: stops at 0", [eth(0x0800, dst=BCAST), bytes(20)], "XDP_DROP"),
         p("100 bytes: the first 64 summed", udp4("10.0.0.1", "10.0.0.2", 7, 9, bytes(range(58))), "XDP_PASS"),
         p("count 0x0fff iterations", [eth(0x0800), bytes([0xff, 0xff]) + bytes(10)], "XDP_DROP"),
         p("count 0x0ef0 iterations", [eth(0x0800), bytes([0xef, 0x00]) + bytes(10)], "XDP_PASS"),
         short13(), eth_only("XDP_PASS"),
     ])


spec("foreach_sum", object="foreach_sum.o", program="xdp_foreach_sum",
     about="for_each_map_elem: hash map (count, key sum, values bumped in place), array (by index, early stop), empty map, nested in a bpf_loop callback, -EINVAL",
     maps={"fe_arr": [{"key": u32(2), "value": u64(100)}, {"key": u32(5), "value": u64(7)}]},
     packets=[
         p("from .1, TTL 64: stop at 0", udp4("10.0.0.1", "10.0.0.2", 1, 2), "XDP_PASS"),
         p("from .7, TTL 2", udp4("10.0.0.7", "10.0.0.2", 1, 2, ttl=2), "XDP_PASS"),
         p("from .1 again, TTL 5: stops past the array", udp4("10.0.0.1", "10.0.0.2", 1, 2, ttl=5), "XDP_DROP"),
         p("from .200, TTL 6", udp4("10.0.0.200", "10.0.0.2", 1, 2, ttl=6), "XDP_DROP"),
         p("ARP: no walk", [eth(0x0806), arp()], "XDP_PASS"),
         short13(), eth_only("XDP_PASS"),
     ])


def main():
    for name, s in SPECS.items():
        out = {"about": s["about"], "object": s["object"], "program": s["program"]}
        for k in ("ctx_in", "maps", "prog_array", "normalise"):
            if k in s:
                v = s[k]
                if k == "prog_array":
                    v = {m: {str(i): n for i, n in slots.items()} for m, slots in v.items()}
                out[k] = v
        out["packets"] = s["packets"]
        with open(os.path.join(HERE, name + ".json"), "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
    print("wrote %d specs" % len(SPECS))


if __name__ == "__main__":
    main()
