//! Type fidelity checked with the tools people use on the output: files
//! written by pyarrow (and polars), read back by pyarrow, polars and
//! DuckDB. Each test runs when `python3` can import pyarrow (polars and
//! DuckDB checks when those import too) and says on stderr when it is
//! skipped; `.ci/run` installs them and sets `LAMINAR_REQUIRE_PYTHON=1`,
//! so there a missing module fails instead. Pure-Rust versions of the same checks
//! are in `cli_fidelity.rs`.

mod cli_support;

use std::process::Command;

use cli_support::Dir;

/// Whether `python3` imports `module`. With `LAMINAR_REQUIRE_PYTHON=1`
/// (as `.ci/run` sets, after installing them) a missing module fails the
/// test instead of skipping it.
fn has(module: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    let required = std::env::var_os("LAMINAR_REQUIRE_PYTHON").is_some_and(|v| v == "1");
    assert!(
        ok || !required,
        "python3 cannot import {module}, and LAMINAR_REQUIRE_PYTHON=1"
    );
    ok
}

/// `false` (and a line on stderr) when pyarrow is missing.
fn pyarrow_or_skip(test: &str) -> bool {
    let ok = has("pyarrow");
    if !ok {
        eprintln!(
            "SKIPPED {test}: python3 with pyarrow is not importable (pip install pyarrow polars duckdb)"
        );
    }
    ok
}

/// Runs the Python `script` with `args` (`sys.argv[1..]`); it must succeed.
fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed:\n{script}\nstdout: {text}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn pyarrow_zoned_timestamps_come_out_as_csv_pyarrow_reads() {
    if !pyarrow_or_skip("csv zones") {
        return;
    }
    let d = Dir::new("py-csv-zones");
    let src = d.s("zones.parquet");
    python(
        r#"
import sys, pyarrow as pa, pyarrow.parquet as pq
t = 1704067200
pq.write_table(pa.table({
    "utc": pa.array([t, t + 1], pa.timestamp("s", tz="UTC")),
    "tokyo": pa.array([t * 10**6, None], pa.timestamp("us", tz="Asia/Tokyo")),
}), sys.argv[1])
"#,
        &[&src],
    );
    d.run(&["produce", "z", "-i", &src]).assert_ok();
    let out = d.s("out.csv");
    d.run(&["consume", "z", "-o", &out, "--format", "csv"])
        .assert_ok();
    python(
        r#"
import sys, datetime as dt, pyarrow.csv as pc
t = pc.read_csv(sys.argv[1])
utc = dt.timezone.utc
want = dt.datetime(2024, 1, 1, tzinfo=utc)
got = [v.astimezone(utc) for v in t.column("utc").to_pylist()]
assert got == [want, want + dt.timedelta(seconds=1)], got
tokyo = t.column("tokyo").to_pylist()
assert tokyo[0].astimezone(utc) == want and tokyo[1] is None, tokyo
"#,
        &[&out],
    );
}

#[test]
fn csv_times_reach_parquet_as_timestamps_for_pyarrow_polars_and_duckdb() {
    if !pyarrow_or_skip("parquet logical types") {
        return;
    }
    let d = Dir::new("py-parquet-types");
    let csv = d.path("times.csv");
    std::fs::write(
        &csv,
        "id,at\n1,2024-01-01T00:00:00\n2,2024-06-30T12:34:56\n",
    )
    .unwrap();
    d.run(&["produce", "t", "-i", &csv.display().to_string()])
        .assert_ok();
    let out = d.s("out.parquet");
    d.run(&["consume", "t", "-o", &out, "--format", "parquet"])
        .assert_ok();
    python(
        r#"
import sys, datetime as dt, pyarrow as pa, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
assert pa.types.is_timestamp(t.schema.field("at").type), t.schema
assert t.column("at").to_pylist() == [dt.datetime(2024, 1, 1), dt.datetime(2024, 6, 30, 12, 34, 56)]
"#,
        &[&out],
    );
    if has("polars") {
        python(
            r#"
import sys, polars as pl
df = pl.read_parquet(sys.argv[1])
assert df.schema["at"].is_temporal(), df.schema
"#,
            &[&out],
        );
    } else {
        eprintln!("SKIPPED polars check: polars is not importable");
    }
    if has("duckdb") {
        let t = python(
            r#"
import sys, duckdb
print(duckdb.sql(f"select typeof(\"at\") from '{sys.argv[1]}' limit 1").fetchall()[0][0])
"#,
            &[&out],
        );
        assert!(t.trim().starts_with("TIMESTAMP"), "duckdb: {t}");
    } else {
        eprintln!("SKIPPED duckdb check: duckdb is not importable");
    }
}

#[test]
fn a_pyarrow_tokyo_timestamp_keeps_its_zone_through_the_ring() {
    if !pyarrow_or_skip("tokyo zone") {
        return;
    }
    let d = Dir::new("py-tokyo");
    let src = d.s("tokyo.parquet");
    python(
        r#"
import sys, pyarrow as pa, pyarrow.parquet as pq
pq.write_table(pa.table({"at": pa.array([0, 1000, None], pa.timestamp("s", tz="Asia/Tokyo"))}), sys.argv[1])
"#,
        &[&src],
    );
    d.run(&["produce", "tk", "-i", &src]).assert_ok();
    let out = d.s("out.parquet");
    d.run(&["consume", "tk", "-o", &out, "--format", "parquet"])
        .assert_ok();
    python(
        r#"
import sys, pyarrow.parquet as pq
f = pq.read_table(sys.argv[1]).schema.field("at")
assert f.type.tz == "Asia/Tokyo", f
assert pq.read_table(sys.argv[1]).column("at").cast("int64").to_pylist() == [0, 1000000, None]
"#,
        &[&out],
    );
}

#[test]
fn a_polars_categorical_reaches_parquet_that_pyarrow_reads() {
    if !pyarrow_or_skip("categorical") {
        return;
    }
    let d = Dir::new("py-categorical");
    let src = d.s("cat.arrows");
    // polars when it imports; else the same type (dictionary<u32,
    // string_view>) built with pyarrow.
    let script = if has("polars") {
        r#"
import sys, polars as pl
df = pl.DataFrame({"side": pl.Series(["buy", "sell", None, "buy"], dtype=pl.Categorical), "n": [1, 2, 3, 4]})
df.write_ipc_stream(sys.argv[1])
"#
    } else {
        eprintln!("polars is not importable: building its Categorical with pyarrow");
        r#"
import sys, pyarrow as pa
side = pa.DictionaryArray.from_arrays(pa.array([0, 1, None, 0], pa.uint32()), pa.array(["buy", "sell"], pa.string_view()))
t = pa.table({"side": side, "n": [1, 2, 3, 4]})
with pa.ipc.new_stream(sys.argv[1], t.schema) as w:
    w.write_table(t)
"#
    };
    python(script, &[&src]);
    d.run(&["produce", "cat", "-i", &src]).assert_ok();
    let out = d.s("out.parquet");
    d.run(&["consume", "cat", "-o", &out, "--format", "parquet"])
        .assert_ok();
    python(
        r#"
import sys, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
assert t.column("side").cast("string").to_pylist() == ["buy", "sell", None, "buy"], t
assert t.column("n").to_pylist() == [1, 2, 3, 4]
"#,
        &[&out],
    );
}
