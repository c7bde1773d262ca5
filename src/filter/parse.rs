//! LTTng's filter language, parsed once in the daemon (`enable-event --filter`).
//!
//! The grammar is the part of lttng-tools' `filter-parser.y` that applies to what an
//! app records, with its precedence (loosest first):
//!
//! ```text
//! expr       := and ( "||" and )*
//! and        := unary ( "&&" unary )*
//! unary      := "!" unary | comparison
//! comparison := operand ( ("==" | "!=" | "<" | "<=" | ">" | ">=") operand )?
//!             | "(" expr ")"
//! operand    := FIELD | "$ctx." ("vpid" | "vtid" | "procname")
//!             | ["-" | "+"] (INTEGER | FLOAT) | STRING
//! ```
//!
//! An operand alone (`flag`) means `flag != 0`, as in LTTng. Integers are decimal,
//! `0x` hexadecimal or `0`-prefixed octal; floats have a `.` or an exponent; strings
//! are double-quoted, with `\"`, `\\`, `\*` (a literal star), `\n`, `\t`, and an
//! unescaped `*` making the literal a glob (`==`/`!=` only). LTTng's arithmetic and
//! bitwise operators, array indexing and `$app.` contexts are refused by name.
//! Every error names the offending token and its column (1-based, in characters).

use super::glob::Token;
use super::program::{CmpOp, ContextField, MAX_STACK};
use std::fmt;

/// Longest filter expression accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 1024;

/// Deepest nesting of parentheses and `!` accepted (the parser and evaluator's
/// stack stay small whatever the input).
pub const MAX_NESTING: usize = 32;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `left OP right`.
    Compare {
        /// The operator.
        op: CmpOp,
        /// Left side.
        left: Operand,
        /// Right side.
        right: Operand,
    },
    /// `!e`.
    Not(Box<Expr>),
    /// `a && b`.
    And(Box<Expr>, Box<Expr>),
    /// `a || b`.
    Or(Box<Expr>, Box<Expr>),
}

/// A value an expression compares.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// An event field, by name.
    Field(String),
    /// `$ctx.NAME`.
    Context(ContextField),
    /// An integer literal.
    Int(i128),
    /// A float literal.
    Float(f64),
    /// A string literal without an unescaped `*`.
    Str(Vec<u8>),
    /// A string literal with one.
    Glob(Vec<Token>),
}

/// Why a filter expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter: {problem} at column {column}")]
pub struct FilterError {
    /// 1-based column, in characters, of the offending token.
    pub column: usize,
    /// What is wrong there.
    pub problem: String,
}

/// A lexical token and where it starts.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A field name.
    Ident(String),
    /// `$ctx.NAME` (the name).
    Ctx(String),
    /// An integer literal.
    Int(i128),
    /// A float literal.
    Float(f64),
    /// A string literal.
    Str(Vec<Token>),
    /// An operator or parenthesis.
    Punct(&'static str),
    /// End of input.
    End,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(name) => write!(f, "`{name}`"),
            Tok::Ctx(name) => write!(f, "`$ctx.{name}`"),
            Tok::Int(i) => write!(f, "`{i}`"),
            Tok::Float(x) => write!(f, "`{x}`"),
            Tok::Str(_) => f.write_str("a string"),
            Tok::Punct(p) => write!(f, "`{p}`"),
            Tok::End => f.write_str("end of expression"),
        }
    }
}

/// Operators, longest first so that `<=` is not read as `<`.
const PUNCTS: [&str; 22] = [
    "&&", "||", "==", "!=", "<=", ">=", "<<", ">>", "(", ")", "!", "<", ">", "=", "&", "|", "^",
    "~", "+", "-", "*", "/",
];

