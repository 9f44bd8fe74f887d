//! [`SafeU64`]: the integers of CONTRACT section 7 (`since`, `seq`, `expected_version`,
//! `base_revision`, `limit`, `ttl_seconds`, …), 0 to 2^53−1, so a JavaScript number holds
//! every one exactly. One type for socket frames, HTTP bodies and query strings alike.

use std::fmt;

use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An unsigned integer a JavaScript number represents exactly: 0 ..= 2^53−1.
///
/// Deserializing accepts only such integers: negatives, larger numbers, fractions and
/// JSON strings are refused with a message naming the range. Query-string text is read as
/// a number first, so `?since=-1` and `?since=1.5` meet the same rule. (Callers that wrap
/// the deserializer in `serde_path_to_error`, as the hub does, get the field's name too.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(test, derive(ts_rs::TS), ts(type = "number"))]
pub struct SafeU64(u64);

/// A number outside 0 ..= 2^53−1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange;

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }
}

impl std::error::Error for OutOfRange {}

const EXPECTED: &str = "an integer from 0 to 9007199254740991 (2^53-1)";

impl SafeU64 {
    /// 2^53−1, `Number.MAX_SAFE_INTEGER`.
    pub const MAX: SafeU64 = SafeU64((1 << 53) - 1);
    pub const ZERO: SafeU64 = SafeU64(0);

    pub const fn new(value: u64) -> Option<Self> {
        if value <= Self::MAX.0 { Some(SafeU64(value)) } else { None }
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The value as the `bigint`/`i64` the database uses (always fits).
    pub const fn as_i64(self) -> i64 {
        self.0 as i64
    }

    /// The value as a SQL `integer`, saturating: where the column is an integer (versions,
    /// seconds) a larger input still gets that function's answer (a version conflict, a
    /// range error) instead of a conversion failure.
    pub fn saturating_i32(self) -> i32 {
        i32::try_from(self.0).unwrap_or(i32::MAX)
    }
}

impl From<SafeU64> for u64 {
    fn from(value: SafeU64) -> u64 {
        value.0
    }
}

impl From<SafeU64> for i64 {
    fn from(value: SafeU64) -> i64 {
        value.as_i64()
    }
}

impl From<u32> for SafeU64 {
    fn from(value: u32) -> Self {
        SafeU64(value.into())
    }
}

impl TryFrom<u64> for SafeU64 {
    type Error = OutOfRange;

    fn try_from(value: u64) -> Result<Self, OutOfRange> {
        SafeU64::new(value).ok_or(OutOfRange)
    }
}

impl TryFrom<i64> for SafeU64 {
    type Error = OutOfRange;

    fn try_from(value: i64) -> Result<Self, OutOfRange> {
        u64::try_from(value).map_err(|_| OutOfRange)?.try_into()
    }
}

impl fmt::Display for SafeU64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for SafeU64 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for SafeU64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // As a number: JSON numbers visit by their own type (a JSON string is refused), query
        // text is parsed as a float first.
        deserializer.deserialize_f64(SafeU64Visitor)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for SafeU64 {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SafeU64".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "integer",
            "minimum": 0,
            "maximum": SafeU64::MAX.0,
            "description": EXPECTED,
        })
    }
}

struct SafeU64Visitor;

impl Visitor<'_> for SafeU64Visitor {
    type Value = SafeU64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<SafeU64, E> {
        SafeU64::new(value).ok_or_else(|| E::invalid_value(Unexpected::Unsigned(value), &self))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<SafeU64, E> {
        SafeU64::try_from(value).map_err(|_| E::invalid_value(Unexpected::Signed(value), &self))
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<SafeU64, E> {
        u64::try_from(value)
            .ok()
            .and_then(SafeU64::new)
            .ok_or_else(|| E::invalid_value(Unexpected::Other("an integer above 2^53-1"), &self))
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<SafeU64, E> {
        u64::try_from(value)
            .ok()
            .and_then(SafeU64::new)
            .ok_or_else(|| E::invalid_value(Unexpected::Other("an integer out of range"), &self))
    }

    /// JSON has one number type: `3.0` is the integer 3 (as in JavaScript), `3.5` is not.
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<SafeU64, E> {
        let integral = value.fract() == 0.0 && (0.0..=SafeU64::MAX.0 as f64).contains(&value);
        if integral { Ok(SafeU64(value as u64)) } else { Err(E::invalid_value(Unexpected::Float(value), &self)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<SafeU64, String> {
        serde_json::from_str::<SafeU64>(json).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_exactly_0_to_2_pow_53_minus_1() {
        assert_eq!(parse("0"), Ok(SafeU64::ZERO));
        assert_eq!(parse("42"), Ok(SafeU64::new(42).unwrap()));
        assert_eq!(parse("9007199254740991"), Ok(SafeU64::MAX));
        assert_eq!(parse("3.0"), Ok(SafeU64::new(3).unwrap()));
        assert_eq!(SafeU64::MAX.get(), 9_007_199_254_740_991);
        assert_eq!(i64::from(SafeU64::MAX), 9_007_199_254_740_991);
        assert_eq!(serde_json::to_string(&SafeU64::MAX).unwrap(), "9007199254740991");
    }

    #[test]
    fn refuses_negatives_larger_numbers_fractions_and_strings_naming_the_range() {
        for bad in ["-1", "9007199254740992", "18446744073709551616", "1.5", "1e300", "\"5\"", "null", "true", "[]"] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains("an integer from 0 to 9007199254740991 (2^53-1)"), "{bad}: {err}");
        }
        assert!(parse("-1").unwrap_err().contains("-1"));
    }

    #[test]
    fn refuses_out_of_range_inside_frames_too() {
        // Internally tagged enums buffer their fields first: the bounds must hold there too.
        let frame = r#"{"type":"join","channel":"c","since":-5}"#;
        let err = serde_json::from_str::<crate::ClientFrame>(frame).err().unwrap().to_string();
        assert!(err.contains("2^53-1"), "{err}");
        let frame = r#"{"type":"join","channel":"c","since":9007199254740992}"#;
        assert!(serde_json::from_str::<crate::ClientFrame>(frame).is_err());
    }

    #[test]
    fn try_from_checks_the_range() {
        assert_eq!(SafeU64::try_from(7i64), Ok(SafeU64::new(7).unwrap()));
        assert_eq!(SafeU64::try_from(-1i64), Err(OutOfRange));
        assert_eq!(SafeU64::try_from(i64::MAX), Err(OutOfRange));
        assert_eq!(SafeU64::try_from(1u64 << 53), Err(OutOfRange));
        assert_eq!(SafeU64::try_from((1u64 << 53) - 1), Ok(SafeU64::MAX));
        assert_eq!(SafeU64::MAX.saturating_i32(), i32::MAX);
        assert_eq!(SafeU64::new(7).unwrap().saturating_i32(), 7);
    }
}
