//! A bounded CBOR decoder (RFC 8949) for the few structures WebAuthn carries: the
//! attestation object, COSE keys and extension maps.
//!
//! Only what those use is accepted: unsigned and negative integers, byte and text strings,
//! arrays, maps, `true`, `false` and `null`, all with definite lengths. Tags, floats,
//! `undefined`, simple values and indefinite lengths are refused, as are duplicate map keys
//! (two readers could pick different values) and text that is not UTF-8.
//!
//! Work is linear in the input: every item costs one unit from a budget fixed before decoding
//! starts ([`MAX_ITEMS`]), nesting is counted as it goes ([`MAX_DEPTH`]), a declared length is
//! compared with the bytes that remain before anything is allocated, and a container's
//! storage grows with the items actually read, never with the count it declares.

use std::fmt;

/// Deepest nesting accepted (a COSE key inside the attestation object is at depth 2; an
/// extension output may add a few levels).
pub const MAX_DEPTH: usize = 16;
/// Most items (every integer, string, container and map key counts one) in one decoding.
pub const MAX_ITEMS: usize = 4096;
/// Most entries in one map. WebAuthn's maps hold a handful; the bound keeps the duplicate-key
/// check (each key against those before it) linear in the input overall.
pub const MAX_MAP_ENTRIES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Unsigned(u64),
    /// A negative integer `-1 - n`, holding `n` (CBOR major type 1).
    Negative(u64),
    Bytes(&'a [u8]),
    Text(&'a str),
    Array(Vec<Value<'a>>),
    /// Entries in the order received (keys are unique).
    Map(Vec<(Value<'a>, Value<'a>)>),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CborError {
    /// The input ended inside an item.
    Truncated,
    /// Bytes follow the item where none may.
    TrailingBytes,
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
    /// More than [`MAX_ITEMS`] items.
    TooManyItems,
    /// Indefinite length, tag, float, reserved additional information or simple value.
    Unsupported,
    InvalidText,
    DuplicateKey,
}

impl fmt::Display for CborError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CborError::Truncated => "CBOR input ends inside an item",
            CborError::TrailingBytes => "bytes follow the CBOR item",
            CborError::TooDeep => "CBOR nesting too deep",
            CborError::TooManyItems => "too many CBOR items",
            CborError::Unsupported => "CBOR construct not supported here",
            CborError::InvalidText => "CBOR text string is not UTF-8",
            CborError::DuplicateKey => "CBOR map has a duplicate key",
        })
    }
}

impl std::error::Error for CborError {}

/// Decodes exactly one item that spans the whole input.
pub fn decode(input: &[u8]) -> Result<Value<'_>, CborError> {
    let (value, used) = decode_prefix(input)?;
    if used != input.len() {
        return Err(CborError::TrailingBytes);
    }
    Ok(value)
}

/// Decodes one item at the start of `input`; returns it and the number of bytes it took
/// (authenticator data holds a COSE key followed by more data).
pub fn decode_prefix(input: &[u8]) -> Result<(Value<'_>, usize), CborError> {
    let mut d = Decoder { input, pos: 0, budget: MAX_ITEMS };
    let value = d.item(0)?;
    Ok((value, d.pos))
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    budget: usize,
}

