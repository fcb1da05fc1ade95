#!/usr/bin/env python3
"""Builds a large EVTX file for benchmarks from the chunks of real ones.

An EVTX file is a 4 KiB header and 64 KiB chunks, each chunk self-contained (its own
string and template tables, record ids and checksums). This writes the header of the first
input with the chunk count, first/last chunk numbers and header checksum set for the new
file, then the inputs' chunks in turn, over and over, until the file holds --chunks chunks.
Readers see the same records again and again (their record ids repeat), which is what a
benchmark of parsing cost wants: the corpus's files are small (at most 565 records), so a
run over one is mostly process start-up.

  benches/evtx-stitch.py --chunks 800 -o /tmp/big.evtx ../shared/corpus/evtx/*.evtx
"""
import argparse
import struct
import sys
import zlib

HEADER = 4096
CHUNK = 65536


def chunks_of(path):
    data = open(path, "rb").read()
    if data[:8] != b"ElfFile\0":
        sys.exit(f"{path}: not an EVTX file")
    (count,) = struct.unpack_from("<H", data, 42)
    out = []
    for i in range(count):
        chunk = data[HEADER + i * CHUNK : HEADER + (i + 1) * CHUNK]
        if len(chunk) == CHUNK and chunk[:8] == b"ElfChnk\0":
            out.append(chunk)
    return data[:HEADER], out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, required=True, help="chunks in the file written (at most 65535)")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("inputs", nargs="+")
    args = ap.parse_args()
    if not 0 < args.chunks <= 0xFFFF:
        sys.exit("--chunks: 1 to 65535")
    header, chunks = None, []
    for path in args.inputs:
        h, c = chunks_of(path)
        header = header or h
        chunks.extend(c)
    if not chunks:
        sys.exit("no whole chunks in the inputs")
    head = bytearray(header)
    struct.pack_into("<QQ", head, 8, 0, args.chunks - 1)
    struct.pack_into("<H", head, 42, args.chunks)
    struct.pack_into("<I", head, 124, zlib.crc32(bytes(head[:120])) & 0xFFFFFFFF)
    with open(args.output, "wb") as out:
        out.write(head)
        for i in range(args.chunks):
            out.write(chunks[i % len(chunks)])


if __name__ == "__main__":
    main()
