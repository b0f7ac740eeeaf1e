#!/usr/bin/env python3
"""Derives seeds from the captured ones (run after capture-seeds.sh; plain Python 3, no packages).

- decode/: one file per distinct NFLOG packet in seeds/nflog_batch: family (1 byte), the
  NFULA_PACKET_HDR ethertype (2 bytes, big-endian), then NFULA_PAYLOAD, as checks::decode reads.
- pcap_reader/: conformance.pcap cut into pcaps of a few records each (small inputs fuzz
  faster), one of them rewritten in the other byte order (magic, record headers and the NFLOG
  attribute headers, as a big-endian capture host would write it), and one with nanosecond
  timestamps.
- tail_text/: JSON lines as `nflog-tail -r conformance.pcap -o json` prints them, and the same
  with the tail socket's extra fields, when a built nflog-tail is given as argv[1].
"""

import hashlib
import os
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")


def tlvs(buf, header, header_len):
    """(kind, body, offset) of the 4-byte aligned length-type-value records in buf whose header
    (length first, then type) unpacks with `header` in header_len bytes; stops at a bad length."""
    at = 0
    while at + header_len <= len(buf):
        ln, kind = struct.unpack_from(header, buf, at)
        if ln < header_len or at + ln > len(buf):
            return
        yield kind, buf[at + header_len : at + ln], at
        at += (ln + 3) & ~3


def attrs(buf):
    """Netlink attributes: (type without the nested/byte-order flags, payload, offset)."""
    for kind, body, at in tlvs(buf, "=HH", 4):
        yield kind & 0x3FFF, body, at


def messages(batch):
    """The NFLOG packet messages (NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET) of a netlink batch:
    their bodies after the 16-byte header."""
    for kind, body, _ in tlvs(batch, "=IH", 16):
        if kind == 4 << 8:
            yield body


def decode_seeds():
    out = os.path.join(SEEDS, "decode")
    os.makedirs(out, exist_ok=True)
    seen = set()
    src = os.path.join(SEEDS, "nflog_batch")
    for name in sorted(os.listdir(src)):
        for body in messages(open(os.path.join(src, name), "rb").read()):
            hw, payload = None, b""
            for kind, data, _ in attrs(body[4:]):
                if kind == 1 and len(data) >= 4:
                    hw = data[0:2]
                elif kind == 9:
                    payload = data
            if hw is None:
                continue
            seed = bytes([body[0]]) + hw + payload
            h = hashlib.sha1(seed).hexdigest()[:12]
            if h not in seen:
                seen.add(h)
                open(os.path.join(out, "pkt-%s.bin" % h), "wb").write(seed)
    print("decode: %d seeds" % len(seen))


def pcap_records(data):
    at = 24
    while at + 16 <= len(data):
        incl = struct.unpack_from("<I", data, at + 8)[0]
        yield data[at : at + 16 + incl]
        at += 16 + incl


def swap_record(rec):
    """A little-endian record as a big-endian host writes it."""
    sec, frac, incl, orig = struct.unpack_from("<IIII", rec)
    body = bytearray(rec[16:])
    at = 4
    while at + 4 <= len(body):
        ln = struct.unpack_from("<H", body, at)[0]
        body[at : at + 2] = body[at : at + 2][::-1]
        body[at + 2 : at + 4] = body[at + 2 : at + 4][::-1]
        if ln < 4:
            break
        at += (ln + 3) & ~3
    return struct.pack(">IIII", sec, frac, incl, orig) + bytes(body)


def pcap_seeds():
    out = os.path.join(SEEDS, "pcap_reader")
    data = open(os.path.join(out, "conformance.pcap"), "rb").read()
    assert struct.unpack_from("<I", data)[0] == 0xA1B2C3D4, "expected a little-endian pcap"
    header = data[:24]
    recs = list(pcap_records(data))
    parts = [recs[i : i + 6] for i in range(0, len(recs), 6)]
    for i, part in enumerate(parts):
        open(os.path.join(out, "part-%02d.pcap" % i), "wb").write(header + b"".join(part))
    be_header = struct.pack(">IHHiIII", 0xA1B2C3D4, *struct.unpack_from("<HHiIII", header, 4))
    open(os.path.join(out, "swapped-be.pcap"), "wb").write(
        be_header + b"".join(swap_record(r) for r in parts[0])
    )
    ns_header = struct.pack("<I", 0xA1B23C4D) + header[4:]
    ns = b"".join(
        r[:4] + struct.pack("<I", struct.unpack_from("<I", r, 4)[0] * 1000) + r[8:] for r in parts[1]
    )
    open(os.path.join(out, "nanos.pcap"), "wb").write(ns_header + ns)
    print("pcap_reader: %d records in %d parts" % (len(recs), len(parts)))


def json_seeds(nflog_tail):
    out = os.path.join(SEEDS, "tail_text")
    pcap = os.path.join(SEEDS, "pcap_reader", "conformance.pcap")
    json_lines = subprocess.run(
        [nflog_tail, "-r", pcap, "-o", "json"], capture_output=True, check=True
    ).stdout.splitlines()
    emu_lines = subprocess.run(
        [nflog_tail, "-r", pcap, "-o", "syslogemu"], capture_output=True, check=True
    ).stdout.splitlines()
    recs = list(pcap_records(open(pcap, "rb").read()))
    n = 0
    for i in range(0, min(len(json_lines), len(emu_lines), len(recs)), 7):
        line = json_lines[i]
        open(os.path.join(out, "daemon-%03d.jsonl" % i), "wb").write(line + b"\n")
        import json

        extra = ',"syslogemu":%s,"nflog":"%s"}' % (
            json.dumps(emu_lines[i].decode("utf-8", "replace")),
            recs[i][16:].hex(),
        )
        tail = line.rstrip()[:-1] + extra.encode()
        open(os.path.join(out, "tail-%03d.jsonl" % i), "wb").write(tail + b"\n")
        n += 2
    print("tail_text: %d JSON seeds" % n)


if __name__ == "__main__":
    decode_seeds()
    pcap_seeds()
    if len(sys.argv) > 1:
        json_seeds(sys.argv[1])
