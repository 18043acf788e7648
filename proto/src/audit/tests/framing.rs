//! The file itself: truncation anywhere names the offset, damaged framing is
//! found, the reader streams; and any single byte change or truncation is
//! found (property tests).

use proptest::prelude::*;

use super::*;

#[test]
fn a_truncated_file_names_the_offset() {
    let bytes = chain().full_export();
    let f = frames(&bytes);
    assert_eq!(f.len() as u64, N + 2);
    let cut = |n: usize| verify(&bytes[..n]).unwrap_err();

    let e = cut(7);
    assert_eq!(e.offset(), Some(0));
    assert!(e.to_string().contains("not an arbor export"), "{e}");
    let e = cut(f[0].0 + 10);
    assert_eq!(
        e.to_string(),
        format!(
            "offset 16: header: truncated: the file ends after 6 of the frame's {} bytes",
            f[0].1
        )
    );

    // Inside entry 37's frame, and right after entry 36.
    let (at, len) = f[1 + 37];
    let e = cut(at + 4 + len / 2);
    assert_eq!(e.seq(), Some(37));
    assert_eq!(e.offset(), Some(at as u64));
    assert!(e.to_string().contains("truncated"), "{e}");
    assert!(
        e.to_string().ends_with(&format!("(byte offset {at})")),
        "{e}"
    );
    let e = cut(at);
    assert_eq!(e.seq(), Some(37));
    assert!(
        e.to_string()
            .contains("missing: the file ends after 37 of 120 entries"),
        "{e}"
    );
    let e = cut(at + 2);
    assert!(
        e.to_string().contains("after 2 of the 4 length bytes"),
        "{e}"
    );

    // Without the trailer.
    let (at, _) = f[f.len() - 1];
    let e = cut(at);
    assert_eq!(
        e.to_string(),
        format!("offset {at}: trailer: missing: the file ends here")
    );
    let e = cut(bytes.len() - 1);
    assert!(
        e.to_string()
            .starts_with(&format!("offset {at}: trailer: truncated")),
        "{e}"
    );
}

#[test]
fn damaged_framing_is_found() {
    let bytes = chain().full_export();
    let f = frames(&bytes);
    // Data after the trailer.
    let mut b = bytes.clone();
    b.push(0);
    assert_eq!(
        verify(&b).unwrap_err().to_string(),
        format!("offset {}: unexpected data after the trailer", bytes.len())
    );
    // A garbled length.
    let mut b = bytes.clone();
    b[f[5].0] = 0xff;
    let e = verify(&b).unwrap_err();
    assert_eq!(e.seq(), Some(4));
    assert!(
        e.to_string().contains("over the 16777216-byte limit"),
        "{e}"
    );
    // An entry frame that decodes but is not canonical (an unknown field appended).
    let (at, len) = f[1 + 12];
    let mut frame = bytes[at + 4..at + 4 + len].to_vec();
    frame.extend_from_slice(&[0x48, 0x01]); // field 9, varint 1
    let mut b = bytes[..at].to_vec();
    b.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    b.extend_from_slice(&frame);
    b.extend_from_slice(&bytes[at + 4 + len..]);
    expect_entry_error(
        verify(&b),
        12,
        "not the canonical protobuf encoding of a LedgerEntry",
    );
    // Another format version.
    let mut b = bytes.clone();
    b[14] = b'9';
    assert!(verify(&b)
        .unwrap_err()
        .to_string()
        .contains("\"v9\" is not supported"));
}

#[test]
fn the_reader_streams_entries() {
    let s = chain();
    let bytes = s.full_export();
    let r = ExportReader::open(bytes.as_slice()).unwrap();
    assert_eq!(r.header().entry_count, N);
    assert_eq!(r.checkpoint().size, N);
    let got: Vec<Entry> = r.collect::<Result<_, _>>().unwrap();
    assert_eq!(got, s.entries);
    // The writer refuses entries out of order or missing.
    let h = ExportHeader::new(0, 1, String::new(), &[], &[]);
    let mut w = ExportWriter::new(Vec::new(), h.clone()).unwrap();
    assert!(w.write(&s.entries[1]).is_err());
    w.write(&s.entries[0]).unwrap();
    assert!(w.finish().is_err());
}

fn flip_cases() -> &'static (Vec<u8>, usize) {
    static B: OnceLock<(Vec<u8>, usize)> = OnceLock::new();
    B.get_or_init(|| {
        let s = Synth::build(40, 3);
        let b = s.full_export();
        let n = b.len();
        (b, n)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_single_byte_change_anywhere_is_found(pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let (bytes, n) = flip_cases();
        let mut b = bytes.clone();
        let i = pos.index(*n);
        b[i] ^= xor;
        prop_assert!(verify(&b).is_err(), "flip at {} verified", i);
    }

    #[test]
    fn any_truncation_is_found(keep in any::<prop::sample::Index>()) {
        let (bytes, n) = flip_cases();
        let k = keep.index(*n);
        prop_assert!(verify(&bytes[..k]).is_err());
    }
}
