//! Bytes to text: UTF-8 with or without a byte-order mark, and UTF-16 (LE or
//! BE) with one, as Windows tools write it. Anything else that is not UTF-8
//! is refused with the line and the byte in it; so is a NUL byte, which no
//! text format has and which UTF-16 without a byte-order mark is full of.

use super::PlaylistFileError;
use std::borrow::Cow;

pub(super) fn decode(bytes: &[u8]) -> Result<Cow<'_, str>, PlaylistFileError> {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return utf8(rest).map(Cow::Borrowed);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        return utf16(rest, u16::from_le_bytes).map(Cow::Owned);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        return utf16(rest, u16::from_be_bytes).map(Cow::Owned);
    }
    utf8(bytes).map(Cow::Borrowed)
}

fn utf8(bytes: &[u8]) -> Result<&str, PlaylistFileError> {
    let (valid, error) = match std::str::from_utf8(bytes) {
        Ok(text) => (text.len(), None),
        Err(e) => (e.valid_up_to(), Some(e)),
    };
    let head = bytes.get(..valid).unwrap_or_default();
    // A NUL before the first invalid byte says more than the invalid byte.
    if let Some(at) = head.iter().position(|&b| b == 0) {
        let (line, byte) = place(bytes, at);
        return Err(PlaylistFileError::NulByte { line, byte });
    }
    match error {
        None => Ok(std::str::from_utf8(head).unwrap_or_default()),
        // The text ends inside a character: cut short, not mis-encoded.
        Some(e) if e.error_len().is_none() => Err(PlaylistFileError::CutCharacter {
            line: place(bytes, valid).0,
        }),
        Some(_) => {
            let (line, byte) = place(bytes, valid);
            Err(PlaylistFileError::NotUtf8 { line, byte })
        }
    }
}

/// The 1-based line of byte `at`, and its 1-based position in that line.
fn place(bytes: &[u8], at: usize) -> (usize, usize) {
    let head = bytes.get(..at).unwrap_or(bytes);
    let line = 1 + head.iter().filter(|&&b| b == b'\n').count();
    let line_start = head
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1);
    (line, at - line_start + 1)
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<String, PlaylistFileError> {
    let units = bytes.chunks_exact(2).map(|pair| unit([pair[0], pair[1]]));
    let mut text = String::with_capacity(bytes.len());
    let mut line = 1;
    for c in char::decode_utf16(units) {
        match c {
            Ok('\0') => {
                let byte = text.len() - text.rfind('\n').map_or(0, |newline| newline + 1) + 1;
                return Err(PlaylistFileError::NulByte { line, byte });
            }
            Ok(c) => {
                if c == '\n' {
                    line += 1;
                }
                text.push(c);
            }
            Err(_) => {
                return Err(PlaylistFileError::NotUtf16 {
                    line,
                    problem: "half of a surrogate pair",
                });
            }
        }
    }
    if bytes.len() % 2 == 1 {
        return Err(PlaylistFileError::CutCharacter { line });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16le(text: &str) -> Vec<u8> {
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        bytes
    }

    fn utf16be(text: &str) -> Vec<u8> {
        let mut bytes = vec![0xFE, 0xFF];
        bytes.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        bytes
    }

    #[test]
    fn reads_utf8_with_and_without_bom_and_utf16_with_bom() {
        let text = "Beyoncé - Halo\r\n🎵 - Ünïcödé\n";
        assert_eq!(decode(text.as_bytes()).unwrap(), text);
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(text.as_bytes());
        assert_eq!(decode(&bom).unwrap(), text);
        assert_eq!(decode(&utf16le(text)).unwrap(), text);
        assert_eq!(decode(&utf16be(text)).unwrap(), text);
    }

    #[test]
    fn errors_name_the_line_and_byte() {
        // Latin-1 "é" on line 2, the 3rd byte of its line.
        let err = decode(b"A - B\r\nCa\xE9 - D\n").unwrap_err();
        assert_eq!(err, PlaylistFileError::NotUtf8 { line: 2, byte: 3 });
        assert_eq!(
            err.to_string(),
            "line 2 is not valid UTF-8 (byte 3 of the line): save the file as UTF-8"
        );
        // UTF-16 without a byte-order mark.
        let bare: Vec<u8> = "A - B\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let err = decode(&bare).unwrap_err();
        assert_eq!(err, PlaylistFileError::NulByte { line: 1, byte: 2 });
        assert!(
            err.to_string().contains("UTF-16 without a byte-order mark"),
            "{err}"
        );
        // A lone surrogate on line 2.
        let mut broken = utf16le("A - B\n");
        broken.extend_from_slice(&0xD800u16.to_le_bytes());
        broken.extend_from_slice(&u16::from(b'x').to_le_bytes());
        assert_eq!(
            decode(&broken).unwrap_err(),
            PlaylistFileError::NotUtf16 {
                line: 2,
                problem: "half of a surrogate pair"
            }
        );
        let mut odd = utf16le("A - B\nC - D");
        odd.push(b'x');
        let err = decode(&odd).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: the file ends in the middle of a character, so it looks truncated: download or \
             export it again"
        );
        // UTF-8 cut inside a character is truncated, not mis-encoded.
        let cut = "A - B\nC - é".as_bytes();
        assert_eq!(
            decode(&cut[..cut.len() - 1]).unwrap_err(),
            PlaylistFileError::CutCharacter { line: 2 }
        );
        let nul = utf16le("A\0");
        assert_eq!(
            decode(&nul).unwrap_err(),
            PlaylistFileError::NulByte { line: 1, byte: 2 }
        );
    }
}
