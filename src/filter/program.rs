//! The compact form of a filter sent to apps, checked there, and evaluated on an
//! event's encoded payload before anything is reserved.
//!
//! A [`Program`] is a postfix sequence of [`Op`]s the daemon compiled for one event
//! (its field names resolved to field indices): operands push a value, comparisons
//! pop two and push a truth value, `Not`/`And`/`Or` combine truth values. The app
//! trusts none of it: [`Program::check`] bounds its length, its strings and its
//! stack, and refuses a field index the event does not have or an operator applied
//! to the wrong kind of entry, so a hostile daemon frame is refused, never run.
//!
//! Evaluation follows LTTng's semantics: integers compare exactly whatever their
//! width and sign, an integer and a float compare as floats, strings compare bytewise
//! (a literal with an unescaped `*` is a glob, for `==` and `!=` only), and a
//! comparison of a string with a number, like a payload that does not decode, makes
//! the whole filter false (LTTng discards the event on an interpreter error).
//! `&&` and `||` short-circuit as LTTng's bytecode jumps do: a left side that
//! decides skips the right one, its comparisons and their errors included.

use super::glob::{Token, glob_match};
use crate::ctf::field::{FieldDesc, FieldType};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::mem::MaybeUninit;

/// Most operations in one program (the filters of every rule of a channel that
/// match one event, joined by `Or`).
pub const MAX_OPS: usize = 16384;

/// Longest string or glob literal in a program, in bytes.
pub const MAX_LITERAL: usize = 1024;

/// Deepest evaluation stack a program may need.
pub const MAX_STACK: usize = 64;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

impl CmpOp {
    /// Whether `ordering` (left compared with right) satisfies the operator.
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            CmpOp::Eq => ordering == Ordering::Equal,
            CmpOp::Ne => ordering != Ordering::Equal,
            CmpOp::Lt => ordering == Ordering::Less,
            CmpOp::Le => ordering != Ordering::Greater,
            CmpOp::Gt => ordering == Ordering::Greater,
            CmpOp::Ge => ordering != Ordering::Less,
        }
    }

    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A context a filter reads (`$ctx.NAME`), whether or not the channel records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContextField {
    /// `$ctx.vpid`: the process id.
    Vpid,
    /// `$ctx.vtid`: the emitting thread's id.
    Vtid,
    /// `$ctx.procname`: the emitting thread's name (`prctl(PR_GET_NAME)`).
    Procname,
}

/// One step of a [`Program`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Push the event's field of this index.
    Field(u16),
    /// Push a context value.
    Context(ContextField),
    /// Push an integer.
    Int(i128),
    /// Push a float.
    Float(f64),
    /// Push a string.
    Str(Vec<u8>),
    /// Push a glob (a string literal with an unescaped `*`).
    Glob(Vec<Token>),
    /// Pop right then left values, push whether `left OP right`.
    Compare(CmpOp),
    /// Push `false` (a field the event does not have, a literal type clash).
    False,
    /// Pop a truth value, push its negation.
    Not,
    /// Pop two truth values, push their conjunction.
    And,
    /// Pop two truth values, push their disjunction.
    Or,
}

/// A filter compiled for one event: postfix [`Op`]s leaving one truth value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program(pub Vec<Op>);

/// Why an app refused a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadProgram {
    /// Over [`MAX_OPS`] operations.
    #[error("{0} operations, at most {MAX_OPS}")]
    TooLong(usize),
    /// A literal over [`MAX_LITERAL`] bytes.
    #[error("a literal of {0} bytes, at most {MAX_LITERAL}")]
    LiteralTooLong(usize),
    /// A field index past the event's fields.
    #[error("field index {index} of an event with {fields} fields")]
    NoSuchField {
        /// The index asked for.
        index: u16,
        /// How many fields the event has.
        fields: usize,
    },
    /// An operator without the entries it needs (too few, or of the wrong kind).
    #[error("operation {0} lacks its operands")]
    Operands(usize),
    /// Deeper than [`MAX_STACK`].
    #[error("needs a stack deeper than {MAX_STACK}")]
    TooDeep,
    /// Does not leave exactly one truth value.
    #[error("does not end with one truth value")]
    Result,
}

/// What an entry of the evaluation stack is, for [`Program::check`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A field, context or literal.
    Value,
    /// The result of a comparison or a logical operator.
    Truth,
}

