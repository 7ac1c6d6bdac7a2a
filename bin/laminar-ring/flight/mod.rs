//! `flight serve`, `flight pull`, `flight push`: a ring's stream across
//! hosts through Arrow Flight (gRPC), with arrow-rs's `arrow-flight` over
//! tonic.
//!
//! The protocol beyond plain Flight, which only our own ends use (any
//! Flight client can list, describe, `DoGet` and `DoPut`):
//! - every record batch message the server streams, and every one `push`
//!   sends, carries its sequence number in the stream (from 1) in
//!   `app_metadata`, 8 bytes little-endian;
//! - `pull` reads with `DoExchange` and acknowledges each batch (a message
//!   of `app_metadata` only, the sequence number) once it is in its own
//!   ring: the server releases a batch from its ring only then, so a
//!   dropped connection or a killed server redelivers what was not
//!   acknowledged (at-least-once, as a local consumer);
//! - the server answers each batch of `DoPut` with a `PutResult` carrying
//!   its sequence number once the batch is in the ring; `push` keeps its
//!   own ring's batches until then, resends what was not acknowledged after
//!   a reconnection, and names its session (the descriptor's second path
//!   element, `session=ID`) so that the server continues the same producer
//!   and skips batches it already has;
//! - how a stream ended travels as a message of `app_metadata` only
//!   (`push` → server: `laminar-ring:closed`, `laminar-ring:died`,
//!   `laminar-ring:failed:REASON`) or as the gRPC status of the server's
//!   stream (an `x-laminar-ending` of `died` or `failed` in its metadata).
//!   A session's `DoPut` whose request stream ends without one of the
//!   three (a pusher that gave up, timed out or was stopped mid-call) is
//!   taken as a dropped connection, never as a clean end: its producer
//!   waits for the session's return, and is abandoned after the grace.

mod bridge;
mod serve;
mod wire;

use crate::error::CliError;

/// Cross hosts: serve a directory's rings over Arrow Flight, or move a
/// stream between a local ring and a Flight server.
///
/// `serve` is a Flight server in front of the rings of --dir: any Flight
/// client (pyarrow.flight, the Java, C++ and Go clients, DuckDB) lists
/// them, reads one (DoGet with the ring's name as ticket) or writes one
/// (DoPut with the ring's name as path). `pull` and `push` bridge a local
/// ring to a remote one, resuming after a dropped connection without loss.
#[derive(Debug, clap::Args)]
pub struct FlightArgs {
    #[command(subcommand)]
    cmd: FlightCmd,
}

#[derive(Debug, clap::Subcommand)]
enum FlightCmd {
    Serve(serve::ServeArgs),
    Pull(bridge::PullArgs),
    Push(bridge::PushArgs),
}

pub fn flight(args: &FlightArgs) -> Result<(), CliError> {
    match &args.cmd {
        FlightCmd::Serve(a) => serve::serve(a),
        FlightCmd::Pull(a) => bridge::pull(a),
        FlightCmd::Push(a) => bridge::push(a),
    }
}
