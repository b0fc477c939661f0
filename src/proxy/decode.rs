//! Phase 5a: undo the CRM's `Content-Encoding` under a size cap.
//!
//! gzip (every member of a multi-member stream), deflate (zlib, as RFC 9110
//! defines it), br and zstd. Each decoder is push-style: compressed chunks
//! in, plain bytes out, and it stops as soon as the output passes the cap,
//! so a small bomb cannot allocate its expansion. A truncated, corrupt or
//! mislabelled stream is an error, never silently short output.

use std::io::{self, Write};

use flate2::{Decompress, FlushDecompress, Status};
use http::HeaderMap;
use http::header::CONTENT_ENCODING;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// An encoding consentry cannot decode (or several stacked).
    Unsupported,
    /// The decoded body passed the cap.
    TooLarge,
    /// Corrupt, truncated, or not the announced encoding.
    Corrupt,
}

/// Output buffer that refuses to grow past the cap.
#[derive(Debug)]
pub struct Cap {
    out: Vec<u8>,
    total: u64,
    limit: u64,
}

impl Write for Cap {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.total += buf.len() as u64;
        if self.total > self.limit {
            return Err(io::Error::other(CapExceeded));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("decompressed size cap exceeded")]
struct CapExceeded;

fn classify(e: &io::Error) -> DecodeError {
    if e.get_ref().is_some_and(|inner| inner.is::<CapExceeded>()) {
        DecodeError::TooLarge
    } else {
        DecodeError::Corrupt
    }
}

/// A decoder for one response body.
pub enum Decoder {
    Identity,
    Gzip(Box<flate2::write::MultiGzDecoder<Cap>>),
    Deflate(Box<Inflate>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Cap>>),
    Zstd(Box<Zstd>),
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decoder::Identity => "Decoder::Identity",
            Decoder::Gzip(_) => "Decoder::Gzip",
            Decoder::Deflate(_) => "Decoder::Deflate",
            Decoder::Brotli(_) => "Decoder::Brotli",
            Decoder::Zstd(_) => "Decoder::Zstd",
        })
    }
}

impl Decoder {
    /// The decoder for a response's `Content-Encoding`.
    pub fn for_headers(h: &HeaderMap, limit: u64) -> Result<Decoder, DecodeError> {
        let mut values = h.get_all(CONTENT_ENCODING).iter();
        let v = match (values.next(), values.next()) {
            (None, _) => return Ok(Decoder::Identity),
            (Some(v), None) => v,
            (Some(_), Some(_)) => return Err(DecodeError::Unsupported),
        };
        let v = v
            .to_str()
            .map_err(|_| DecodeError::Unsupported)?
            .trim()
            .to_ascii_lowercase();
        let cap = || Cap {
            out: Vec::new(),
            total: 0,
            limit,
        };
        Ok(match v.as_str() {
            "" | "identity" => Decoder::Identity,
            "gzip" | "x-gzip" => Decoder::Gzip(Box::new(flate2::write::MultiGzDecoder::new(cap()))),
            "deflate" => Decoder::Deflate(Box::new(Inflate {
                z: Decompress::new(true),
                ended: false,
                cap: cap(),
            })),
            "br" => Decoder::Brotli(Box::new(brotli_decompressor::DecompressorWriter::new(
                cap(),
                32 << 10,
            ))),
            "zstd" => Decoder::Zstd(Box::new(Zstd {
                z: zstd::stream::raw::Decoder::new().map_err(|_| DecodeError::Corrupt)?,
                hint: 0,
                started: false,
                cap: cap(),
            })),
            _ => return Err(DecodeError::Unsupported),
        })
    }

    pub fn is_identity(&self) -> bool {
        matches!(self, Decoder::Identity)
    }

    /// Decodes `input`, appending plain bytes to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        match self {
            Decoder::Identity => {
                out.extend_from_slice(input);
                Ok(())
            }
            Decoder::Gzip(d) => {
                d.write_all(input).map_err(|e| classify(&e))?;
                out.append(&mut d.get_mut().out);
                Ok(())
            }
            Decoder::Brotli(d) => {
                d.write_all(input).map_err(|e| classify(&e))?;
                out.append(&mut d.get_mut().out);
                Ok(())
            }
            Decoder::Deflate(d) => d.push(input, out),
            Decoder::Zstd(d) => d.push(input, out),
        }
    }

    /// Ends the stream; fails if it was truncated.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        match self {
            Decoder::Identity => Ok(()),
            Decoder::Gzip(d) => {
                d.try_finish().map_err(|e| classify(&e))?;
                out.append(&mut d.get_mut().out);
                Ok(())
            }
            Decoder::Brotli(d) => {
                d.close().map_err(|e| classify(&e))?;
                out.append(&mut d.get_mut().out);
                Ok(())
            }
            Decoder::Deflate(d) => {
                if d.ended {
                    Ok(())
                } else {
                    Err(DecodeError::Corrupt)
                }
            }
            Decoder::Zstd(d) => {
                if d.started && d.hint == 0 {
                    Ok(())
                } else {
                    Err(DecodeError::Corrupt)
                }
            }
        }
    }
}

/// zlib-wrapped deflate, driven directly so that the end of the stream is known.
#[allow(missing_debug_implementations)]
pub struct Inflate {
    z: Decompress,
    ended: bool,
    cap: Cap,
}