/// How the app decodes one field of the payload, from its registered type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// An integer of this many bytes.
    Int {
        /// 1, 2, 4 or 8.
        bytes: u8,
        /// Two's complement.
        signed: bool,
    },
    /// binary32.
    F32,
    /// binary64.
    F64,
    /// NUL-terminated string.
    Str,
    /// `u32` length then bytes: skipped, compares with nothing.
    Bytes,
}

impl Layout {
    /// The layout of `ty`.
    fn of(ty: &FieldType) -> Layout {
        match ty {
            FieldType::Integer { bits, signed, .. } | FieldType::Enum { bits, signed, .. } => {
                Layout::Int {
                    bytes: bits / 8,
                    signed: *signed,
                }
            }
            FieldType::Bool => Layout::Int {
                bytes: 1,
                signed: false,
            },
            FieldType::F32 => Layout::F32,
            FieldType::F64 => Layout::F64,
            FieldType::String => Layout::Str,
            FieldType::Bytes => Layout::Bytes,
        }
    }
}

/// A program the app checked against one event's fields: safe to run on any payload.
#[derive(Debug, PartialEq)]
pub struct Checked {
    /// The operations, checked.
    ops: Vec<Op>,
    /// The event's field layouts, to find a field in the payload.
    layouts: Vec<Layout>,
    /// Whether some op pushes a context.
    reads_context: bool,
    /// Per op: if it ends the left operand of an `And` (`Or`), the op index of that
    /// `And` (`Or`), where evaluation goes on when the left side alone decides.
    decides: Vec<Option<u32>>,
}

/// For each op ending the left operand of an `And` or `Or`, the index of that op:
/// evaluation skips the right operand when the left one is false (`And`) or true
/// (`Or`), as LTTng's bytecode jumps do. The operand starts are tracked on a model
/// of the stack, one start per entry (a structurally checked program only).
fn short_circuits(ops: &[Op]) -> Vec<Option<u32>> {
    let mut decides = vec![None; ops.len()];
    let mut starts: Vec<usize> = Vec::new();
    for (at, op) in ops.iter().enumerate() {
        let start = match op {
            Op::Compare(_) => {
                starts.pop();
                starts.pop().unwrap_or(at)
            }
            Op::Not => starts.pop().unwrap_or(at),
            Op::And | Op::Or => {
                let right = starts.pop().unwrap_or(at);
                let left = starts.pop().unwrap_or(at);
                if right > 0 {
                    decides[right - 1] = Some(at as u32);
                }
                left
            }
            _ => at,
        };
        starts.push(start);
    }
    decides
}

/// The context values a filter may read, taken once per filtered event.
#[derive(Debug, Clone, Copy)]
pub struct ContextValues<'a> {
    /// `$ctx.vpid`.
    pub vpid: i32,
    /// `$ctx.vtid`.
    pub vtid: i32,
    /// `$ctx.procname`, without its NUL padding.
    pub procname: &'a [u8],
}

impl ContextValues<'static> {
    /// Stands for the values of a program that reads none.
    pub const NONE: ContextValues<'static> = ContextValues {
        vpid: 0,
        vtid: 0,
        procname: b"",
    };
}

