//! The occurrences of a message level whose bytes are in canonical order
//! (as encoders write them), kept on the stack: known fields in field
//! number order, a singular field at most once, a repeated field's
//! occurrences together, at most one member of each oneof, at most [`FEW`]
//! occurrences. Sorting and resolving oneofs would change nothing there, so
//! [`super::Writer::fields`] writes them as they are, with no occurrence
//! list taken from the heap (most levels: a small message allocated only
//! its output). Any other level is scanned again into a list.

use super::{Card, MessagePlan, Occ, Result, read_field};

/// How many occurrences a level may have to be kept on the stack.
pub(super) const FEW: usize = 16;

/// The number of occurrences of `bytes` read into `few` if canonical (see
/// the module), else `None`; an error where [`super::scan`] would fail
/// first (the same reads, in the same order).
pub(super) fn in_order<'a>(
    plan: &MessagePlan,
    mut bytes: &'a [u8],
    few: &mut [Occ<'a>; FEW],
    checked: bool,
) -> Result<Option<usize>> {
    let mut n: usize = 0;
    // Oneofs with a member seen (a oneof past the 64th: not this path).
    let mut oneofs = 0u64;
    while !bytes.is_empty() {
        let Some(occ) = read_field(plan, &mut bytes, checked)? else {
            continue;
        };
        let field = &plan.fields[occ.slot as usize];
        let again = matches!(field.card, Card::Repeated | Card::Map);
        if let Some(prev) = n.checked_sub(1).and_then(|i| few.get(i))
            && (occ.slot < prev.slot || (occ.slot == prev.slot && !again))
        {
            return Ok(None);
        }
        if let Some(o) = field.oneof {
            match 1u64.checked_shl(u32::from(o)) {
                Some(bit) if oneofs & bit == 0 => oneofs |= bit,
                _ => return Ok(None),
            }
        }
        let Some(slot) = few.get_mut(n) else {
            return Ok(None);
        };
        *slot = occ;
        n += 1;
    }
    Ok(Some(n))
}