impl Inflate {
    fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let mut buf = [0u8; 16 << 10];
        while !input.is_empty() {
            if self.ended {
                return Err(DecodeError::Corrupt); // data after the end of the stream
            }
            let (in0, out0) = (self.z.total_in(), self.z.total_out());
            let status = self
                .z
                .decompress(input, &mut buf, FlushDecompress::None)
                .map_err(|_| DecodeError::Corrupt)?;
            let used = (self.z.total_in() - in0) as usize;
            let made = (self.z.total_out() - out0) as usize;
            self.cap.write_all(&buf[..made]).map_err(|e| classify(&e))?;
            out.append(&mut self.cap.out);
            input = &input[used..];
            match status {
                Status::StreamEnd => self.ended = true,
                Status::Ok => {}
                Status::BufError if used == 0 && made == 0 => return Err(DecodeError::Corrupt),
                Status::BufError => {}
            }
        }
        Ok(())
    }
}

/// zstd frames (several may follow each other).
#[allow(missing_debug_implementations)]
pub struct Zstd {
    z: zstd::stream::raw::Decoder<'static>,
    /// zstd's hint: 0 when the last frame is complete.
    hint: usize,
    started: bool,
    cap: Cap,
}

impl Zstd {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut buf = vec![0u8; 32 << 10];
        let mut src = InBuffer::around(input);
        loop {
            let mut dst = OutBuffer::around(&mut buf[..]);
            self.hint = self
                .z
                .run(&mut src, &mut dst)
                .map_err(|_| DecodeError::Corrupt)?;
            let made = dst.pos();
            self.started = true;
            self.cap.write_all(&buf[..made]).map_err(|e| classify(&e))?;
            out.append(&mut self.cap.out);
            if src.pos() == input.len() && made < buf.len() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(enc: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_ENCODING, HeaderValue::from_str(enc).unwrap());
        h
    }

    fn decode(enc: &str, data: &[u8], limit: u64) -> Result<Vec<u8>, DecodeError> {
        let mut d = Decoder::for_headers(&headers(enc), limit)?;
        let mut out = Vec::new();
        for chunk in data.chunks(7) {
            d.push(chunk, &mut out)?;
        }
        d.finish(&mut out)?;
        Ok(out)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).unwrap();
        }
        out
    }

    #[test]
    fn each_encoding_round_trips() {
        let data = br#"{"results":[{"email":"a@b.example"}]}"#.repeat(50);
        assert_eq!(decode("gzip", &gzip(&data), 1 << 20).unwrap(), data);
        assert_eq!(decode("deflate", &zlib(&data), 1 << 20).unwrap(), data);
        assert_eq!(decode("br", &brotli(&data), 1 << 20).unwrap(), data);
        assert_eq!(
            decode("zstd", &zstd::encode_all(&data[..], 3).unwrap(), 1 << 20).unwrap(),
            data
        );
        assert_eq!(decode("identity", &data, 1 << 20).unwrap(), data);
    }

    #[test]
    fn multi_member_gzip_decodes_every_member() {
        let mut two = gzip(b"{\"a\":");
        two.extend(gzip(b"1}"));
        assert_eq!(decode("gzip", &two, 1 << 20).unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn truncated_corrupt_and_mislabelled_fail() {
        let data = b"{\"a\":\"0123456789012345678901234567890123456789\"}".repeat(20);
        for (enc, z) in [
            ("gzip", gzip(&data)),
            ("deflate", zlib(&data)),
            ("br", brotli(&data)),
            ("zstd", zstd::encode_all(&data[..], 3).unwrap()),
        ] {
            let cut = &z[..z.len() - 3];
            assert!(decode(enc, cut, 1 << 20).is_err(), "truncated {enc}");
            let mut flipped = z.clone();
            let mid = flipped.len() / 2;
            flipped[mid] ^= 0xFF;
            // gzip and zlib carry checksums; br and zstd (without its optional
            // checksum) may decode a flipped byte into other bytes, which the
            // rewriter then inspects like any body. Never the original, though.
            match decode(enc, &flipped, 1 << 20) {
                Err(_) => {}
                Ok(out) => assert!(matches!(enc, "br" | "zstd") && out != data, "corrupt {enc}"),
            }
            assert!(
                decode(enc, &data, 1 << 20).is_err(),
                "plain bytes labelled {enc}"
            );
            let mut trailing = z.clone();
            trailing.extend_from_slice(b"garbage!");
            assert!(
                decode(enc, &trailing, 1 << 20).is_err(),
                "trailing data after {enc}"
            );
        }
    }

    #[test]
    fn bombs_stop_at_the_cap() {
        let zeros = vec![b' '; 4 << 20];
        for (enc, z) in [
            ("gzip", gzip(&zeros)),
            ("deflate", zlib(&zeros)),
            ("br", brotli(&zeros)),
            ("zstd", zstd::encode_all(&zeros[..], 3).unwrap()),
        ] {
            assert!(z.len() < 64 << 10, "{enc} compresses well");
            assert_eq!(
                decode(enc, &z, 1 << 20),
                Err(DecodeError::TooLarge),
                "{enc}"
            );
        }
    }

    #[test]
    fn unknown_or_stacked_encodings_are_unsupported() {
        for enc in ["compress", "gzip, br", "x-custom", "br;q=1"] {
            assert_eq!(
                Decoder::for_headers(&headers(enc), 1).err(),
                Some(DecodeError::Unsupported),
                "{enc}"
            );
        }
        let mut h = headers("gzip");
        h.append(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(Decoder::for_headers(&h, 1).is_err());
    }
}
