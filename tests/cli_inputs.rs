//! `produce` on input files as people have them: hostile framing, other
//! byte orders, compression. The real binary, real files.
#![cfg(feature = "cli")]

mod cli_support;

use std::time::Duration;

use cli_support::{Dir, ipc_file, ipc_messages, ipc_stream, offset_in, rich_batches, run_limited};

/// Peak memory allowed to `produce` on an input of a few tens of KB,
/// whatever it claims: the binary itself takes a few MiB, and a reader
/// that believes the claims takes gigabytes.
const SMALL_INPUT_RSS_LIMIT_KIB: u64 = 200 * 1024;

/// 2 GiB: what the hostile files below claim a block holds.
const CLAIM: i64 = 2 << 30;

/// `bytes` with its one occurrence of `old` (8 bytes, little-endian)
/// replaced by `new`.
fn replace_i64(bytes: &mut [u8], range: std::ops::Range<usize>, old: i64, new: i64) {
    let hits: Vec<usize> = (range.start..range.end - 7)
        .filter(|&i| bytes[i..i + 8] == old.to_le_bytes())
        .collect();
    assert_eq!(hits.len(), 1, "{old} occurs once in the metadata");
    bytes[hits[0]..hits[0] + 8].copy_from_slice(&new.to_le_bytes());
}

#[test]
fn a_small_file_that_claims_huge_blocks_costs_memory_bounded_by_its_real_size() {
    let d = Dir::new("huge-claims");
    let batches = rich_batches(3, 40, true);

    // An IPC file whose footer says its first dictionary and its first
    // record batch have 2 GiB bodies.
    let file = ipc_file(&batches);
    let n = file.len();
    let footer_len = i32::from_le_bytes(file[n - 10..n - 6].try_into().unwrap()) as usize;
    let footer_at = n - 10 - footer_len;
    let (records_at, dicts_at) = {
        let footer = arrow_ipc::root_as_footer(&file[footer_at..n - 10]).unwrap();
        (
            offset_in(&file, footer.recordBatches().unwrap().bytes()),
            offset_in(&file, footer.dictionaries().unwrap().bytes()),
        )
    };
    let mut huge_batch = file.clone();
    // A Block is {offset: i64, metaDataLength: i32, pad, bodyLength: i64}.
    huge_batch[records_at + 16..records_at + 24].copy_from_slice(&CLAIM.to_le_bytes());
    let mut huge_dict = file.clone();
    huge_dict[dicts_at + 16..dicts_at + 24].copy_from_slice(&CLAIM.to_le_bytes());

    // An IPC stream whose first record batch message claims a 2 GiB body.
    let mut stream = ipc_stream(&batches);
    let (_, meta, body) = ipc_messages(&stream, 0)
        .into_iter()
        .find(|(_, meta, _)| {
            arrow_ipc::root_as_message(&stream[meta.clone()])
                .unwrap()
                .header_as_record_batch()
                .is_some()
        })
        .unwrap();
    replace_i64(&mut stream, meta, body.len() as i64, CLAIM);

    let cases = [
        ("huge-batch.arrow", huge_batch, false),
        ("huge-dict.arrow", huge_dict, false),
        ("huge-body.arrows", stream.clone(), false),
        ("huge-body-stdin.arrows", stream, true),
    ];
    for (name, bytes, stdin) in cases {
        let path = d.path(name);
        std::fs::write(&path, &bytes).unwrap();
        let ring = name.replace('.', "-");
        let run = if stdin {
            let cmd = d.cmd(&[
                "produce", &ring, "-i", "-", "--format", "arrow", "--arena", "1MiB",
            ]);
            run_limited(cmd, Some(&path), Duration::from_secs(120))
        } else {
            // A small ring: its mapping counts in the peak too.
            let cmd = d.cmd(&["produce", &ring, "-i", &d.s(name), "--arena", "1MiB"]);
            run_limited(cmd, None, Duration::from_secs(120))
        };
        eprintln!(
            "{name}: {} bytes, claims {CLAIM} bytes; peak RSS {} KiB, exit {:?}",
            bytes.len(),
            run.max_rss_kib,
            run.code
        );
        assert!(!run.timed_out, "{name}: no exit within the deadline");
        run.assert_fails(1, "cannot read");
        assert!(
            run.max_rss_kib < SMALL_INPUT_RSS_LIMIT_KIB,
            "{name}: a {}-byte input took {} KiB",
            bytes.len(),
            run.max_rss_kib
        );
    }
}
