//! LTTng's star globbing, shared by event-name patterns (`enable-event 'demo:*'`) and
//! filter string literals (`name == "foo*"`): `*` matches any run of bytes, the
//! empty one included; every other token matches one byte.

use serde::{Deserialize, Serialize};

/// One matching unit of a glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Token {
    /// This byte (an escaped `*` or `\` included).
    Byte(u8),
    /// Any run of bytes, empty included.
    Star,
}

/// Star-glob matching with one backtrack point (the last `*` seen): linear in the
/// subject for each star, so a hostile pattern costs at most pattern x subject steps.
pub fn glob_match(pattern: &[Token], subject: &[u8]) -> bool {
    let (mut p, mut s) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while s < subject.len() {
        match pattern.get(p) {
            Some(Token::Star) => {
                resume = Some((p + 1, s));
                p += 1;
            }
            Some(Token::Byte(b)) if *b == subject[s] => {
                p += 1;
                s += 1;
            }
            _ => match resume {
                Some((after_star, from)) => {
                    p = after_star;
                    s = from + 1;
                    resume = Some((after_star, from + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|t| *t == Token::Star)
}
