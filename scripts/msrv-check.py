#!/usr/bin/env python3
"""The declared minimum Rust version holds for what users build: no package
our packages depend on (normal and build dependencies, on Linux) declares
a newer `rust-version`.
Together with clippy's `incompatible_msrv` lint (clippy reads our
`rust-version` and flags std APIs stabilised after it) this stands in for a
build with that toolchain, which cannot be installed here."""
import json
import subprocess
import sys

meta = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked",
         "--filter-platform", "x86_64-unknown-linux-gnu"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)


def key(v):
    return tuple(int(x) for x in (v.split(".") + ["0", "0"])[:3])


ours = {p["id"]: p for p in meta["packages"] if p["source"] is None}
declared = {p["name"]: p.get("rust_version") for p in ours.values()}
msrv = declared.get("laminar-ring")
if not msrv:
    sys.exit("laminar-ring declares no rust-version")
bad = [f"{n} declares {v}" for n, v in declared.items() if v != msrv]
# What a user of either package builds: normal and build dependencies,
# reachable from ours (dev-dependencies such as loom's are not built).
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
resolved, todo = set(), list(ours)
while todo:
    i = todo.pop()
    if i in resolved:
        continue
    resolved.add(i)
    for d in nodes[i]["deps"]:
        if any(k["kind"] in (None, "build") for k in d["dep_kinds"]):
            todo.append(d["pkg"])
for p in meta["packages"]:
    v = p.get("rust_version")
    if p["id"] in resolved and v and key(v) > key(msrv):
        bad.append(f"{p['name']} {p['version']} needs Rust {v}")
if bad:
    sys.exit(f"rust-version {msrv} is not true:\n  " + "\n  ".join(bad))
print(f"rust-version {msrv}: every package in the build declares {msrv} or older")
