//! RFC 6587 octet counting (`iis_tagger::framing`): for any sequence of frames, long frames
//! and bytes outside the framing, cut into reads anywhere, the decoder gives exactly the
//! records that were sent, holds no more than a record and a header, and loses nothing.

use iis_tagger::framing::{OctetCounted, Piece};
use proptest::prelude::*;

const MAX: usize = 64;

/// What a sender put on the wire.
#[derive(Debug, Clone)]
enum Item {
    /// A frame: `LEN SP body` (the body may hold anything, newlines and digits too).
    Frame(Vec<u8>),
    /// A line outside the framing (not starting with a digit), ended by `\n`.
    Unframed(Vec<u8>),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 1..(MAX * 2)).prop_map(Item::Frame),
        1 => ("[a-z<{][a-z0-9 ]{0,20}").prop_map(|s| Item::Unframed(s.into_bytes())),
    ]
}

/// What the decoder should give for the items: whole records, or the parts of a long one.
fn expected(items: &[Item]) -> Vec<Vec<u8>> {
    items
        .iter()
        .map(|i| match i {
            Item::Frame(b) | Item::Unframed(b) => b.clone(),
        })
        .collect()
}

fn wire(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        match i {
            Item::Frame(b) => {
                out.extend_from_slice(format!("{} ", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Item::Unframed(b) => {
                out.extend_from_slice(b);
                out.push(b'\n');
            }
        }
    }
    out
}

/// Decodes `input` in reads of the given sizes; long frames are put back together.
fn decode(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut d = OctetCounted::new(MAX);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut long: Option<Vec<u8>> = None;
    let mut f = |p: Piece<'_>| match p {
        Piece::Record(r) => got.push(r.to_vec()),
        Piece::LongHead(_) => long = Some(Vec::new()),
        Piece::LongPart(b) => long.as_mut().expect("a part after a head").extend_from_slice(b),
        Piece::LongEnd { missing } => {
            assert_eq!(missing, 0, "the input held the whole frame");
            got.push(long.take().expect("an end after a head"));
        }
    };
    let mut at = 0;
    let mut i = 0;
    while at < input.len() {
        let n = cuts[i % cuts.len()].clamp(1, input.len() - at);
        d.feed(&input[at..at + n], &mut f);
        assert!(d.held_bytes() <= MAX + 11, "held {} bytes", d.held_bytes());
        at += n;
        i += 1;
    }
    d.finish(&mut f);
    got
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_record_once_whatever_the_cuts(items in proptest::collection::vec(item(), 0..20),
                                           cuts in proptest::collection::vec(1usize..200, 1..8)) {
        let input = wire(&items);
        prop_assert_eq!(decode(&input, &cuts), expected(&items));
    }

    #[test]
    fn any_bytes_never_panic_and_stay_bounded(input in proptest::collection::vec(any::<u8>(), 0..2000),
                                              cuts in proptest::collection::vec(1usize..300, 1..8)) {
        let mut d = OctetCounted::new(MAX);
        let mut given = 0usize;
        let mut f = |p: Piece<'_>| match p {
            Piece::Record(r) | Piece::LongPart(r) => given += r.len(),
            Piece::LongHead(_) | Piece::LongEnd { .. } => {}
        };
        let mut at = 0;
        let mut i = 0;
        while at < input.len() {
            let n = cuts[i % cuts.len()].clamp(1, input.len() - at);
            d.feed(&input[at..at + n], &mut f);
            prop_assert!(d.held_bytes() <= MAX + 11);
            at += n;
            i += 1;
        }
        d.finish(&mut f);
        // Only headers and line ends are not given on: never more than the input.
        prop_assert!(given <= input.len());
    }
}