/// Splits `text` into tokens, each with its column.
fn lex(text: &str) -> Result<Vec<(Tok, usize)>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |column: usize, problem: String| FilterError { column, problem };
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let word = |from: usize| {
            let mut end = from;
            while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_') {
                end += 1;
            }
            end
        };
        if c.is_ascii_alphabetic() || c == '_' {
            let end = word(i);
            out.push((Tok::Ident(chars[i..end].iter().collect()), column));
            i = end;
        } else if c == '$' {
            let end = word(i + 1);
            let scope: String = chars[i + 1..end].iter().collect();
            if scope != "ctx" || chars.get(end) != Some(&'.') {
                let shown: String = chars[i..end.max(i + 1)].iter().collect();
                return Err(err(
                    column,
                    format!("unknown context scope `{shown}` (only `$ctx.NAME` is supported)"),
                ));
            }
            let name_end = word(end + 1);
            out.push((Tok::Ctx(chars[end + 1..name_end].iter().collect()), column));
            i = name_end;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let mut end = i;
            while end < chars.len()
                && (chars[end].is_ascii_alphanumeric()
                    || chars[end] == '.'
                    || ((chars[end] == '-' || chars[end] == '+')
                        && matches!(chars[end - 1], 'e' | 'E')
                        && !chars[i..end].iter().any(|c| matches!(c, 'x' | 'X'))))
            {
                end += 1;
            }
            let literal: String = chars[i..end].iter().collect();
            out.push((number(&literal).map_err(|p| err(column, p))?, column));
            i = end;
        } else if c == '"' {
            let mut tokens = Vec::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(err(column, "unterminated string".into())),
                    Some('"') => break,
                    Some('*') => tokens.push(Token::Star),
                    Some('\\') => {
                        let escaped = match chars.get(i + 1) {
                            Some('*') => b'*',
                            Some('\\') => b'\\',
                            Some('"') => b'"',
                            Some('n') => b'\n',
                            Some('t') => b'\t',
                            other => {
                                let shown = other.map(|c| format!("\\{c}")).unwrap_or("\\".into());
                                return Err(err(i + 1, format!("unknown escape `{shown}`")));
                            }
                        };
                        tokens.push(Token::Byte(escaped));
                        i += 1;
                    }
                    Some(c) => {
                        let mut utf8 = [0u8; 4];
                        tokens.extend(c.encode_utf8(&mut utf8).bytes().map(Token::Byte));
                    }
                }
                i += 1;
            }
            i += 1;
            out.push((Tok::Str(tokens), column));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(p) = PUNCTS.iter().find(|p| rest.starts_with(**p)) else {
                return Err(err(column, format!("unexpected character `{c}`")));
            };
            out.push((Tok::Punct(p), column));
            i += p.chars().count();
        }
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

/// An integer or float literal as LTTng's lexer reads it.
fn number(text: &str) -> Result<Tok, String> {
    let bad = || format!("malformed number `{text}`");
    let int = |digits: &str, radix| u64::from_str_radix(digits, radix).map_err(|_| bad());
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return Ok(Tok::Int(int(hex, 16)?.into()));
    }
    if text.contains(['.', 'e', 'E']) {
        return text.parse::<f64>().map(Tok::Float).map_err(|_| bad());
    }
    if text.len() > 1 && text.starts_with('0') {
        return Ok(Tok::Int(int(&text[1..], 8)?.into()));
    }
    Ok(Tok::Int(int(text, 10)?.into()))
}

/// Recursive descent over the tokens.
struct Parser {
    /// The tokens, [`Tok::End`] last.
    toks: Vec<(Tok, usize)>,
    /// Index of the next token.
    at: usize,
    /// Current nesting of parentheses and `!`.
    depth: usize,
}

impl Parser {
    /// The next token.
    fn peek(&self) -> &Tok {
        &self.toks[self.at].0
    }

    /// An error at the next token.
    fn unexpected(&self, expected: &str) -> FilterError {
        let (tok, column) = &self.toks[self.at];
        let problem = match tok {
            Tok::Punct(p @ ("&" | "|" | "^" | "~" | "<<" | ">>" | "+" | "-" | "*" | "/")) => {
                format!("operator `{p}` is not supported (only comparisons, `&&`, `||`, `!`)")
            }
            Tok::Punct("=") => "unexpected `=` (did you mean `==`?)".to_string(),
            tok => format!("unexpected {tok}, expected {expected}"),
        };
        FilterError {
            column: *column,
            problem,
        }
    }

    /// Consumes the next token if it is `p`.
    fn eat(&mut self, p: &str) -> bool {
        let found = matches!(self.peek(), Tok::Punct(q) if *q == p);
        self.at += usize::from(found);
        found
    }

