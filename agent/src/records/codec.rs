//! On-disk framing of spooled records: `[len u32 LE][crc32 u32 LE][protobuf Record]`.
//!
//! The checksum lets a restart tell a torn tail (the agent died mid-write) from a record.

use kortix_proto::v1::{Record, record::Body};
use prost::Message;

pub const HEADER_LEN: usize = 8;
/// Largest encoded record the agent produces; bigger payloads are truncated before encoding.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

pub fn encode_frame(record: &Record, out: &mut Vec<u8>) {
    let len = record.encoded_len();
    out.reserve(HEADER_LEN + len);
    let start = out.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    // Encoding into a Vec cannot fail: it grows as needed.
    let _ = record.encode(out);
    let crc = crc32(&out[start + HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Outcome of decoding one frame at the front of `buf`.
#[derive(Debug)]
pub enum Frame {
    Record {
        record: Record,
        frame_len: usize,
    },
    /// More bytes are needed (or the file ends mid-frame: a torn tail).
    Incomplete,
    /// Checksum or protobuf mismatch: the bytes from here on are not trustworthy.
    Corrupt(String),
}

pub fn decode_frame(buf: &[u8]) -> Frame {
    if buf.len() < HEADER_LEN {
        return Frame::Incomplete;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > MAX_RECORD_BYTES + 1024 {
        return Frame::Corrupt(format!("frame length {len} exceeds the record limit"));
    }
    if buf.len() < HEADER_LEN + len {
        return Frame::Incomplete;
    }
    let payload = &buf[HEADER_LEN..HEADER_LEN + len];
    if crc32(payload) != crc {
        return Frame::Corrupt("checksum mismatch".into());
    }
    match Record::decode(payload) {
        Ok(record) if record.seq > 0 => Frame::Record {
            record,
            frame_len: HEADER_LEN + len,
        },
        Ok(_) => Frame::Corrupt("record without seq".into()),
        Err(e) => Frame::Corrupt(format!("undecodable record: {e}")),
    }
}

/// The highest seq a record stands for. The agent's own gap records cover only themselves
/// (`from_seq == to_seq == seq`); a gap at its `from_seq` with a larger `to_seq` would stand in
/// for that range.
pub fn covers_to(record: &Record) -> u64 {
    match &record.body {
        Some(Body::Gap(g)) if g.from_seq == record.seq && g.to_seq >= record.seq => g.to_seq,
        _ => record.seq,
    }
}

/// CRC-32 (IEEE), table-driven; small enough not to warrant a dependency.
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use kortix_proto::v1::{Gap, LogLine};

    #[test]
    fn crc_matches_reference() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn frames_roundtrip_and_detect_damage() {
        let rec = Record {
            seq: 7,
            ts_unix_ms: 1,
            body: Some(Body::Log(LogLine {
                stream: 1,
                line: "hi".into(),
            })),
        };
        let mut buf = Vec::new();
        encode_frame(&rec, &mut buf);
        match decode_frame(&buf) {
            Frame::Record { record, frame_len } => {
                assert_eq!(record, rec);
                assert_eq!(frame_len, buf.len());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_frame(&buf[..buf.len() - 1]),
            Frame::Incomplete
        ));
        let last = buf.len() - 1;
        buf[last] ^= 0xff;
        assert!(matches!(decode_frame(&buf), Frame::Corrupt(_)));
    }

    #[test]
    fn gap_covers_its_range() {
        let gap = Record {
            seq: 5,
            ts_unix_ms: 0,
            body: Some(Body::Gap(Gap {
                from_seq: 5,
                to_seq: 9,
                reason: String::new(),
            })),
        };
        assert_eq!(covers_to(&gap), 9);
        let plain = Record {
            seq: 5,
            ts_unix_ms: 0,
            body: None,
        };
        assert_eq!(covers_to(&plain), 5);
    }
}
