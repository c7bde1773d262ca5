//! A parsed filter, and its compilation for one event: field names resolved to the
//! event's field indices, into the [`Program`] its apps run.

use super::parse::{self, Expr, FilterError, Operand};
use super::program::{Op, Program};
use crate::ctf::field::{EventDesc, FieldType};
use std::fmt;

/// A filter expression as the user wrote it, checked. Two filters are equal when
/// their texts are (the same text parses to the same expression).
#[derive(Debug, Clone)]
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

    /// The fields the expression reads that `event` does not have: for that event
    /// the filter is false whatever its values (the daemon says so in its log).
    pub fn missing_fields(&self, event: &EventDesc) -> Vec<&str> {
        let mut missing = self.fields();
        missing.retain(|name| !event.fields.iter().any(|f| f.name == *name));
        missing
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

impl PartialEq for Filter {
    fn eq(&self, other: &Filter) -> bool {
        self.text == other.text
    }
}

impl Eq for Filter {}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctf::field::{FieldDesc, FieldValue, LogLevel};
    use crate::filter::glob::{Token, glob_match};
    use crate::filter::parse::Expr;
    use crate::filter::program::{CmpOp, ContextField, ContextValues};
    use proptest::prelude::*;

    /// `demo:sample(n: i64, u: u8, s: &str, x: f64, raw: &[u8])`.
    fn event() -> EventDesc {
        let field = |name: &str, ty| FieldDesc {
            name: name.into(),
            ty,
        };
        EventDesc {
            provider: "demo".into(),
            name: "sample".into(),
            loglevel: LogLevel::Info,
            fields: vec![
                field("n", <i64 as FieldValue>::field_type()),
                field("u", <u8 as FieldValue>::field_type()),
                field("s", FieldType::String),
                field("x", FieldType::F64),
                field("raw", FieldType::Bytes),
            ],
            model_emf_uri: None,
        }
    }

    /// The values of one emission of [`event`].
    #[derive(Debug, Clone)]
    struct Sample {
        n: i64,
        u: u8,
        s: String,
        x: f64,
    }

    const CONTEXT: ContextValues<'static> = ContextValues {
        vpid: 42,
        vtid: 43,
        procname: b"worker-1",
    };

    impl Sample {
        fn payload(&self) -> Vec<u8> {
            let raw: &[u8] = b"\x01\x02";
            let mut out = vec![0u8; 64 + self.s.len()];
            let mut at = 0;
            at += self.n.encode(&mut out[at..]);
            at += self.u.encode(&mut out[at..]);
            at += self.s.as_str().encode(&mut out[at..]);
            at += self.x.encode(&mut out[at..]);
            at += raw.encode(&mut out[at..]);
            out.truncate(at);
            out
        }

        /// What the app decides.
        fn passes(&self, text: &str) -> bool {
            let program = Filter::parse(text).unwrap().compile(&event());
            let checked = program.check(&event().fields).unwrap();
            checked.passes(&self.payload(), &CONTEXT)
        }
    }

    /// A value as the reference interpretation sees it.
    #[derive(Debug, Clone, PartialEq)]
    enum Value {
        Num(f64),
        Int(i128),
        Text(Vec<u8>),
        Glob(Vec<Token>),
        Opaque,
    }

    /// The reference: the expression tree on the values, LTTng's rules written
    /// plainly (`None`: an error, the whole filter is false; `&&` and `||` evaluate
    /// their right side only when the left one does not decide).
    fn reference(expr: &Expr, sample: &Sample) -> Option<bool> {
        // As in LTTng, a field the event lacks or a string compared with a number
        // anywhere is an error before anything runs, short-circuits or not.
        let mut clash = false;
        visit_comparisons(expr, &mut |left, right| {
            let class = |o: &crate::filter::parse::Operand| match value(o, sample) {
                None | Some(Value::Opaque) => None,
                Some(Value::Text(_) | Value::Glob(_)) => Some(true),
                Some(Value::Int(_) | Value::Num(_)) => Some(false),
            };
            let (l, r) = (class(left), class(right));
            clash |= l.is_none() || l != r;
        });
        if clash {
            return None;
        }
        evaluate(expr, sample)
    }

    /// Calls `f` on the two operands of every comparison in `expr`.
    fn visit_comparisons<'a>(
        expr: &'a Expr,
        f: &mut impl FnMut(&'a crate::filter::parse::Operand, &'a crate::filter::parse::Operand),
    ) {
        match expr {
            Expr::Compare { left, right, .. } => f(left, right),
            Expr::Not(e) => visit_comparisons(e, f),
            Expr::And(a, b) | Expr::Or(a, b) => {
                visit_comparisons(a, f);
                visit_comparisons(b, f);
            }
        }
    }

    /// An operand's value in `sample`; `None` for a field the event lacks.
    fn value(o: &crate::filter::parse::Operand, sample: &Sample) -> Option<Value> {
        use crate::filter::parse::Operand as O;
        {
            Some(match o {
                O::Field(name) => match name.as_str() {
                    "n" => Value::Int(sample.n.into()),
                    "u" => Value::Int(sample.u.into()),
                    "s" => Value::Text(sample.s.as_bytes().to_vec()),
                    "x" => Value::Num(sample.x),
                    "raw" => Value::Opaque,
                    _ => return None,
                },
                O::Context(ContextField::Vpid) => Value::Int(42),
                O::Context(ContextField::Vtid) => Value::Int(43),
                O::Context(ContextField::Procname) => Value::Text(b"worker-1".to_vec()),
                O::Int(i) => Value::Int(*i),
                O::Float(x) => Value::Num(*x),
                O::Str(s) => Value::Text(s.clone()),
                O::Glob(g) => Value::Glob(g.clone()),
            })
        }
    }

    /// The expression on the values, statically sound; `None` for a comparison
    /// that errs when it runs.
    fn evaluate(expr: &Expr, sample: &Sample) -> Option<bool> {
        match expr {
            Expr::Compare { op, left, right } => {
                let (l, r) = (value(left, sample)?, value(right, sample)?);
                let ord = match (&l, &r) {
                    (Value::Int(a), Value::Int(b)) => a.cmp(b),
                    (Value::Int(a), Value::Num(b)) => (*a as f64).partial_cmp(b)?,
                    (Value::Num(a), Value::Int(b)) => a.partial_cmp(&(*b as f64))?,
                    (Value::Num(a), Value::Num(b)) => a.partial_cmp(b)?,
                    (Value::Text(a), Value::Text(b)) => a.cmp(b),
                    (Value::Text(t), Value::Glob(g)) | (Value::Glob(g), Value::Text(t)) => {
                        let m = glob_match(g, t);
                        return match op {
                            CmpOp::Eq => Some(m),
                            CmpOp::Ne => Some(!m),
                            _ => None,
                        };
                    }
                    _ => return None,
                };
                use std::cmp::Ordering::*;
                Some(match op {
                    CmpOp::Eq => ord == Equal,
                    CmpOp::Ne => ord != Equal,
                    CmpOp::Lt => ord == Less,
                    CmpOp::Le => ord != Greater,
                    CmpOp::Gt => ord == Greater,
                    CmpOp::Ge => ord != Less,
                })
            }
            Expr::Not(e) => Some(!evaluate(e, sample)?),
            Expr::And(a, b) => match evaluate(a, sample)? {
                false => Some(false),
                true => evaluate(b, sample),
            },
            Expr::Or(a, b) => match evaluate(a, sample)? {
                true => Some(true),
                false => evaluate(b, sample),
            },
        }
    }

    #[test]
    fn expressions_select_what_lttng_would() {
        let sample = Sample {
            n: -3,
            u: 200,
            s: "foo.bar".into(),
            x: 2.5,
        };
        // (expression, recorded)
        let table: &[(&str, bool)] = &[
            ("n == -3", true),
            ("n != -3", false),
            ("n < 0 && u > 100", true),
            ("n < -3 || u >= 200", true),
            ("n <= -4 || u >= 201", false),
            ("!(n == -3)", false),
            ("!!(n == -3)", true),
            ("x == 2.5", true),
            ("x > 2", true),
            ("n < 2.5", true),
            ("x < -3", false),
            ("2.5 == x", true),
            ("u == 0xc8", true),
            ("u == 0310", true),
            ("x == 25e-1", true),
            ("s == \"foo.bar\"", true),
            ("s == \"foo*\"", true),
            ("s == \"*bar\"", true),
            ("s == \"*o.b*\"", true),
            ("s != \"foo*\"", false),
            ("s == \"foo\\*\"", false),
            ("s < \"goo\"", true),
            ("s > \"foo.bar\"", false),
            ("u", true),
            ("n && u", true),
            ("$ctx.vpid == 42", true),
            ("$ctx.vtid != 43", false),
            ("$ctx.procname == \"worker*\"", true),
            ("$ctx.procname == \"worker\"", false),
            // LTTng: a missing field or a type clash makes the filter false,
            // whatever surrounds it.
            ("missing == 1", false),
            ("missing == 1 || n == -3", false),
            ("!(missing == 1)", false),
            ("s == 1", false),
            ("n == \"x\"", false),
            ("raw == 1", false),
            ("(n == -3 || u == 0) && (s == \"f*\" && !(x > 3))", true),
        ];
        for &(text, expected) in table {
            assert_eq!(sample.passes(text), expected, "{text}");
        }
    }

    #[test]
    fn malformed_expressions_name_the_token_and_its_column() {
        let table: &[(&str, &str)] = &[
            ("", "filter: empty expression at column 1"),
            (
                "n == ",
                "filter: unexpected end of expression, expected a field, a context or a literal at column 6",
            ),
            (
                "(n == 1))",
                "filter: unexpected `)`, expected `&&`, `||` or the end at column 9",
            ),
            (
                "(n == 1",
                "filter: unexpected end of expression, expected `)` at column 8",
            ),
            (
                "n = 1",
                "filter: unexpected `=` (did you mean `==`?) at column 3",
            ),
            (
                "n == 1 & u",
                "filter: operator `&` is not supported (only comparisons, `&&`, `||`, `!`) at column 8",
            ),
            ("n == 1 @", "filter: unexpected character `@` at column 8"),
            ("s == \"abc", "filter: unterminated string at column 6"),
            ("s == \"a\\qb\"", "filter: unknown escape `\\q` at column 8"),
            (
                "$ctx.pid == 1",
                "filter: unknown context `$ctx.pid` (expected vpid, vtid or procname) at column 1",
            ),
            (
                "$app.x == 1",
                "filter: unknown context scope `$app` (only `$ctx.NAME` is supported) at column 1",
            ),
            (
                "s < \"a*\"",
                "filter: a string with `*` is a glob and takes only `==` or `!=`, not `<` at column 5",
            ),
            ("n == 0x", "filter: malformed number `0x` at column 6"),
            (
                "n == 99999999999999999999",
                "filter: malformed number `99999999999999999999` at column 6",
            ),
            (
                "n n",
                "filter: unexpected `n`, expected a comparison operator, `&&`, `||` or `)` at column 3",
            ),
            (
                "f(1) == 2",
                "filter: `f(` : function calls are not supported at column 1",
            ),
        ];
        for &(text, message) in table {
            let err = Filter::parse(text).unwrap_err();
            assert_eq!(err.to_string(), message, "{text:?}");
        }
        let deep = format!("{}n == 1{}", "(".repeat(40), ")".repeat(40));
        assert!(
            Filter::parse(&deep)
                .unwrap_err()
                .problem
                .contains("nested deeper than 32")
        );
        let long = format!("n == 1{}", " || n == 1".repeat(200));
        assert!(
            Filter::parse(&long)
                .unwrap_err()
                .problem
                .contains("at most 1024")
        );
    }

    #[test]
    fn the_fields_a_filter_reads_are_listed_once() {
        let f = Filter::parse("n == 1 && (s == \"x\" || k > 2) && $ctx.vtid == 3").unwrap();
        assert_eq!(f.fields(), vec!["n", "s", "k"]);
        assert_eq!(f.missing_fields(&event()), vec!["k"]);
    }

    /// Random expressions over the sample's fields, contexts and literals.
    fn expression() -> impl Strategy<Value = String> {
        let operand = prop_oneof![
            Just("n".to_string()),
            Just("u".to_string()),
            Just("s".to_string()),
            Just("x".to_string()),
            Just("raw".to_string()),
            Just("nope".to_string()),
            Just("$ctx.vtid".to_string()),
            Just("$ctx.procname".to_string()),
            (-5i64..300).prop_map(|i| i.to_string()),
            (-50i32..50).prop_map(|i| format!("{:.1}", f64::from(i) / 10.0)),
            prop::sample::select(vec!["a", "ab", "b", "worker-1", "w*", "*b", "*"])
                .prop_map(|s| format!("{s:?}")),
        ];
        let op = prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]);
        let comparison =
            (operand.clone(), op, operand).prop_map(|(l, op, r)| format!("{l} {op} {r}"));
        comparison.prop_recursive(4, 16, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|e| format!("!({e})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) && ({b})")),
                (inner.clone(), inner).prop_map(|(a, b)| format!("({a}) || ({b})")),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_app_decides_as_the_reference_interpretation(
            text in expression(),
            n in -5i64..300,
            u in any::<u8>(),
            s in prop::sample::select(vec!["a", "ab", "b", "worker-1", ""]),
            x in -5.0f64..5.0,
        ) {
            // A glob compared with `<` is refused at parse time, as in LTTng.
            let Ok(filter) = Filter::parse(&text) else {
                prop_assume!(false);
                unreachable!()
            };
            let sample = Sample { n, u, s: s.into(), x };
            let expected = reference(&filter.expr, &sample).unwrap_or(false);
            prop_assert_eq!(sample.passes(&text), expected, "{}", text);
        }
    }
}
