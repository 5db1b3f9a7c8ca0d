//! SPDY/3.1 framing, the server side of what kubectl's port-forward speaks (draft-mbelshe-
//! httpbis-spdy-00). kubectl 1.31+ sends these frames inside WebSocket binary messages
//! ("SPDY/3.1+portforward.k8s.io"); older clients send them on the raw upgraded connection.
//!
//! Only what a port-forward session needs: SYN_STREAM/SYN_REPLY/RST_STREAM/PING/GOAWAY and DATA
//! are understood, the rest is decoded and ignored. Header blocks are zlib streams that last as
//! long as the session (one per direction), primed with the protocol's dictionary; the peer's
//! stream is inflated with it, ours is sent without one (a zlib stream without FDICT is valid,
//! and Go's reader accepts it). There is no flow control: kubectl's library (spdystream) does
//! not enforce windows either.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;

/// Largest DATA payload we send in one frame.
pub const MAX_DATA: usize = 32 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    SynReply {
        stream: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Ping(u32),
    GoAway {
        last_stream: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        headers: Vec<(String, String)>,
    },
    /// SETTINGS, WINDOW_UPDATE and unknown control frames.
    Ignored,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("SPDY: {0}")]
    Protocol(String),
    #[error("SPDY header compression: {0}")]
    Zlib(String),
}

/// The SPDY/3 header dictionary (section 2.6.10.1 of the draft): length-prefixed header names
/// and common values, then a run of status lines, dates and media types.
pub fn dictionary() -> &'static [u8] {
    static DICT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
            "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1424);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// Reads frames from the bytes of one session, in order.
pub struct Decoder {
    buf: BytesMut,
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder { buf: BytesMut::new(), inflate: Decompress::new(true) }
    }
}

impl Decoder {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, or None until more bytes arrive.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Error> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let word = u32::from_be_bytes(self.buf[0..4].try_into().unwrap());
        let flags_len = u32::from_be_bytes(self.buf[4..8].try_into().unwrap());
        let (flags, len) = ((flags_len >> 24) as u8, (flags_len & 0x00ff_ffff) as usize);
        if self.buf.len() < 8 + len {
            return Ok(None);
        }
        self.buf.advance(8);
        let mut payload = self.buf.split_to(len).freeze();
        let fin = flags & FLAG_FIN != 0;
        if word & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data { stream: word & 0x7fff_ffff, fin, data: payload }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(Error::Protocol(format!("unsupported version {version}")));
        }
        let need = |n: usize, p: &Bytes| if p.len() < n { Err(Error::Protocol("short control frame".into())) } else { Ok(()) };
        let frame = match (word & 0xffff) as u16 {
            TYPE_SYN_STREAM => {
                need(10, &payload)?;
                let stream = payload.get_u32() & 0x7fff_ffff;
                payload.advance(6); // associated stream, priority, slot
                Frame::SynStream { stream, fin, headers: self.header_block(&payload)? }
            }
            TYPE_SYN_REPLY => {
                need(4, &payload)?;
                let stream = payload.get_u32() & 0x7fff_ffff;
                Frame::SynReply { stream, fin, headers: self.header_block(&payload)? }
            }
            TYPE_HEADERS => {
                need(4, &payload)?;
                let stream = payload.get_u32() & 0x7fff_ffff;
                Frame::Headers { stream, headers: self.header_block(&payload)? }
            }
            TYPE_RST_STREAM => {
                need(8, &payload)?;
                Frame::RstStream { stream: payload.get_u32() & 0x7fff_ffff, status: payload.get_u32() }
            }
            TYPE_PING => {
                need(4, &payload)?;
                Frame::Ping(payload.get_u32())
            }
            TYPE_GOAWAY => {
                need(8, &payload)?;
                Frame::GoAway { last_stream: payload.get_u32() & 0x7fff_ffff, status: payload.get_u32() }
            }
            TYPE_SETTINGS | TYPE_WINDOW_UPDATE => Frame::Ignored,
            _ => Frame::Ignored,
        };
        Ok(Some(frame))
    }

    fn header_block(&mut self, compressed: &[u8]) -> Result<Vec<(String, String)>, Error> {
        let raw = self.inflate_block(compressed)?;
        parse_header_block(&raw)
    }

    fn inflate_block(&mut self, input: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out: Vec<u8> = Vec::with_capacity(input.len() * 4 + 64);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(256));
            }
            let before = self.inflate.total_in();
            match self.inflate.decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync) {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(dictionary()).map_err(|e| Error::Zlib(e.to_string()))?;
                }
                Err(e) => return Err(Error::Zlib(e.to_string())),
            }
            let used = (self.inflate.total_in() - before) as usize;
            pos += used;
            if pos >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if used == 0 && out.len() < out.capacity() && pos < input.len() {
                return Err(Error::Zlib("no progress inflating a header block".into()));
            }
        }
    }
}

fn parse_header_block(raw: &[u8]) -> Result<Vec<(String, String)>, Error> {
    let mut b = raw;
    let short = || Error::Protocol("truncated header block".into());
    let take = |b: &mut &[u8]| -> Result<String, Error> {
        if b.len() < 4 {
            return Err(short());
        }
        let n = b.get_u32() as usize;
        if b.len() < n {
            return Err(short());
        }
        let s = String::from_utf8_lossy(&b[..n]).into_owned();
        b.advance(n);
        Ok(s)
    };
    if b.len() < 4 {
        return Err(short());
    }
    let count = b.get_u32();
    let mut out = Vec::new();
    for _ in 0..count {
        let name = take(&mut b)?.to_ascii_lowercase();
        let value = take(&mut b)?;
        // Several values of one name are NUL-separated.
        for v in value.split('\0') {
            out.push((name.clone(), v.to_string()));
        }
    }
    Ok(out)
}

