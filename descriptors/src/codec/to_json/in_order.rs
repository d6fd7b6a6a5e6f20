//! The occurrences of a message level whose bytes are in canonical order
//! (as encoders write them), kept on the stack: known fields in field
//! number order, a singular field at most once, a repeated field's
//! occurrences together, at most one member of each oneof, at most [`FEW`]
//! occurrences. Sorting and resolving oneofs would change nothing there, so
//! [`super::Writer::fields`] writes them as they are, with no occurrence
//! list taken from the heap (most levels: a small message allocated only
//! its output). Any other level goes on into a list from where it stopped.

use super::{Card, MessagePlan, Occ, Result, read_field};

/// How many occurrences a level may have to be kept on the stack.
pub(super) const FEW: usize = 16;

/// How far [`in_order`] read a level.
pub(super) enum Level<'a> {
    /// Canonical: this many occurrences, all in `few`.
    Whole(usize),
    /// Not canonical, or more than [`FEW`] occurrences: the first `n`
    /// occurrences are in `few`, `next` was read after them, and `rest`
    /// is still to be read.
    Stopped {
        n: usize,
        next: Occ<'a>,
        rest: &'a [u8],
    },
}

/// Reads `bytes` into `few` while they are canonical (see the module);
/// an error where [`super::scan`] would fail first (the same reads, in the
/// same order).
pub(super) fn in_order<'a>(
    plan: &MessagePlan,
    mut bytes: &'a [u8],
    few: &mut [Occ<'a>; FEW],
    checked: bool,
) -> Result<Level<'a>> {
    let mut n: usize = 0;
    // Oneofs with a member seen (a oneof past the 64th: not this path).
    let mut oneofs = 0u64;
    while !bytes.is_empty() {
        let Some(occ) = read_field(plan, &mut bytes, checked)? else {
            continue;
        };
        let stopped = Level::Stopped {
            n,
            next: occ,
            rest: bytes,
        };
        let field = &plan.fields[occ.slot as usize];
        let again = matches!(field.card, Card::Repeated | Card::Map);
        if let Some(prev) = n.checked_sub(1).and_then(|i| few.get(i))
            && (occ.slot < prev.slot || (occ.slot == prev.slot && !again))
        {
            return Ok(stopped);
        }
        if let Some(o) = field.oneof {
            match 1u64.checked_shl(u32::from(o)) {
                Some(bit) if oneofs & bit == 0 => oneofs |= bit,
                _ => return Ok(stopped),
            }
        }
        let Some(slot) = few.get_mut(n) else {
            return Ok(stopped);
        };
        *slot = occ;
        n += 1;
    }
    Ok(Level::Whole(n))
}