impl<'a> Decoder<'a> {
    fn byte(&mut self) -> Result<u8, CborError> {
        let b = *self.input.get(self.pos).ok_or(CborError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], CborError> {
        let remaining = self.input.len() - self.pos;
        let n = usize::try_from(n).map_err(|_| CborError::Truncated)?;
        if n > remaining {
            return Err(CborError::Truncated);
        }
        let out = self.input.get(self.pos..self.pos + n).ok_or(CborError::Truncated)?;
        self.pos += n;
        Ok(out)
    }

    /// The argument of an item head (RFC 8949 3.1), definite forms only.
    fn argument(&mut self, info: u8) -> Result<u64, CborError> {
        let len = match info {
            0..=23 => return Ok(u64::from(info)),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => return Err(CborError::Unsupported),
        };
        let bytes = self.take(len)?;
        Ok(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn spend(&mut self) -> Result<(), CborError> {
        self.budget = self.budget.checked_sub(1).ok_or(CborError::TooManyItems)?;
        Ok(())
    }

    /// A container never reserves more than its entries could occupy in the bytes left (each
    /// takes at least one byte) nor more than the item budget left.
    fn capacity(&self, declared: u64) -> usize {
        let left = (self.input.len() - self.pos).min(self.budget);
        usize::try_from(declared).map_or(left, |d| d.min(left))
    }

    fn item(&mut self, depth: usize) -> Result<Value<'a>, CborError> {
        if depth > MAX_DEPTH {
            return Err(CborError::TooDeep);
        }
        self.spend()?;
        let head = self.byte()?;
        let (major, info) = (head >> 5, head & 0x1f);
        match major {
            0 => Ok(Value::Unsigned(self.argument(info)?)),
            1 => Ok(Value::Negative(self.argument(info)?)),
            2 => {
                let n = self.argument(info)?;
                Ok(Value::Bytes(self.take(n)?))
            }
            3 => {
                let n = self.argument(info)?;
                let raw = self.take(n)?;
                std::str::from_utf8(raw).map(Value::Text).map_err(|_| CborError::InvalidText)
            }
            4 => {
                let n = self.argument(info)?;
                let mut items = Vec::with_capacity(self.capacity(n));
                for _ in 0..n {
                    items.push(self.item(depth + 1)?);
                }
                Ok(Value::Array(items))
            }
            5 => {
                let n = self.argument(info)?;
                if n > MAX_MAP_ENTRIES as u64 {
                    return Err(CborError::TooManyItems);
                }
                let mut entries: Vec<(Value<'a>, Value<'a>)> = Vec::with_capacity(self.capacity(n));
                for _ in 0..n {
                    let key = self.item(depth + 1)?;
                    // Keys are scalars in every structure read here; comparing a container
                    // key would cost more than linear time, so such keys are refused.
                    if matches!(key, Value::Array(_) | Value::Map(_)) {
                        return Err(CborError::Unsupported);
                    }
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(CborError::DuplicateKey);
                    }
                    let value = self.item(depth + 1)?;
                    entries.push((key, value));
                }
                Ok(Value::Map(entries))
            }
            7 => match info {
                20 => Ok(Value::Bool(false)),
                21 => Ok(Value::Bool(true)),
                22 => Ok(Value::Null),
                _ => Err(CborError::Unsupported),
            },
            // Major type 6 (tags).
            _ => Err(CborError::Unsupported),
        }
    }
}

impl<'a> Value<'a> {
    /// The integer value, when it is one that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Unsigned(n) => i64::try_from(n).ok(),
            Value::Negative(n) => i64::try_from(n).ok().map(|n| -1 - n),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<&'a str> {
        match *self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Value<'a>, Value<'a>)]> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// In a map, the value under the integer key `key`.
    pub fn get_int(&self, key: i64) -> Option<&Value<'a>> {
        self.as_map()?.iter().find(|(k, _)| k.as_i64() == Some(key)).map(|(_, v)| v)
    }

    /// In a map, the value under the text key `key`.
    pub fn get_text(&self, key: &str) -> Option<&Value<'a>> {
        self.as_map()?.iter().find(|(k, _)| k.as_text() == Some(key)).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_and_containers() {
        // {1: 2, 3: -7, "a": h'0102', "t": [true, false, null]}
        let bytes = [0xa4, 0x01, 0x02, 0x03, 0x26, 0x61, b'a', 0x42, 1, 2, 0x61, b't', 0x83, 0xf5, 0xf4, 0xf6];
        let v = decode(&bytes).unwrap();
        assert_eq!(v.get_int(1).and_then(Value::as_i64), Some(2));
        assert_eq!(v.get_int(3).and_then(Value::as_i64), Some(-7));
        assert_eq!(v.get_text("a").and_then(Value::as_bytes), Some(&[1u8, 2][..]));
        assert_eq!(
            v.get_text("t").and_then(Value::as_array),
            Some(&[Value::Bool(true), Value::Bool(false), Value::Null][..])
        );
    }

    #[test]
    fn long_arguments() {
        assert_eq!(decode(&[0x19, 0x01, 0x00]).unwrap(), Value::Unsigned(256));
        assert_eq!(decode(&[0x39, 0x01, 0x00]).unwrap().as_i64(), Some(-257));
        assert_eq!(decode(&[0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap().as_i64(), None);
        assert_eq!(decode(&[0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap().as_i64(), Some(i64::MIN));
    }

    #[test]
    fn refusals() {
        assert_eq!(decode(&[]), Err(CborError::Truncated));
        assert_eq!(decode(&[0x01, 0x02]), Err(CborError::TrailingBytes));
        assert_eq!(decode(&[0x5f]), Err(CborError::Unsupported), "indefinite byte string");
        assert_eq!(decode(&[0x9f, 0xff]), Err(CborError::Unsupported), "indefinite array");
        assert_eq!(decode(&[0xc0, 0x01]), Err(CborError::Unsupported), "tag");
        assert_eq!(decode(&[0xf9, 0, 0]), Err(CborError::Unsupported), "half float");
        assert_eq!(decode(&[0xf7]), Err(CborError::Unsupported), "undefined");
        assert_eq!(decode(&[0x1c]), Err(CborError::Unsupported), "reserved info");
        assert_eq!(decode(&[0x62, 0xff, 0xfe]), Err(CborError::InvalidText));
        assert_eq!(decode(&[0xa2, 0x01, 0x01, 0x01, 0x02]), Err(CborError::DuplicateKey));
        assert_eq!(decode(&[0xa1, 0x80, 0x01]), Err(CborError::Unsupported), "array as key");
        // A byte string that claims 2^64-1 bytes, and an array that claims 2^32 items.
        assert_eq!(decode(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), Err(CborError::Truncated));
        assert_eq!(decode(&[0x9a, 0xff, 0xff, 0xff, 0xff]), Err(CborError::Truncated));
    }

    #[test]
    fn depth_is_counted_as_it_goes() {
        let mut deep = vec![0x81u8; MAX_DEPTH];
        deep.push(0x00);
        assert!(decode(&deep).is_ok());
        let mut too_deep = vec![0x81u8; MAX_DEPTH + 1];
        too_deep.push(0x00);
        assert_eq!(decode(&too_deep), Err(CborError::TooDeep));
        // Refused at the limit, not after reading a megabyte of nesting.
        assert_eq!(decode(&vec![0x81u8; 1 << 20]), Err(CborError::TooDeep));
    }

    #[test]
    fn item_budget() {
        let mut many = vec![0x99, 0x10, 0x00]; // array of 4096 items
        many.extend(std::iter::repeat_n(0x00, 4096));
        assert_eq!(decode(&many), Err(CborError::TooManyItems));
        let mut fits = vec![0x99, 0x0f, 0xff];
        fits.extend(std::iter::repeat_n(0x00, 4095));
        assert!(decode(&fits).is_ok());
        let mut big_map = vec![0xb8, 65];
        for i in 0..65u8 {
            big_map.extend([0x18, i, 0x00]);
        }
        assert_eq!(decode(&big_map), Err(CborError::TooManyItems));
    }
}