    /// Enters one more level of nesting.
    fn nest(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(FilterError {
                column: self.toks[self.at].1,
                problem: format!("nested deeper than {MAX_NESTING}"),
            });
        }
        Ok(())
    }

    /// `expr`.
    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    /// `and`.
    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    /// `unary`.
    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.eat("!") {
            self.nest()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        if self.eat("(") {
            self.nest()?;
            let inner = self.or()?;
            if !self.eat(")") {
                return Err(self.unexpected("`)`"));
            }
            self.depth -= 1;
            return Ok(inner);
        }
        self.comparison()
    }

    /// `comparison` without parentheses.
    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let left = self.operand()?;
        let op = [
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            ("<=", CmpOp::Le),
            (">=", CmpOp::Ge),
            ("<", CmpOp::Lt),
            (">", CmpOp::Gt),
        ]
        .into_iter()
        .find(|(p, _)| self.eat(p))
        .map(|(_, op)| op);
        let Some(op) = op else {
            return match self.peek() {
                Tok::End | Tok::Punct("&&" | "||" | ")") => Ok(Expr::Compare {
                    op: CmpOp::Ne,
                    left,
                    right: Operand::Int(0),
                }),
                _ => Err(self.unexpected("a comparison operator, `&&`, `||` or `)`")),
            };
        };
        let column = self.toks[self.at].1;
        let right = self.operand()?;
        let glob = matches!(left, Operand::Glob(_)) || matches!(right, Operand::Glob(_));
        if glob && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
            return Err(FilterError {
                column,
                problem: format!(
                    "a string with `*` is a glob and takes only `==` or `!=`, not `{}`",
                    op.as_str()
                ),
            });
        }
        Ok(Expr::Compare { op, left, right })
    }

    /// `operand`.
    fn operand(&mut self) -> Result<Operand, FilterError> {
        let (tok, column) = self.toks[self.at].clone();
        let negative = match tok {
            Tok::Punct("-") => true,
            Tok::Punct("+") => false,
            _ => {
                let operand = match tok {
                    Tok::Ident(name) => {
                        if matches!(self.toks[self.at + 1].0, Tok::Punct("(")) {
                            return Err(FilterError {
                                column,
                                problem: format!("`{name}(` : function calls are not supported"),
                            });
                        }
                        Operand::Field(name)
                    }
                    Tok::Ctx(name) => Operand::Context(match name.as_str() {
                        "vpid" => ContextField::Vpid,
                        "vtid" => ContextField::Vtid,
                        "procname" => ContextField::Procname,
                        _ => {
                            return Err(FilterError {
                                column,
                                problem: format!(
                                    "unknown context `$ctx.{name}` (expected vpid, vtid or \
                                     procname)"
                                ),
                            });
                        }
                    }),
                    Tok::Int(i) => Operand::Int(i),
                    Tok::Float(x) => Operand::Float(x),
                    Tok::Str(tokens) => {
                        if tokens.contains(&Token::Star) {
                            Operand::Glob(tokens)
                        } else {
                            Operand::Str(
                                tokens
                                    .into_iter()
                                    .map(|t| match t {
                                        Token::Byte(b) => b,
                                        Token::Star => b'*',
                                    })
                                    .collect(),
                            )
                        }
                    }
                    _ => return Err(self.unexpected("a field, a context or a literal")),
                };
                self.at += 1;
                return Ok(operand);
            }
        };
        self.at += 1;
        match self.toks[self.at].0 {
            Tok::Int(i) => {
                self.at += 1;
                Ok(Operand::Int(if negative { -i } else { i }))
            }
            Tok::Float(x) => {
                self.at += 1;
                Ok(Operand::Float(if negative { -x } else { x }))
            }
            _ => Err(self.unexpected("a number after the sign")),
        }
    }
}

/// Parses `text`, refusing what LTTng refuses and what ustrace does not support.
pub fn parse(text: &str) -> Result<Expr, FilterError> {
    if text.len() > MAX_FILTER_LEN {
        return Err(FilterError {
            column: 1,
            problem: format!(
                "expression of {} bytes, at most {MAX_FILTER_LEN}",
                text.len()
            ),
        });
    }
    let toks = lex(text)?;
    if toks.len() == 1 {
        return Err(FilterError {
            column: 1,
            problem: "empty expression".into(),
        });
    }
    let mut parser = Parser {
        toks,
        at: 0,
        depth: 0,
    };
    let expr = parser.or()?;
    if *parser.peek() != Tok::End {
        return Err(parser.unexpected("`&&`, `||` or the end"));
    }
    // One entry is left for joining the filters of two rules.
    if stack_depth(&expr) >= MAX_STACK {
        return Err(FilterError {
            column: 1,
            problem: format!("expression needs an evaluation stack deeper than {MAX_STACK}"),
        });
    }
    Ok(expr)
}

/// The stack the postfix form of `expr` needs (see `program`).
fn stack_depth(expr: &Expr) -> usize {
    match expr {
        Expr::Compare { .. } => 2,
        Expr::Not(e) => stack_depth(e),
        Expr::And(a, b) | Expr::Or(a, b) => stack_depth(a).max(1 + stack_depth(b)),
    }
}
