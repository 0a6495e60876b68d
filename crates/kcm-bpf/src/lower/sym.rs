//! The recogniser's symbolic values: constants, pointers, and sums of shifted packet bytes,
//! with the operations that keep a sum of bytes exact.

use crate::alu::{self, AluOp};

/// A sum of shifted packet bytes plus a constant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Field {
    /// `(packet offset, shift)`; the bit ranges `shift..shift + 8` do not overlap.
    pub(super) terms: Vec<(u32, u32)>,
    pub(super) add: u64,
    /// Only the value modulo 2^32 is known (set by 32-bit arithmetic that may wrap).
    pub(super) mod32: bool,
}

impl Field {
    pub(super) fn pure(&self) -> bool {
        self.add == 0 && !self.mod32
    }
    fn disjoint(&self, other: &Field) -> bool {
        self.terms
            .iter()
            .all(|&(_, a)| other.terms.iter().all(|&(_, b)| a + 8 <= b || b + 8 <= a))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Sym {
    Const(u64),
    Ctx,
    Stack(i64),
    Field(Field),
    Unknown,
}

/// A field from terms; no terms left means a constant.
pub(super) fn field(terms: Vec<(u32, u32)>, add: u64, mod32: bool) -> Sym {
    if terms.is_empty() {
        Sym::Const(if mod32 { u64::from(add as u32) } else { add })
    } else {
        Sym::Field(Field { terms, add, mod32 })
    }
}

/// Applies a per-term transformation to a pure field; `None` from `f` gives up, `Some(None)`
/// drops the term.
pub(super) fn map_terms(fl: &Field, f: impl Fn(u32) -> Option<Option<u32>>) -> Sym {
    if !fl.pure() {
        return Sym::Unknown;
    }
    let mut terms = Vec::with_capacity(fl.terms.len());
    for &(k, s) in &fl.terms {
        match f(s) {
            None => return Sym::Unknown,
            Some(Some(s)) => terms.push((k, s)),
            Some(None) => {}
        }
    }
    field(terms, 0, false)
}

/// Keeps the low `bits` bits of a value.
pub(super) fn truncate(v: &Sym, bits: u32) -> Sym {
    match v {
        Sym::Const(c) => Sym::Const(if bits >= 64 {
            *c
        } else {
            c & ((1 << bits) - 1)
        }),
        Sym::Field(f) if bits == 32 && !f.pure() => field(f.terms.clone(), f.add, true),
        Sym::Field(f) => map_terms(f, |s| match s {
            s if s + 8 <= bits => Some(Some(s)),
            s if s >= bits => Some(None),
            _ => None,
        }),
        _ => Sym::Unknown,
    }
}

pub(super) fn alu(op: AluOp, a: &Sym, b: &Sym, alu64: bool) -> Sym {
    if !alu64 {
        let (a, b) = (truncate(a, 32), truncate(b, 32));
        let r = alu(op, &a, &b, true);
        return truncate(&r, 32);
    }
    match (op, a, b) {
        (AluOp::Mov, _, b) => b.clone(),
        (_, Sym::Const(x), Sym::Const(y)) => Sym::Const(alu::alu64(op, *x, *y)),
        (AluOp::Add, Sym::Field(f), Sym::Const(c)) | (AluOp::Add, Sym::Const(c), Sym::Field(f)) => {
            field(f.terms.clone(), f.add.wrapping_add(*c), f.mod32)
        }
        (AluOp::Sub, Sym::Field(f), Sym::Const(c)) => {
            field(f.terms.clone(), f.add.wrapping_sub(*c), f.mod32)
        }
        (AluOp::Add | AluOp::Or, Sym::Field(f), Sym::Field(g))
            if f.pure() && g.pure() && f.disjoint(g) =>
        {
            field([f.terms.clone(), g.terms.clone()].concat(), 0, false)
        }
        (AluOp::Or | AluOp::Xor, Sym::Field(f), Sym::Const(0))
        | (AluOp::Or | AluOp::Xor, Sym::Const(0), Sym::Field(f)) => Sym::Field(f.clone()),
        (AluOp::And, Sym::Field(f), Sym::Const(m)) => map_terms(f, |s| match (m >> s) & 0xff {
            0xff => Some(Some(s)),
            0 => Some(None),
            _ => None,
        }),
        (AluOp::Lsh, Sym::Field(f), Sym::Const(k)) => {
            let k = (k & 63) as u32;
            map_terms(f, |s| match s + k {
                t if t + 8 <= 64 => Some(Some(t)),
                t if t >= 64 => Some(None),
                _ => None,
            })
        }
        (AluOp::Rsh, Sym::Field(f), Sym::Const(k)) => {
            let k = (k & 63) as u32;
            map_terms(f, |s| match s {
                s if s >= k => Some(Some(s - k)),
                s if s + 8 <= k => Some(None),
                _ => None,
            })
        }
        (AluOp::Add, Sym::Stack(o), Sym::Const(c)) | (AluOp::Add, Sym::Const(c), Sym::Stack(o)) => {
            Sym::Stack(o.wrapping_add(*c as i64))
        }
        (AluOp::Sub, Sym::Stack(o), Sym::Const(c)) => Sym::Stack(o.wrapping_sub(*c as i64)),
        _ => Sym::Unknown,
    }
}

/// Byte swap (`swap`) or truncation of the low `bits`.
pub(super) fn endian(v: &Sym, bits: u32, swap: bool) -> Sym {
    match v {
        Sym::Const(c) => Sym::Const(alu::endian(*c, bits as u8, swap)),
        // Bytes above the swapped width are dropped, as by the truncation; a term straddling
        // a byte boundary or the width gives up.
        Sym::Field(f) if swap => map_terms(f, |s| match s {
            s if s >= bits => Some(None),
            s if s % 8 == 0 && s + 8 <= bits => Some(Some(bits - 8 - s)),
            _ => None,
        }),
        Sym::Field(_) => truncate(v, bits),
        _ => Sym::Unknown,
    }
}
