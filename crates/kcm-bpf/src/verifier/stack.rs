//! The verifier's model of the 512-byte stack: per 8-byte slot, either a spilled register or
//! which bytes hold data. Reads of bytes never written are refused.

use super::explore::{err, State, Val, STACK_SIZE};
use super::{Rule, VerifyError};

/// One 8-byte stack slot: a spilled register, or bytes of which `mask` are initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Slot {
    Bytes(u8),
    Spill(Val),
}

/// Slot index and byte-in-slot of stack offset `a` (in `-512..0`).
pub(super) fn slot_of(a: i64) -> (usize, u32) {
    let b = (STACK_SIZE + a) as usize;
    (b / 8, (b % 8) as u32)
}

/// Marks one stack byte as written with data (a spilled register there becomes plain bytes).
pub(super) fn mark_byte(st: &mut State, a: i64) {
    let (slot, bit) = slot_of(a);
    let s = &mut st.stack[slot];
    let mask = match *s {
        Slot::Bytes(m) => m,
        Slot::Spill(_) => 0xff,
    };
    *s = Slot::Bytes(mask | 1 << bit);
}

pub(super) fn read_stack(i: usize, st: &State, a: i64, size: i64) -> Result<Val, VerifyError> {
    let (slot, first) = slot_of(a);
    // Aligned accesses never cross a slot.
    match st.stack[slot] {
        Slot::Spill(v) if size == 8 => Ok(v),
        // Part of a spilled scalar: its value is not kept (as in the kernel, so both fold the
        // same branches).
        Slot::Spill(Val::Scalar(_)) => Ok(Val::Scalar(None)),
        Slot::Spill(_) => Err(err(i, Rule::Spill("invalid size of register fill"))),
        Slot::Bytes(m) => {
            let want = (((1u16 << size) - 1) << first) as u8;
            if m & want != want {
                return Err(err(i, Rule::StackUninit { off: a, size }));
            }
            Ok(Val::Scalar(None))
        }
    }
}

pub(super) fn write_stack(
    i: usize,
    st: &mut State,
    a: i64,
    size: i64,
    v: Val,
) -> Result<(), VerifyError> {
    let (slot, _) = slot_of(a);
    if size == 8 {
        st.stack[slot] = Slot::Spill(v);
        return Ok(());
    }
    if v.is_ptr() {
        return Err(err(i, Rule::Spill("invalid size of register spill")));
    }
    if let Slot::Spill(p) = st.stack[slot] {
        if p.is_ptr() {
            return Err(err(i, Rule::Spill("partial overwrite of spilled pointer")));
        }
    }
    for k in 0..size {
        mark_byte(st, a + k);
    }
    Ok(())
}
