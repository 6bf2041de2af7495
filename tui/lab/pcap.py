"""A small reader for the classic pcap files tcpdump writes: enough to judge what crossed the wire.

Pure Python, so the checks judge a capture the same way whichever machine took it.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Iterator, Sequence


@dataclass
class WireSummary:
    packets: int = 0
    ipv4: int = 0
    esp: int = 0  # ESP (protocol 50) or ESP in UDP 4500 (non-zero SPI)
    ike: int = 0  # UDP 500, or 4500 with the zero non-ESP marker
    udp4500: int = 0  # UDP to or from port 4500 (NAT-T: ESP in UDP, IKE, keepalives)
    fragments: int = 0  # IPv4 packets with MF set or a fragment offset
    cleartext_pod: int = 0  # IPv4 packets whose own source or destination is in the pod network
    marker_hits: int = 0  # packets whose bytes contain the marker
    largest_ip: int = 0
    examples: list[str] = field(default_factory=list)


PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<",  # microsecond, nanosecond stamps
               b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}


@dataclass(frozen=True)
class Record:
    sec: int
    frac: int  # micro- or nanoseconds, as the file's magic says
    raw: bytes  # the 16-byte record header and the packet, as in the file
    packet: bytes


@dataclass(frozen=True)
class Capture:
    endian: str
    header: bytes  # the 24-byte file header
    linktype: int
    records: list[Record]


def read_capture(path: str) -> Capture | None:
    """A classic pcap file's header and records (None for an empty file; a record cut short at
    the end, as by a stopped capture, is left out). ValueError if it is not a pcap file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return None
    endian = PCAP_MAGICS.get(data[:4])
    if endian is None:
        raise ValueError(f"{path} is not a pcap file")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    records = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(endian + "IIII", data[off : off + 16])
        if off + 16 + incl > len(data):
            break
        records.append(Record(sec, frac, data[off : off + 16 + incl], data[off + 16 : off + 16 + incl]))
        off += 16 + incl
    return Capture(endian, data[:24], linktype, records)


def read_packets(path: str) -> Iterator[tuple[int, bytes]]:
    """(link type, packet) for each packet of a pcap file."""
    cap = read_capture(path)
    if cap is None:
        return
    for rec in cap.records:
        yield cap.linktype, rec.packet


def merge(paths: Sequence[str], out: str) -> int:
    """Merge pcap files (one per node, same link type and byte order) by timestamp into `out`;
    returns the number of packets. ValueError when the files do not fit together."""
    first: Capture | None = None
    records: list[tuple[int, int, int, bytes]] = []
    for n, path in enumerate(paths):
        cap = read_capture(path)
        if cap is None:
            continue
        if first is None:
            first = cap
        elif cap.header[20:24] != first.header[20:24] or cap.endian != first.endian:
            raise ValueError(f"{path} has another link type or byte order than the first capture")
        records += [(r.sec, r.frac, n, r.raw) for r in cap.records]
    records.sort(key=lambda r: (r[0], r[1], r[2]))
    with open(out, "wb") as f:
        if first is not None:
            f.write(first.header)
        for rec in records:
            f.write(rec[3])
    return len(records)


def summarize(path: str, pod_net: IPv4Network | str, marker: bytes | None = None) -> WireSummary:
    pods = ipaddress.ip_network(pod_net)
    s = WireSummary()
    for linktype, pkt in read_packets(path):
        s.packets += 1
        if marker and marker in pkt:
            s.marker_hits += 1
        if linktype == 1:  # Ethernet
            if len(pkt) < 14:
                continue
            ethertype = struct.unpack("!H", pkt[12:14])[0]
            off = 14
            if ethertype == 0x8100 and len(pkt) >= 18:
                ethertype, off = struct.unpack("!H", pkt[16:18])[0], 18
            if ethertype != 0x0800:
                continue
            ip = pkt[off:]
        elif linktype in (101, 12):  # raw IP
            ip = pkt
        elif linktype == 113:  # Linux cooked (any)
            if len(pkt) < 16 or struct.unpack("!H", pkt[14:16])[0] != 0x0800:
                continue
            ip = pkt[16:]
        else:
            continue
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        s.ipv4 += 1
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        s.largest_ip = max(s.largest_ip, total)
        flags_frag = struct.unpack("!H", ip[6:8])[0]
        if flags_frag & 0x2000 or flags_frag & 0x1FFF:
            s.fragments += 1
        proto = ip[9]
        src, dst = ipaddress.IPv4Address(ip[12:16]), ipaddress.IPv4Address(ip[16:20])
        if src in pods or dst in pods:
            s.cleartext_pod += 1
            if len(s.examples) < 3:
                s.examples.append(f"{src} > {dst} proto {proto}")
        if proto == 50:
            s.esp += 1
        elif proto == 17 and len(ip) >= ihl + 8:
            sport, dport = struct.unpack("!HH", ip[ihl : ihl + 4])
            if 4500 in (sport, dport):
                s.udp4500 += 1
                non_esp = ip[ihl + 8 : ihl + 12] == b"\x00\x00\x00\x00"
                if non_esp:
                    s.ike += 1
                elif len(ip) > ihl + 9:  # not a NAT-T keepalive (a single 0xff byte)
                    s.esp += 1
            elif 500 in (sport, dport):
                s.ike += 1
    return s