/// An entry of the evaluation stack.
#[derive(Clone, Copy)]
enum Val<'a> {
    /// An integer (every width and sign fits).
    Int(i128),
    /// A float.
    Float(f64),
    /// String bytes.
    Str(&'a [u8]),
    /// A glob.
    Glob(&'a [Token]),
    /// Something that compares with nothing (a byte sequence).
    Opaque,
    /// A truth value.
    Truth(bool),
}

impl Program {
    /// A program that rejects every event.
    pub fn never() -> Program {
        Program(vec![Op::False])
    }

    /// A program passing when `self` or `other` does (two rules matching one event).
    pub fn or(mut self, other: Program) -> Program {
        self.0.extend(other.0);
        self.0.push(Op::Or);
        self
    }

    /// The deepest stack evaluation needs, or the first structural fault; checks
    /// what [`Program::check`] checks except the field indices.
    pub fn depth(&self) -> Result<usize, BadProgram> {
        if self.0.len() > MAX_OPS {
            return Err(BadProgram::TooLong(self.0.len()));
        }
        let mut stack: Vec<Kind> = Vec::new();
        let mut deepest = 0;
        for (at, op) in self.0.iter().enumerate() {
            let (pops, push) = match op {
                Op::Str(s) if s.len() > MAX_LITERAL => {
                    return Err(BadProgram::LiteralTooLong(s.len()));
                }
                Op::Glob(g) if g.len() > MAX_LITERAL => {
                    return Err(BadProgram::LiteralTooLong(g.len()));
                }
                Op::Field(_)
                | Op::Context(_)
                | Op::Int(_)
                | Op::Float(_)
                | Op::Str(_)
                | Op::Glob(_) => (&[][..], Kind::Value),
                Op::False => (&[][..], Kind::Truth),
                Op::Compare(_) => (&[Kind::Value, Kind::Value][..], Kind::Truth),
                Op::Not => (&[Kind::Truth][..], Kind::Truth),
                Op::And | Op::Or => (&[Kind::Truth, Kind::Truth][..], Kind::Truth),
            };
            for want in pops {
                if stack.pop() != Some(*want) {
                    return Err(BadProgram::Operands(at));
                }
            }
            stack.push(push);
            deepest = deepest.max(stack.len());
            if deepest > MAX_STACK {
                return Err(BadProgram::TooDeep);
            }
        }
        if stack != [Kind::Truth] {
            return Err(BadProgram::Result);
        }
        Ok(deepest)
    }

    /// Checks the program against the fields of the event it filters, as the app
    /// declared them.
    pub fn check(self, fields: &[FieldDesc]) -> Result<Checked, BadProgram> {
        self.depth()?;
        for op in &self.0 {
            if let Op::Field(index) = op
                && usize::from(*index) >= fields.len()
            {
                return Err(BadProgram::NoSuchField {
                    index: *index,
                    fields: fields.len(),
                });
            }
        }
        Ok(Checked {
            reads_context: self.0.iter().any(|op| matches!(op, Op::Context(_))),
            decides: short_circuits(&self.0),
            ops: self.0,
            layouts: fields.iter().map(|f| Layout::of(&f.ty)).collect(),
        })
    }
}

/// `left OP right`, or `None` when the two do not compare (string with number,
/// glob with anything but a string, a byte sequence).
fn compare(op: CmpOp, left: Val, right: Val) -> Option<bool> {
    use Val::*;
    let ordering = match (left, right) {
        (Int(a), Int(b)) => a.cmp(&b),
        (Int(a), Float(b)) => (a as f64).partial_cmp(&b)?,
        (Float(a), Int(b)) => a.partial_cmp(&(b as f64))?,
        (Float(a), Float(b)) => a.partial_cmp(&b)?,
        (Str(a), Str(b)) => a.cmp(b),
        (Str(s), Glob(g)) | (Glob(g), Str(s)) => {
            return match op {
                CmpOp::Eq => Some(glob_match(g, s)),
                CmpOp::Ne => Some(!glob_match(g, s)),
                _ => None,
            };
        }
        _ => return None,
    };
    Some(op.holds(ordering))
}

/// Reads `N` bytes at `at` of `payload`.
fn bytes<const N: usize>(payload: &[u8], at: usize) -> Option<[u8; N]> {
    payload.get(at..at + N)?.try_into().ok()
}

impl Checked {
    /// The value of field `index` in `payload`, or `None` if the payload is shorter
    /// than its fields say (the app's own encoding, so only a bug would do that).
    fn field<'a>(&self, payload: &'a [u8], index: usize) -> Option<Val<'a>> {
        let mut at = 0;
        for (i, layout) in self.layouts.iter().enumerate() {
            let len = match layout {
                Layout::Int { bytes, .. } => usize::from(*bytes),
                Layout::F32 => 4,
                Layout::F64 => 8,
                Layout::Str => payload.get(at..)?.iter().position(|b| *b == 0)? + 1,
                Layout::Bytes => u32::from_le_bytes(bytes(payload, at)?) as usize + 4,
            };
            if i == index {
                let raw = payload.get(at..at + len)?;
                return Some(match *layout {
                    Layout::Int { signed, .. } => {
                        let mut wide = [0u8; 8];
                        wide[..len].copy_from_slice(raw);
                        let unsigned = u64::from_le_bytes(wide);
                        let shift = 64 - 8 * len as u32;
                        if signed {
                            Val::Int(i128::from(((unsigned << shift) as i64) >> shift))
                        } else {
                            Val::Int(i128::from(unsigned))
                        }
                    }
                    Layout::F32 => Val::Float(f64::from(f32::from_le_bytes(bytes(raw, 0)?))),
                    Layout::F64 => Val::Float(f64::from_le_bytes(bytes(raw, 0)?)),
                    Layout::Str => Val::Str(&raw[..len - 1]),
                    Layout::Bytes => Val::Opaque,
                });
            }
            at += len;
        }
        None
    }

    /// Whether the program reads a context (its values are gathered only then).
    pub fn reads_context(&self) -> bool {
        self.reads_context
    }

    /// Whether the event whose fields are encoded in `payload` passes the filter,
    /// with `context` for its `$ctx.` operands.
    pub fn passes(&self, payload: &[u8], context: &ContextValues) -> bool {
        // Uninitialized: no per-event cost for the stack's size.
        let mut stack = [MaybeUninit::<Val>::uninit(); MAX_STACK];
        let mut top = 0;
        let mut at = 0;
        while let Some(op) = self.ops.get(at) {
            let value = match op {
                Op::Field(index) => match self.field(payload, usize::from(*index)) {
                    Some(v) => v,
                    None => return false,
                },
                Op::Context(ContextField::Vpid) => Val::Int(i128::from(context.vpid)),
                Op::Context(ContextField::Vtid) => Val::Int(i128::from(context.vtid)),
                Op::Context(ContextField::Procname) => Val::Str(context.procname),
                Op::Int(i) => Val::Int(*i),
                Op::Float(f) => Val::Float(*f),
                Op::Str(s) => Val::Str(s),
                Op::Glob(g) => Val::Glob(g),
                Op::False => Val::Truth(false),
                Op::Compare(cmp) => {
                    top -= 2;
                    // SAFETY: `check` ran this op sequence on a model of the stack:
                    // it pops only entries pushed (written) before, and stays within
                    // MAX_STACK. A short-circuit skip leaves the stack as deep as the
                    // skipped ops would have (the left value where the result goes).
                    let (a, b) =
                        unsafe { (stack[top].assume_init(), stack[top + 1].assume_init()) };
                    match compare(*cmp, a, b) {
                        Some(t) => Val::Truth(t),
                        None => return false,
                    }
                }
                Op::Not => {
                    top -= 1;
                    // SAFETY: as for `Compare`.
                    Val::Truth(!truth(unsafe { stack[top].assume_init() }))
                }
                Op::And | Op::Or => {
                    top -= 2;
                    // SAFETY: as for `Compare`.
                    let (a, b) =
                        unsafe { (stack[top].assume_init(), stack[top + 1].assume_init()) };
                    let (a, b) = (truth(a), truth(b));
                    Val::Truth(if *op == Op::And { a && b } else { a || b })
                }
            };
            // The left operand of an `And` (`Or`) that is false (true) is the
            // result: go on after that op, as if it had run (and so on up a chain of
            // them, `(a && b) && c`).
            while let Some(and_or) = self.decides[at] {
                let and_or = and_or as usize;
                if truth(value) != (self.ops[and_or] == Op::Or) {
                    break;
                }
                at = and_or;
            }
            stack[top] = MaybeUninit::new(value);
            top += 1;
            at += 1;
        }
        // SAFETY: `check` found that the program leaves exactly one entry.
        top == 1 && truth(unsafe { stack[0].assume_init() })
    }
}

