//! The request path (`:path`, the gRPC method) of the kubelet's CRI calls, decoded from the
//! HPACK header blocks the tracer keeps (RFC 7541).
//!
//! HPACK compresses against a dynamic table that both ends build from the connection's first
//! request on. The tracer attaches to a connection that is hours old, so the table's older
//! entries are unknown; but every entry inserted after attaching is seen, and indexes count from
//! the newest entry, so those resolve. [`Connection`] keeps only the entries it saw inserted
//! (newest first) and answers "unknown" for anything older. Eviction needs no modelling: the
//! peer only refers to entries its table still holds, and index 62 + j is always the j-th newest
//! insertion — the j-th entry seen, if that many were seen. (Entry sizes are often unknown
//! anyway: a literal whose name refers to an older entry.)
//! grpc-go indexes every field it sends, including each call's `grpc-timeout` value, so the table
//! turns over and a method's `:path` is sent literally again every few dozen calls.

use std::collections::VecDeque;

/// RFC 7541 Appendix A: the static table (index 1..=61).
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The default (and grpc-go's) dynamic table size, SETTINGS_HEADER_TABLE_SIZE.
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// A dynamic-table entry seen inserted; `None` for a part that referred to an unknown entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    name: Option<String>,
    value: Option<String>,
}

/// Every entry takes at least 32 bytes of the table (RFC 7541 §4.1).
const MIN_ENTRY_SIZE: usize = 32;

/// What this side knows of one connection's request-direction dynamic table.
#[derive(Clone, Debug)]
pub struct Connection {
    /// Entries seen inserted, newest first (index 62 is the front).
    known: VecDeque<Entry>,
    max_size: usize,
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            known: VecDeque::new(),
            max_size: DEFAULT_TABLE_SIZE,
        }
    }
}

/// A decoding failure: the block is not HPACK this decoder understands.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// RFC 7541 §5.1 integer with an `n`-bit prefix.
fn integer(b: &[u8], pos: &mut usize, n: u8) -> Result<usize, Malformed> {
    let mask = (1u16 << n) as usize - 1;
    let first = *b.get(*pos).ok_or(Malformed)? as usize & mask;
    *pos += 1;
    if first < mask {
        return Ok(first);
    }
    let mut value = mask;
    let mut shift = 0;
    loop {
        let byte = *b.get(*pos).ok_or(Malformed)?;
        *pos += 1;
        value += ((byte & 0x7f) as usize) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 28 {
            return Err(Malformed);
        }
    }
}

/// RFC 7541 §5.2 string literal.
fn string(b: &[u8], pos: &mut usize) -> Result<String, Malformed> {
    let huffman = *b.get(*pos).ok_or(Malformed)? & 0x80 != 0;
    let len = integer(b, pos, 7)?;
    let raw = b.get(*pos..*pos + len).ok_or(Malformed)?;
    *pos += len;
    let bytes = if huffman {
        let mut out = Vec::with_capacity(len * 2);
        httlib_huffman::decode(raw, &mut out, httlib_huffman::DecoderSpeed::FourBits)
            .map_err(|_| Malformed)?;
        out
    } else {
        raw.to_vec()
    };
    String::from_utf8(bytes).map_err(|_| Malformed)
}

impl Connection {
    /// (name, value) at `index`; `None` parts are unknown (older than what was seen).
    fn lookup(&self, index: usize) -> Result<(Option<String>, Option<String>), Malformed> {
        match index {
            0 => Err(Malformed),
            1..=61 => {
                let (n, v) = STATIC[index - 1];
                Ok((Some(n.to_string()), Some(v.to_string())))
            }
            _ => Ok(match self.known.get(index - 62) {
                Some(e) => (e.name.clone(), e.value.clone()),
                None => (None, None),
            }),
        }
    }

    /// Forgets entries the table cannot hold any more (it holds at most max/32 entries).
    fn evict(&mut self) {
        self.known.truncate(self.max_size / MIN_ENTRY_SIZE);
    }

    fn insert(&mut self, name: Option<String>, value: Option<String>) {
        self.known.push_front(Entry { name, value });
        self.evict();
    }

