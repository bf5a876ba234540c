//! Compact JSON for the event lines: byte for byte what `serde_json::to_writer` writes, in
//! less time on the engine's string-heavy events.
//!
//! Serialising a line is the largest cost per event on the way to stdout (the bus's
//! throughput, target T4), and `serde_json` spends about half of it deciding, one byte at a
//! time, whether a string needs escaping. [`to_vec`] scans eight bytes at a time instead and
//! copies a string that needs no escape (nearly all of them) in one piece, straight into the
//! line's `Vec`: 650-660 ns against serde_json's 860-880 ns for the reference 998-byte
//! `callTools` line when first measured. A loop over one line flatters both (the branch
//! predictor learns its strings; a later build measured 724-741 against 759-762 ns that way),
//! so the T4 bench is the judge: there, checking keys in whole words (`string`) took the
//! process's CPU per event from 1.76-1.90 to 1.66-1.76 us. Everything else follows
//! `serde_json`'s compact output exactly: integers through `itoa`, finite floats through `zmij` (as
//! serde_json 1.0.154 does) and the others as `null`, `\u00xx` for the control characters
//! without a short escape, the same map keys, and the same shapes for enum variants.
//! `json::tests` checks that against `serde_json` on every event Perstack recorded, on
//! random values and strings, and on each corner of serde's data model.
//!
//! No crate does this without compile-time CPU features: on a portable build `sonic-rs` is no
//! faster than `serde_json` on that line, `simd-json` slower (measured).
//!
//! | file | owns |
//! | --- | --- |
//! | this one | [`to_vec`], the serializer of values, arrays and objects |
//! | `string` | strings and their escapes |
//! | `key` | map keys |

mod key;
mod string;

use std::fmt::Display;

use serde::ser::{self, Serialize};

use self::key::MapKey;
use self::string::{write_key, write_str};

/// Why a value could not be written (never for the engine's types): a map key that is not a
/// string, a number, a boolean or a character, or an error of the value's own `Serialize`.
#[derive(Debug)]
pub(crate) struct Error(String);

impl Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// Appends `value` as compact JSON to `out`. On an error, `out` may hold part of it.
pub(crate) fn to_vec<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    value.serialize(&mut Writer { out })
}

/// Where the JSON goes.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

/// An integer, as `serde_json` writes it (`itoa`).
#[inline]
pub(super) fn write_int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `f32` and `f64`: what `zmij` formats, and whether it may (finite values only).
pub(super) trait Float: zmij::Float + Copy {
    fn finite(self) -> bool;
}

impl Float for f32 {
    fn finite(self) -> bool {
        self.is_finite()
    }
}

impl Float for f64 {
    fn finite(self) -> bool {
        self.is_finite()
    }
}

/// A float, as `serde_json` writes it: `zmij`'s shortest form when finite, else `null`.
#[inline]
pub(super) fn write_float(out: &mut Vec<u8>, f: impl Float) {
    match f.finite() {
        true => out.extend_from_slice(zmij::Buffer::new().format_finite(f).as_bytes()),
        false => out.extend_from_slice(b"null"),
    }
}

/// The twelve integer methods of a `Serializer`, each `fn serialize_<int>($self, $v) ->
/// Result<(), Error> { $body }` (the value serializer and the map-key serializer write
/// integers the same way, a key quoted).
macro_rules! integer_methods {
    ($self:ident, $v:ident => $body:expr) => {
        integer_methods!(@ $self, $v, $body;
            serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
            serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
            serialize_u64: u64, serialize_u128: u128);
    };
    (@ $self:ident, $v:ident, $body:expr; $($method:ident: $ty:ty),*) => {
        $(
            #[inline]
            fn $method($self, $v: $ty) -> Result<(), Error> {
                $body
            }
        )*
    };
}
use integer_methods;

/// An array or object being written: whether an element came before.
struct Compound<'w, 'a> {
    w: &'w mut Writer<'a>,
    first: bool,
    /// Closes a variant's wrapping object too (`{"Variant":[..]}` and `{"Variant":{..}}`).
    variant: bool,
}

impl<'w, 'a> Compound<'w, 'a> {
    #[inline]
    fn open(w: &'w mut Writer<'a>, bracket: u8) -> Self {
        w.out.push(bracket);
        Compound {
            w,
            first: true,
            variant: false,
        }
    }

