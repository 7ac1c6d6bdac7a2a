"""A Python consumer receiving 65,536-row batches, three ways, interleaved:

- ring: `laminar_ring.Consumer` (zero-copy, and copy=True) reading a ring that
  a Rust producer fills (`examples/arrow_source.rs`, one batch built once and
  sent again and again);
- socket: `pyarrow.ipc.open_stream` over a Unix socket, a Python writer
  process sending the same batches (`pyarrow.ipc.new_stream`);
- pipe: `laminar-ring produce` into a ring, `laminar-ring consume -o -` out of
  it, pyarrow reading the pipe.

GB/s of Arrow array data, median over rounds; ratios to the socket.

    cargo build --release --examples
    python3 python/benches/receive.py [--rounds 5] [--batches 400]
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.ipc

import laminar_ring as lr

TAGS = ["alpha", "beta", "gamma", "delta"]


def batch(rows):
    return pa.record_batch(
        {
            "id": pa.array(range(rows), pa.int64()),
            "px": pa.array([j * 0.25 for j in range(rows)], pa.float64()),
            "tag": pa.array([TAGS[j % 4] for j in range(rows)], pa.string()),
        }
    )


def ring_run(source, rows, d, n, copy):
    name = "bench"
    try:
        lr.rm(name, dir=d)
    except lr.RingError:
        pass
    rx = lr.Consumer(name, dir=d, copy=copy)
    p = subprocess.Popen([source, "--dir", d, name, str(n), str(rows)])
    got, rows, start = 0, 0, None
    while True:
        b = rx.recv(timeout=60)
        if b is None:
            break
        if start is None:
            start = time.perf_counter()
        rows += b.num_rows
        got += 1
        del b
    secs = time.perf_counter() - start
    assert p.wait(timeout=60) == 0
    rx.close()
    assert got == n, f"{got} of {n} batches"
    return secs * n / (n - 1)


WRITER = """
import socket, sys, pyarrow as pa, pyarrow.ipc
s = socket.socket(socket.AF_UNIX)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
s.connect(sys.argv[1])
src = pa.ipc.open_stream(pa.memory_map(sys.argv[2]))
f = s.makefile("wb", buffering=1 << 20)
with pa.ipc.new_stream(f, src.schema) as w:
    for b in src:
        w.write_batch(b)
f.close()
s.close()
"""


def socket_run(src, d, n):
    path = os.path.join(d, "bench.sock")
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    p = subprocess.Popen([sys.executable, "-c", WRITER, path, src])
    conn, _ = srv.accept()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    reader = pa.ipc.open_stream(conn.makefile("rb", buffering=1 << 20))
    got, start = 0, None
    for b in reader:
        if start is None:
            start = time.perf_counter()
        got += 1
    secs = time.perf_counter() - start
    assert p.wait(timeout=60) == 0
    conn.close()
    srv.close()
    assert got == n
    return secs * n / (n - 1)


def pipe_run(binary, src, d, n):
    name = "bench-pipe"
    try:
        lr.rm(name, dir=d)
    except lr.RingError:
        pass
    c = subprocess.Popen([binary, "consume", name, "--dir", d, "-o", "-", "--quiet"], stdout=subprocess.PIPE)
    p = subprocess.Popen([binary, "produce", name, "--dir", d, "-i", src, "--quiet"])
    reader = pa.ipc.open_stream(c.stdout)
    got, start = 0, None
    for b in reader:
        if start is None:
            start = time.perf_counter()
        got += 1
    secs = time.perf_counter() - start
    assert p.wait(timeout=60) == 0 and c.wait(timeout=60) == 0
    assert got == n
    return secs * n / (n - 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--rows", type=int, default=65536)
    ap.add_argument("--bin", default="target/release/laminar-ring")
    ap.add_argument("--source", default="target/release/examples/arrow_source")
    a = ap.parse_args()
    binary = os.path.abspath(a.bin)
    source = os.path.abspath(a.source)
    b = batch(a.rows)
    data = sum(buf.size for col in b.columns for buf in col.buffers() if buf is not None)
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        src = os.path.join(d, "in.arrows")
        with pa.OSFile(src, "wb") as f, pa.ipc.new_stream(f, b.schema) as w:
            for _ in range(a.batches):
                w.write_batch(b)
        paths = {
            "ring, zero-copy": lambda: ring_run(source, a.rows, d, a.batches, False),
            "ring, copy=True": lambda: ring_run(source, a.rows, d, a.batches, True),
            "Unix socket (pyarrow.ipc)": lambda: socket_run(src, d, a.batches),
            "consume -o - | pyarrow": lambda: pipe_run(binary, src, d, a.batches),
        }
        times = {k: [] for k in paths}
        for r in range(a.rounds):
            order = list(paths) if r % 2 == 0 else list(reversed(paths))
            for k in order:
                times[k].append(paths[k]())
        print(f"{a.rounds} rounds, {a.batches} batches of {a.rows} rows (Int64, Float64, Utf8), "
              f"{data / 1e6:.2f} MB of Arrow data each; medians\n")
        print("| path | GB/s | batches/s | vs socket |")
        print("|---|---:|---:|---:|")
        sock = statistics.median(times["Unix socket (pyarrow.ipc)"])
        for k, v in times.items():
            m = statistics.median(v)
            print(f"| {k} | {data * a.batches / m / 1e9:.2f} | {a.batches / m:.0f} | {sock / m:.2f}x |")


if __name__ == "__main__":
    main()