    /// Decodes one request's header block (in the order the requests were sent on this
    /// connection) and returns its `:path` if known. `complete` is false when the block was cut
    /// short: entries it inserted past the cut are unknown, so what this side knows is dropped.
    pub fn request_path(&mut self, block: &[u8], complete: bool) -> Option<String> {
        let mut pos = 0;
        let mut path = None;
        let result = (|| -> Result<(), Malformed> {
            while pos < block.len() {
                let b = block[pos];
                let (name, value) = if b & 0x80 != 0 {
                    let i = integer(block, &mut pos, 7)?;
                    self.lookup(i)?
                } else if b & 0xe0 == 0x20 {
                    // Dynamic table size update.
                    self.max_size = integer(block, &mut pos, 5)?;
                    self.evict();
                    continue;
                } else {
                    let (indexing, prefix) = if b & 0xc0 == 0x40 {
                        (true, 6)
                    } else {
                        (false, 4)
                    };
                    let i = integer(block, &mut pos, prefix)?;
                    let name = if i == 0 {
                        Some(string(block, &mut pos)?)
                    } else {
                        self.lookup(i)?.0
                    };
                    let value = Some(string(block, &mut pos)?);
                    if indexing {
                        self.insert(name.clone(), value.clone());
                    }
                    (name, value)
                };
                if name.as_deref() == Some(":path") {
                    path = value;
                }
            }
            Ok(())
        })();
        if result.is_err() || !complete {
            // Cut or not understood: insertions after this point are unknown.
            self.known.clear();
        }
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // RFC 7541 Appendix C.4: three requests on one connection, Huffman-coded.
    #[test]
    fn rfc_7541_c4_requests_resolve_paths_and_the_dynamic_table() {
        let mut c = Connection::default();
        let first = hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff");
        assert_eq!(c.request_path(&first, true).as_deref(), Some("/"));
        // The second request refers to :authority by dynamic index 62.
        let second = hex("8286 84be 5886 a8eb 1064 9cbf");
        assert_eq!(c.request_path(&second, true).as_deref(), Some("/"));
        assert_eq!(
            c.lookup(63).unwrap(),
            (
                Some(":authority".to_string()),
                Some("www.example.com".to_string())
            )
        );
        let third = hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf");
        assert_eq!(c.request_path(&third, true).as_deref(), Some("/index.html"));
        assert_eq!(
            c.lookup(62).unwrap(),
            (
                Some("custom-key".to_string()),
                Some("custom-value".to_string())
            )
        );
    }

    #[test]
    fn an_index_older_than_what_was_seen_is_unknown_not_wrong() {
        let mut c = Connection::default();
        // Indexed field 70: a dynamic entry inserted before the tracer attached.
        assert_eq!(c.request_path(&[0x80 | 70], true), None);
        // A literal :path with incremental indexing (name index 4), then that entry by index.
        let mut block = vec![0x44, 0x05];
        block.extend_from_slice(b"/a/Bc");
        assert_eq!(c.request_path(&block, true).as_deref(), Some("/a/Bc"));
        assert_eq!(c.request_path(&[0x80 | 62], true).as_deref(), Some("/a/Bc"));
        assert_eq!(c.request_path(&[0x80 | 63], true), None);
    }

    #[test]
    fn entries_behind_an_unknown_name_still_resolve_and_the_table_is_bounded() {
        let mut c = Connection::default();
        let mut path = vec![0x44, 0x05];
        path.extend_from_slice(b"/a/Bc");
        c.request_path(&path, true);
        // A literal whose name is an entry from before tracing (index 64 is unknown): inserted
        // with an unknown name; the :path entry is now second newest. (63 fills the 6-bit
        // prefix: 0x7f then 0.)
        let mut b = vec![0x7f, 0x00, 8];
        b.extend_from_slice(b"1999967u");
        c.request_path(&b, true);
        assert_eq!(c.request_path(&[0x80 | 63], true).as_deref(), Some("/a/Bc"));
        for i in 0..200 {
            let mut b = vec![0x40, 12];
            b.extend_from_slice(b"grpc-timeout");
            b.push(8);
            b.extend_from_slice(format!("{i:07}u").as_bytes());
            c.request_path(&b, true);
        }
        assert_eq!(c.known.len(), 4096 / 32);
        assert!(
            c.known
                .iter()
                .all(|e| e.name.as_deref() == Some("grpc-timeout"))
        );
    }

    #[test]
    fn a_cut_block_forgets_what_it_may_have_inserted() {
        let mut c = Connection::default();
        let mut path = vec![0x44, 0x05];
        path.extend_from_slice(b"/a/Bc");
        assert_eq!(c.request_path(&path, false).as_deref(), Some("/a/Bc"));
        assert_eq!(c.request_path(&[0x80 | 62], true), None);
        assert_eq!(c.request_path(&[0x44, 0x09, b'/'], true), None, "malformed");
    }
}
