#!/usr/bin/env python3
"""Writes examples/traffic.pcap: a few Ethernet frames for xdp_counter.

TCP SYN, UDP to port 53, UDP to port 9 (the discard port xdp_counter drops),
ICMP echo, ARP, IPv6/UDP and a 13-byte runt that BPF_PROG_TEST_RUN refuses.
Standard library only; the output is byte-for-byte reproducible (fixed time
stamps). Run: python3 examples/make_pcap.py
"""
import os
import struct

SRC_MAC = bytes.fromhex("020000000001")
DST_MAC = bytes.fromhex("020000000002")


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(ethertype: int, payload: bytes) -> bytes:
    return DST_MAC + SRC_MAC + struct.pack("!H", ethertype) + payload


def ipv4(proto: int, payload: bytes, src="10.0.0.1", dst="10.0.0.2") -> bytes:
    addr = lambda a: bytes(int(x) for x in a.split("."))
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                      addr(src), addr(dst))
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + payload


def udp(sport: int, dport: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def tcp_syn(sport: int, dport: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)


def icmp_echo() -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, 7, 1) + b"ping"
    return body[:2] + struct.pack("!H", csum(body)) + body[4:]


def arp() -> bytes:
    return struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, SRC_MAC, bytes([10, 0, 0, 1]),
                       b"\0" * 6, bytes([10, 0, 0, 2]))


def ipv6_udp() -> bytes:
    payload = udp(5000, 53, b"v6")
    src = bytes.fromhex("fe800000000000000000000000000001")
    dst = bytes.fromhex("fe800000000000000000000000000002")
    return struct.pack("!IHBB", 6 << 28, len(payload), 17, 64) + src + dst + payload


PACKETS = [
    eth(0x0800, ipv4(6, tcp_syn(40000, 80))),
    eth(0x0800, ipv4(17, udp(40001, 53, b"query"))),
    eth(0x0800, ipv4(17, udp(40002, 9, b"discard me"))),
    eth(0x0800, ipv4(1, icmp_echo())),
    eth(0x0806, arp()),
    eth(0x86DD, ipv6_udp()),
    bytes(13),
]


def main() -> None:
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "traffic.pcap")
    with open(out, "wb") as f:
        # pcap global header: magic, v2.4, UTC, accuracy, snaplen, Ethernet
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, p in enumerate(PACKETS):
            f.write(struct.pack("<IIII", 1_700_000_000 + i, 0, len(p), len(p)))
            f.write(p)
    print(f"wrote {out}: {len(PACKETS)} packets")


if __name__ == "__main__":
    main()
