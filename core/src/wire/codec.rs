//! The primitive layer: fixed-size little-endian values, a bounds-checked
//! reader and a growing writer. Everything above it reads and writes fields by
//! name, so no other code indexes into the byte buffer.

use super::WireError;

/// A fixed-size little-endian primitive of the frame.
pub(super) trait Le: Copy {
    const SIZE: usize;

    fn read(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError>;

    /// Decodes every whole value in `bytes`; callers take exactly
    /// `count * SIZE` bytes first, so nothing is left over.
    fn decode_all(bytes: &[u8]) -> Vec<Self>;

    fn encode_all(values: &[Self], out: &mut Vec<u8>);
}

// `as_chunks` turns the bulk paths into fixed-size array loops that the
// compiler vectorises: decoding a megabyte of f32 runs at memcpy speed.
macro_rules! le_primitive {
    ($($t:ty),*) => {$(
        impl Le for $t {
            const SIZE: usize = size_of::<$t>();

            fn read(r: &mut Reader<'_>, field: &'static str) -> Result<Self, WireError> {
                r.array(field).map(<$t>::from_le_bytes)
            }

            fn decode_all(bytes: &[u8]) -> Vec<Self> {
                let (chunks, _) = bytes.as_chunks::<{ size_of::<$t>() }>();
                chunks.iter().map(|c| <$t>::from_le_bytes(*c)).collect()
            }

            fn encode_all(values: &[Self], out: &mut Vec<u8>) {
                let start = out.len();
                out.resize(start + values.len() * Self::SIZE, 0);
                let (chunks, _) = out[start..].as_chunks_mut::<{ size_of::<$t>() }>();
                for (chunk, value) in chunks.iter_mut().zip(values) {
                    *chunk = value.to_le_bytes();
                }
            }
        }
    )*};
}

le_primitive!(u8, u16, u32, u64, u128, f32, half::f16);

/// Reads fields front to back. Every read is bounds-checked and names its
/// field, and every count is checked against the bytes left *before* anything
/// is allocated for it, so the memory a decode uses is proportional to its
/// input whatever the counts claim.
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn truncated(&self, field: &'static str, needed: Option<u64>) -> WireError {
        WireError::Truncated {
            field,
            needed: needed.unwrap_or(u64::MAX),
            available: self.rest.len() as u64,
        }
    }

    pub(super) fn take(&mut self, field: &'static str, len: usize) -> Result<&'a [u8], WireError> {
        let (head, rest) = self
            .rest
            .split_at_checked(len)
            .ok_or_else(|| self.truncated(field, Some(len as u64)))?;
        self.rest = rest;
        Ok(head)
    }

    pub(super) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], WireError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| self.truncated(field, Some(N as u64)))?;
        self.rest = rest;
        Ok(*head)
    }

    pub(super) fn get<T: Le>(&mut self, field: &'static str) -> Result<T, WireError> {
        T::read(self, field)
    }

    /// A `u16` byte length followed by that many bytes of UTF-8.
    pub(super) fn str(&mut self, field: &'static str) -> Result<&'a str, WireError> {
        let len: u16 = self.get(field)?;
        let bytes = self.take(field, usize::from(len))?;
        std::str::from_utf8(bytes).map_err(|_| WireError::InvalidUtf8 { field })
    }

    /// Fails unless `count` items of at least `item_len` bytes each fit in
    /// what is left; returns the count as a `usize`, which the check proves
    /// is no larger than the input.
    fn fits(&self, field: &'static str, count: u64, item_len: usize) -> Result<usize, WireError> {
        match count.checked_mul(item_len as u64) {
            Some(needed) if needed <= self.rest.len() as u64 => Ok(count as usize),
            needed => Err(self.truncated(field, needed)),
        }
    }

    /// `count` consecutive primitives, decoded in bulk.
    pub(super) fn values<T: Le>(
        &mut self,
        field: &'static str,
        count: u64,
    ) -> Result<Vec<T>, WireError> {
        let count = self.fits(field, count, T::SIZE)?;
        let bytes = self.take(field, count * T::SIZE)?;
        Ok(T::decode_all(bytes))
    }

    /// `count` composite items of at least `min_len` bytes each, read by `read`.
    pub(super) fn items<T>(
        &mut self,
        field: &'static str,
        count: u64,
        min_len: usize,
        mut read: impl FnMut(&mut Self) -> Result<T, WireError>,
    ) -> Result<Vec<T>, WireError> {
        let count = self.fits(field, count, min_len)?;
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(read(self)?);
        }
        Ok(items)
    }

    pub(super) fn finish(self) -> Result<(), WireError> {
        match self.rest.len() {
            0 => Ok(()),
            extra => Err(WireError::TrailingBytes(extra)),
        }
    }
}

/// Appends fields front to back into a buffer sized up front.
pub(super) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(super) fn with_capacity(len: usize) -> Self {
        Self {
            buf: Vec::with_capacity(len),
        }
    }

    pub(super) fn put<T: Le>(&mut self, value: T) {
        T::encode_all(std::slice::from_ref(&value), &mut self.buf);
    }

    pub(super) fn put_all<T: Le>(&mut self, values: &[T]) {
        T::encode_all(values, &mut self.buf);
    }

    /// A count or length prefix of width `T`. Validation has already bounded
    /// every count far below its width; the check keeps a future limit change
    /// from silently truncating a prefix.
    pub(super) fn put_len<T: Le + TryFrom<usize>>(
        &mut self,
        field: &'static str,
        len: usize,
    ) -> Result<(), WireError> {
        let prefix = T::try_from(len).map_err(|_| WireError::Invalid {
            field,
            reason: "does not fit its length prefix",
        })?;
        self.put(prefix);
        Ok(())
    }

    pub(super) fn put_str(&mut self, field: &'static str, s: &str) -> Result<(), WireError> {
        self.put_len::<u16>(field, s.len())?;
        self.put_all(s.as_bytes());
        Ok(())
    }

    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}
