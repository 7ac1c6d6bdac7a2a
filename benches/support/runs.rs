//! What every bench of this directory that runs children and rounds needs:
//! this binary re-executed in a role, and the median of a round's figures.

use std::process::{Child, Command};

/// Starts this bench binary again as the child `role` (it finds the role
/// in `LAMINAR_BENCH_CHILD`), with `env` set.
pub fn spawn_child(role: &str, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("bench binary"));
    cmd.env("LAMINAR_BENCH_CHILD", role);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child")
}

/// The median of `v` (the upper one of an even count), sorting `v`.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
