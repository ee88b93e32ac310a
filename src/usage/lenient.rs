//! Lenient field types for provider JSON. Each accepts any JSON value: the expected type is
//! read, anything else reads as absent (and is skipped without allocating), so one odd field
//! never costs the whole usage block. They also let the per-event structs borrow from the
//! event data instead of copying it.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, Error, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Implements the visitor methods for every JSON type a lenient visitor does not want: each
/// yields `$absent`, draining sequences and maps.
macro_rules! otherwise_absent {
    (@one bool, $absent:expr) => {
        fn visit_bool<E: Error>(self, _: bool) -> Result<Self::Value, E> { Ok($absent) }
    };
    (@one i64, $absent:expr) => {
        fn visit_i64<E: Error>(self, _: i64) -> Result<Self::Value, E> { Ok($absent) }
    };
    (@one u64, $absent:expr) => {
        fn visit_u64<E: Error>(self, _: u64) -> Result<Self::Value, E> { Ok($absent) }
    };
    (@one f64, $absent:expr) => {
        fn visit_f64<E: Error>(self, _: f64) -> Result<Self::Value, E> { Ok($absent) }
    };
    (@one str, $absent:expr) => {
        fn visit_str<E: Error>(self, _: &str) -> Result<Self::Value, E> { Ok($absent) }
    };
    (@one unit, $absent:expr) => {
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> { Ok($absent) }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> { Ok($absent) }
    };
    (@one seq, $absent:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($absent)
        }
    };
    (@one map, $absent:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok($absent)
        }
    };
    ($absent:expr; $($skip:ident),*) => {
        $(otherwise_absent!(@one $skip, $absent);)*
    };
}

/// A token count: a non-negative integer, or a finite non-negative float rounded up (Cohere's
/// schema declares its counts as doubles). Negative or non-numeric values read as absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Count(pub Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a token count")
            }
            fn visit_u64<E: Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(Some(v)))
            }
            fn visit_i64<E: Error>(self, v: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(v).ok()))
            }
            fn visit_f64<E: Error>(self, v: f64) -> Result<Count, E> {
                // `as` saturates at u64::MAX, and the guard keeps NaN and negatives out.
                let ok = v.is_finite() && v >= 0.0;
                Ok(Count(ok.then(|| v.ceil() as u64)))
            }
            otherwise_absent!(Count(None); bool, str, unit, seq, map);
        }
        d.deserialize_any(V)
    }
}

/// A string that borrows from the input when it has no escapes; other types read as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Text<'a>(pub Option<Cow<'a, str>>);

impl<'a> Text<'a> {
    pub fn as_str(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            otherwise_absent!(Text(None); bool, i64, u64, f64, unit, seq, map);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// The UTF-8 length of a string, read without allocating; other types read as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct TextLen(pub u64);

impl<'de> Deserialize<'de> for TextLen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TextLen;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<TextLen, E> {
                Ok(TextLen(v.len() as u64))
            }
            otherwise_absent!(TextLen(0); bool, i64, u64, f64, unit, seq, map);
        }
        d.deserialize_any(V)
    }
}

/// An object read as `T`; any other JSON type (including null) reads as absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Obj<T>(pub Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|t| Obj(Some(t)))
            }
            otherwise_absent!(Obj(None); bool, i64, u64, f64, str, unit, seq);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Something whose streamed-text size in bytes can be summed over a list.
pub(super) trait Weigh {
    fn weight(&self) -> u64;
}

/// The summed [`Weigh::weight`] of the objects in a list, read without collecting the list.
/// Non-object items weigh 0; a non-list reads as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SumOf<T>(pub u64, PhantomData<T>);

impl<T> Default for SumOf<T> {
    fn default() -> Self {
        SumOf(0, PhantomData)
    }
}

impl<'de, T: Deserialize<'de> + Weigh> Deserialize<'de> for SumOf<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Weigh> Visitor<'de> for V<T> {
            type Value = SumOf<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SumOf<T>, A::Error> {
                let mut total = 0u64;
                while let Some(item) = seq.next_element::<Obj<T>>()? {
                    let weight = item.0.as_ref().map_or(0, Weigh::weight);
                    total = total.saturating_add(weight);
                }
                Ok(SumOf(total, PhantomData))
            }
            otherwise_absent!(SumOf(0, PhantomData); bool, i64, u64, f64, str, unit, map);
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Probe<'a> {
        n: Count,
        #[serde(borrow)]
        s: Text<'a>,
        len: TextLen,
        o: Obj<Inner>,
        items: SumOf<Inner>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Inner {
        t: TextLen,
    }

    impl Weigh for Inner {
        fn weight(&self) -> u64 {
            self.t.0
        }
    }

    fn probe(json: &str) -> Probe<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn counts() {
        assert_eq!(probe(r#"{"n": 7}"#).n, Count(Some(7)));
        assert_eq!(probe(r#"{"n": 7.2}"#).n, Count(Some(8)));
        assert_eq!(probe(r#"{"n": -1}"#).n, Count(None));
        assert_eq!(probe(r#"{"n": "7"}"#).n, Count(None));
        assert_eq!(probe(r#"{"n": null}"#).n, Count(None));
        assert_eq!(probe(r#"{"n": [1, {"a": 2}]}"#).n, Count(None));
        assert_eq!(probe(r#"{"n": 1e300}"#).n, Count(Some(u64::MAX)));
    }

    #[test]
    fn text_borrows_and_falls_back() {
        let p = probe(r#"{"s": "gpt-4o"}"#);
        assert!(matches!(p.s.0, Some(Cow::Borrowed("gpt-4o"))));
        assert_eq!(probe(r#"{"s": "a\"b"}"#).s.as_str(), Some("a\"b"));
        assert_eq!(probe(r#"{"s": 3}"#).s.as_str(), None);
        assert_eq!(probe(r#"{"len": "héllo\n"}"#).len, TextLen(7));
        assert_eq!(probe(r#"{"len": {"x": 1}}"#).len, TextLen(0));
    }

    #[test]
    fn objects_and_sums() {
        assert_eq!(
            probe(r#"{"o": {"t": "abc"}}"#).o.0.map(|i| i.t),
            Some(TextLen(3))
        );
        assert!(probe(r#"{"o": [1]}"#).o.0.is_none());
        assert!(probe(r#"{"o": null}"#).o.0.is_none());
        let p = probe(r#"{"items": [{"t": "ab"}, 5, {"t": "cde"}, {"u": 1}]}"#);
        assert_eq!(p.items.0, 5);
        assert_eq!(probe(r#"{"items": "x"}"#).items.0, 0);
    }
}