    /// `{"variant":` and the compound inside it, which [`Compound::close`] closes with it.
    #[inline]
    fn open_variant(w: &'w mut Writer<'a>, variant: &str, bracket: u8) -> Self {
        w.out.push(b'{');
        write_str(w.out, variant);
        w.out.push(b':');
        Compound {
            variant: true,
            ..Compound::open(w, bracket)
        }
    }

    #[inline]
    fn comma(&mut self) {
        if !self.first {
            self.w.out.push(b',');
        }
        self.first = false;
    }

    #[inline]
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.comma();
        value.serialize(&mut *self.w)
    }

    #[inline]
    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        self.comma();
        write_key(self.w.out, key);
        self.w.out.push(b':');
        value.serialize(&mut *self.w)
    }

    #[inline]
    fn close(self, bracket: u8) -> Result<(), Error> {
        self.w.out.push(bracket);
        if self.variant {
            self.w.out.push(b'}');
        }
        Ok(())
    }
}

impl<'w, 'a> ser::Serializer for &'w mut Writer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'w, 'a>;
    type SerializeTuple = Compound<'w, 'a>;
    type SerializeTupleStruct = Compound<'w, 'a>;
    type SerializeTupleVariant = Compound<'w, 'a>;
    type SerializeMap = Compound<'w, 'a>;
    type SerializeStruct = Compound<'w, 'a>;
    type SerializeStructVariant = Compound<'w, 'a>;

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    integer_methods!(self, v => {
        write_int(self.out, v);
        Ok(())
    });
    #[inline]
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        write_float(self.out, v);
        Ok(())
    }
    #[inline]
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        write_float(self.out, v);
        Ok(())
    }
    #[inline]
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_str(self.out, v);
        Ok(())
    }
    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        let mut seq = Compound::open(self, b'[');
        for b in v {
            seq.element(b)?;
        }
        seq.close(b']')
    }
    #[inline]
    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }
    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    #[inline]
    fn serialize_unit(self) -> Result<(), Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    #[inline]
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    #[inline]
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        write_str(self.out, variant);
        Ok(())
    }
    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        let mut map = Compound::open(self, b'{');
        map.field(variant, value)?;
        map.close(b'}')
    }
    #[inline]
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'w, 'a>, Error> {
        Ok(Compound::open(self, b'['))
    }
    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<Compound<'w, 'a>, Error> {
        self.serialize_seq(Some(len))
    }
    #[inline]
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<Compound<'w, 'a>, Error> {
        self.serialize_seq(Some(len))
    }
    #[inline]
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'w, 'a>, Error> {
        Ok(Compound::open_variant(self, variant, b'['))
    }
    #[inline]
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'w, 'a>, Error> {
        Ok(Compound::open(self, b'{'))
    }
    #[inline]
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'w, 'a>, Error> {
        Ok(Compound::open(self, b'{'))
    }
    #[inline]
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'w, 'a>, Error> {
        Ok(Compound::open_variant(self, variant, b'{'))
    }
}

/// The compounds written as arrays: each takes its elements in order, then `]`.
macro_rules! array_compounds {
    ($($trait:ident :: $method:ident),*) => {
        $(
            impl ser::$trait for Compound<'_, '_> {
                type Ok = ();
                type Error = Error;
                #[inline]
                fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                    self.element(value)
                }
                #[inline]
                fn end(self) -> Result<(), Error> {
                    self.close(b']')
                }
            }
        )*
    };
}

array_compounds!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    #[inline(always)]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.comma();
        key.serialize(MapKey { out: self.w.out })?;
        self.w.out.push(b':');
        Ok(())
    }
    /// Key and value (serde's derive writes the fields of a struct with a flattened member,
    /// as every event's, through this), inlined with the key.
    #[inline(always)]
    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), Error> {
        self.serialize_key(key)?;
        value.serialize(&mut *self.w)
    }
    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(&mut *self.w)
    }
    #[inline]
    fn end(self) -> Result<(), Error> {
        self.close(b'}')
    }
}

/// The compounds written as objects of named fields, then `}`.
macro_rules! struct_compounds {
    ($($trait:ident),*) => {
        $(
            impl ser::$trait for Compound<'_, '_> {
                type Ok = ();
                type Error = Error;
                #[inline]
                fn serialize_field<T: Serialize + ?Sized>(
                    &mut self,
                    key: &'static str,
                    value: &T,
                ) -> Result<(), Error> {
                    self.field(key, value)
                }
                #[inline]
                fn end(self) -> Result<(), Error> {
                    self.close(b'}')
                }
            }
        )*
    };
}

struct_compounds!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests;