/// A truth entry's value ([`Program::check`] put only truth values where this is
/// called).
fn truth(v: Val) -> bool {
    matches!(v, Val::Truth(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, ty: FieldType) -> FieldDesc {
        FieldDesc {
            name: name.into(),
            ty,
        }
    }

    #[test]
    fn a_deciding_left_side_skips_the_right_one_as_lttng_does() {
        use Op::*;
        // `1 == 1`, `1 == 2`, and a comparison that errs when it runs (a number with
        // a string: only a daemon's hand-made program has one; it makes the filter
        // false if evaluated).
        let yes = || [Int(1), Int(1), Compare(CmpOp::Eq)];
        let no = || [Int(1), Int(2), Compare(CmpOp::Eq)];
        let err = || [Int(1), Str(b"x".to_vec()), Compare(CmpOp::Eq)];
        let run = |parts: &[&[Op]]| {
            let ops: Vec<Op> = parts.iter().flat_map(|p| p.iter().cloned()).collect();
            Program(ops)
                .check(&[])
                .unwrap()
                .passes(&[], &ContextValues::NONE)
        };
        assert!(run(&[&yes(), &err(), &[Or]]), "true || err");
        assert!(!run(&[&no(), &err(), &[Or]]), "false || err");
        assert!(!run(&[&no(), &err(), &[And]]), "false && err");
        assert!(!run(&[&yes(), &err(), &[And]]), "true && err");
        // (false && err) && err, then || true: the chain skips both errors.
        assert!(run(&[&no(), &err(), &[And], &err(), &[And], &yes(), &[Or]]));
        // !(false && err) || err: the `Not` runs on the skipped `And`'s result.
        assert!(run(&[&no(), &err(), &[And, Not], &err(), &[Or]]));
        // The right side still runs when the left does not decide.
        assert!(run(&[&no(), &yes(), &[Or]]));
        assert!(!run(&[&yes(), &no(), &[And]]));
    }

    #[test]
    fn hostile_programs_are_refused_before_they_run() {
        let fields = [field("a", FieldType::F64)];
        let cases = [
            (vec![], BadProgram::Result),
            (vec![Op::Int(1)], BadProgram::Result),
            (vec![Op::Not], BadProgram::Operands(0)),
            (
                vec![Op::Int(1), Op::Int(1), Op::And],
                BadProgram::Operands(2),
            ),
            (
                vec![Op::False, Op::Int(1), Op::Compare(CmpOp::Eq)],
                BadProgram::Operands(2),
            ),
            (vec![Op::False, Op::False], BadProgram::Result),
            (
                vec![Op::Field(1), Op::Int(0), Op::Compare(CmpOp::Eq)],
                BadProgram::NoSuchField {
                    index: 1,
                    fields: 1,
                },
            ),
            (
                vec![Op::False; MAX_OPS + 1],
                BadProgram::TooLong(MAX_OPS + 1),
            ),
            (vec![Op::False; MAX_STACK + 1], BadProgram::TooDeep),
            (
                vec![Op::Str(vec![b'x'; MAX_LITERAL + 1])],
                BadProgram::LiteralTooLong(MAX_LITERAL + 1),
            ),
        ];
        for (ops, fault) in cases {
            assert_eq!(Program(ops.clone()).check(&fields), Err(fault), "{ops:?}");
        }
    }

    #[test]
    fn fields_decode_from_the_payload_as_the_app_encodes_them() {
        use crate::ctf::field::FieldValue;
        let fields = [
            field("s", FieldType::String),
            field("b", FieldType::Bytes),
            field("i8", <i8 as FieldValue>::field_type()),
            field("u64", <u64 as FieldValue>::field_type()),
            field("f", FieldType::F32),
        ];
        let mut payload = [0u8; 64];
        let mut at = 0;
        at += "héllo".encode(&mut payload[at..]);
        at += (&[1u8, 2, 3][..]).encode(&mut payload[at..]);
        at += (-5i8).encode(&mut payload[at..]);
        at += u64::MAX.encode(&mut payload[at..]);
        at += 0.25f32.encode(&mut payload[at..]);
        let payload = &payload[..at];
        let ctx = ContextValues {
            vpid: 7,
            vtid: 8,
            procname: b"demo",
        };
        let run = |ops: Vec<Op>| Program(ops).check(&fields).unwrap().passes(payload, &ctx);
        let cmp = |a: Op, op: CmpOp, b: Op| run(vec![a, b, Op::Compare(op)]);
        assert!(cmp(Op::Field(0), CmpOp::Eq, Op::Str("héllo".into())));
        assert!(cmp(Op::Field(2), CmpOp::Eq, Op::Int(-5)));
        assert!(cmp(Op::Field(3), CmpOp::Eq, Op::Int(u64::MAX.into())));
        assert!(cmp(Op::Field(3), CmpOp::Gt, Op::Int(i64::MAX.into())));
        assert!(cmp(Op::Field(4), CmpOp::Eq, Op::Float(0.25)));
        assert!(cmp(Op::Field(4), CmpOp::Lt, Op::Int(1)));
        assert!(!cmp(Op::Field(1), CmpOp::Eq, Op::Int(1)));
        assert!(!run(vec![
            Op::Field(1),
            Op::Int(1),
            Op::Compare(CmpOp::Eq),
            Op::Not
        ]));
        assert!(cmp(Op::Context(ContextField::Vtid), CmpOp::Eq, Op::Int(8)));
        assert!(cmp(
            Op::Context(ContextField::Procname),
            CmpOp::Eq,
            Op::Glob(vec![Token::Byte(b'd'), Token::Star])
        ));
        // A payload cut short rejects rather than reads past it.
        let checked = Program(vec![Op::Field(4), Op::Int(0), Op::Compare(CmpOp::Gt)])
            .check(&fields)
            .unwrap();
        assert!(!checked.passes(&payload[..payload.len() - 1], &ctx));
    }
}
