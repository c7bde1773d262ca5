//! A parsed filter, and its compilation for one event: field names resolved to the
//! event's field indices, into the [`Program`] its apps run.

use super::parse::{self, Expr, FilterError, Operand};
use super::program::{Op, Program};
use crate::ctf::field::{EventDesc, FieldType};
use std::fmt;

/// A filter expression as the user wrote it, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The text, as `list` and `save` show it.
    text: String,
    /// What it parsed to.
    expr: Expr,
}

/// What an operand is, as far as comparing goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Integers and floats compare with each other.
    Number,
    /// Strings and globs.
    Text,
    /// Byte sequences compare with nothing.
    Opaque,
}

impl Filter {
    /// Parses `text` (see [`parse`](super::parse)).
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        Ok(Filter {
            text: text.to_owned(),
            expr: parse::parse(text)?,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The field names the expression reads, each once, in order of appearance.
    pub fn fields(&self) -> Vec<&str> {
        let mut names = Vec::new();
        visit(&self.expr, &mut |operand| {
            if let Operand::Field(name) = operand
                && !names.contains(&name.as_str())
            {
                names.push(name.as_str());
            }
        });
        names
    }

    /// The program apps run for `event`. As in LTTng, a field the event does not
    /// have, or a comparison of a string with a number, makes the whole filter
    /// false for that event.
    pub fn compile(&self, event: &EventDesc) -> Program {
        let mut ops = Vec::new();
        match emit(&self.expr, event, &mut ops) {
            Some(()) => Program(ops),
            None => Program::never(),
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Calls `f` on every operand of `expr`.
fn visit<'a>(expr: &'a Expr, f: &mut impl FnMut(&'a Operand)) {
    match expr {
        Expr::Compare { left, right, .. } => {
            f(left);
            f(right);
        }
        Expr::Not(e) => visit(e, f),
        Expr::And(a, b) | Expr::Or(a, b) => {
            visit(a, f);
            visit(b, f);
        }
    }
}

/// Appends the postfix form of `expr` for `event`; `None` when it cannot pass.
fn emit(expr: &Expr, event: &EventDesc, ops: &mut Vec<Op>) -> Option<()> {
    match expr {
        Expr::Compare { op, left, right } => {
            let (l, r) = (operand(left, event)?, operand(right, event)?);
            if l.1 != r.1 || l.1 == Class::Opaque {
                return None;
            }
            ops.extend([l.0, r.0, Op::Compare(*op)]);
        }
        Expr::Not(e) => {
            // `!x` of an `x` that cannot be evaluated is still an error in LTTng.
            emit(e, event, ops)?;
            ops.push(Op::Not);
        }
        Expr::And(a, b) | Expr::Or(a, b) => {
            emit(a, event, ops)?;
            emit(b, event, ops)?;
            ops.push(if matches!(expr, Expr::And(..)) {
                Op::And
            } else {
                Op::Or
            });
        }
    }
    Some(())
}

/// The op pushing `operand` and its class; `None` for a field `event` lacks.
fn operand(operand: &Operand, event: &EventDesc) -> Option<(Op, Class)> {
    use super::program::ContextField;
    Some(match operand {
        Operand::Field(name) => {
            let index = event.fields.iter().position(|f| f.name == *name)?;
            let class = match event.fields[index].ty {
                FieldType::String => Class::Text,
                FieldType::Bytes => Class::Opaque,
                _ => Class::Number,
            };
            (Op::Field(u16::try_from(index).ok()?), class)
        }
        Operand::Context(c) => (
            Op::Context(*c),
            match c {
                ContextField::Procname => Class::Text,
                ContextField::Vpid | ContextField::Vtid => Class::Number,
            },
        ),
        Operand::Int(i) => (Op::Int(*i), Class::Number),
        Operand::Float(x) => (Op::Float(*x), Class::Number),
        Operand::Str(s) => (Op::Str(s.clone()), Class::Text),
        Operand::Glob(g) => (Op::Glob(g.clone()), Class::Text),
    })
}