/// Writes frames of one session (our side's header compression state lives here).
pub struct Encoder {
    deflate: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder { deflate: Compress::new(Compression::default(), true) }
    }
}

impl Encoder {
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), Error> {
        match frame {
            Frame::Data { stream, fin, data } => {
                out.put_u32(stream & 0x7fff_ffff);
                out.put_u32(((if *fin { FLAG_FIN } else { 0 } as u32) << 24) | data.len() as u32);
                out.extend_from_slice(data);
            }
            Frame::SynReply { stream, fin, headers } => {
                let block = self.header_block(headers)?;
                control(out, TYPE_SYN_REPLY, if *fin { FLAG_FIN } else { 0 }, 4 + block.len());
                out.put_u32(*stream);
                out.extend_from_slice(&block);
            }
            Frame::SynStream { stream, fin, headers } => {
                let block = self.header_block(headers)?;
                control(out, TYPE_SYN_STREAM, if *fin { FLAG_FIN } else { 0 }, 10 + block.len());
                out.put_u32(*stream);
                out.put_u32(0);
                out.put_u16(0);
                out.extend_from_slice(&block);
            }
            Frame::Headers { stream, headers } => {
                let block = self.header_block(headers)?;
                control(out, TYPE_HEADERS, 0, 4 + block.len());
                out.put_u32(*stream);
                out.extend_from_slice(&block);
            }
            Frame::RstStream { stream, status } => {
                control(out, TYPE_RST_STREAM, 0, 8);
                out.put_u32(*stream);
                out.put_u32(*status);
            }
            Frame::Ping(id) => {
                control(out, TYPE_PING, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway { last_stream, status } => {
                control(out, TYPE_GOAWAY, 0, 8);
                out.put_u32(*last_stream);
                out.put_u32(*status);
            }
            Frame::Ignored => {}
        }
        Ok(())
    }

    fn header_block(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, Error> {
        let mut raw = BytesMut::new();
        raw.put_u32(headers.len() as u32);
        for (k, v) in headers {
            raw.put_u32(k.len() as u32);
            raw.extend_from_slice(k.to_ascii_lowercase().as_bytes());
            raw.put_u32(v.len() as u32);
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out: Vec<u8> = Vec::with_capacity(raw.len() + 64);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let before = self.deflate.total_in();
            self.deflate.compress_vec(&raw[pos..], &mut out, FlushCompress::Sync).map_err(|e| Error::Zlib(e.to_string()))?;
            pos += (self.deflate.total_in() - before) as usize;
            // Done when all input is in and the flush fit (zlib leaves room unused then).
            if pos >= raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn control(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    out.put_u32(0x8000_0000 | ((VERSION as u32) << 16) | kind as u32);
    out.put_u32(((flags as u32) << 24) | (len as u32 & 0x00ff_ffff));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_drafts() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b"enq=0."));
    }

    /// A client compresses with the dictionary (as Go's spdy framer does); we must read it, and
    /// our dictionary-free stream must read back too.
    #[test]
    fn header_blocks_round_trip_with_and_without_the_dictionary() {
        let mut client = Compress::new(Compression::best(), true);
        client.set_dictionary(dictionary()).unwrap();
        let mut client_enc = Encoder { deflate: client };
        let headers = vec![("streamtype".to_string(), "data".to_string()), ("port".into(), "80".into()), ("requestid".into(), "0".into())];
        let mut wire = BytesMut::new();
        for id in [1u32, 3] {
            client_enc.encode(&Frame::SynStream { stream: id, fin: false, headers: headers.clone() }, &mut wire).unwrap();
        }
        client_enc.encode(&Frame::Data { stream: 3, fin: true, data: Bytes::from_static(b"GET /") }, &mut wire).unwrap();
        let mut dec = Decoder::default();
        // Byte by byte: frames are only returned whole.
        let mut frames = Vec::new();
        for b in wire.iter() {
            dec.feed(&[*b]);
            while let Some(f) = dec.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1], Frame::SynStream { stream: 3, fin: false, headers: headers.clone() });
        assert_eq!(frames[2], Frame::Data { stream: 3, fin: true, data: Bytes::from_static(b"GET /") });

        let mut server = Encoder::default();
        let mut wire = BytesMut::new();
        server.encode(&Frame::SynReply { stream: 1, fin: false, headers: vec![] }, &mut wire).unwrap();
        server.encode(&Frame::SynReply { stream: 3, fin: true, headers: headers.clone() }, &mut wire).unwrap();
        server.encode(&Frame::Ping(7), &mut wire).unwrap();
        let mut dec = Decoder::default();
        dec.feed(&wire);
        assert_eq!(dec.next_frame().unwrap(), Some(Frame::SynReply { stream: 1, fin: false, headers: vec![] }));
        assert_eq!(dec.next_frame().unwrap(), Some(Frame::SynReply { stream: 3, fin: true, headers }));
        assert_eq!(dec.next_frame().unwrap(), Some(Frame::Ping(7)));
        assert_eq!(dec.next_frame().unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut dec = Decoder::default();
        dec.feed(&[0x80, 0x02, 0x00, 0x01, 0, 0, 0, 2, 0, 0]);
        assert!(dec.next_frame().is_err());
        let mut dec = Decoder::default();
        dec.feed(&[0x80, 0x03, 0x00, 0x01, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
        assert!(dec.next_frame().is_err());
    }
}
