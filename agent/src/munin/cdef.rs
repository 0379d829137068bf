//! `FIELD.cdef`: the RPN expression (rrdtool's CDEF) Munin applies to a
//! field's stored values when it draws them, e.g. `in,8,*` (bytes to bits)
//! or `user,4,/` (per CPU). Names in the expression are fields of the same
//! graph; an unknown operand makes the result unknown, as in rrdtool.
//!
//! The operators are those the plugins of munin-plugins-core use
//! (`+ - * /`) and the common rest of rrdtool's set: `%`, `MIN`, `MAX`,
//! `LIMIT`, `ABS`, `FLOOR`, `CEIL`, `SQRT`, comparisons (`LT LE GT GE EQ
//! NE`), `IF`, `UN`, `ISINF`, `ADDNAN`, `UNKN`, `INF`, `NEGINF`, `DUP`,
//! `POP`, `EXC`. Anything else makes the expression refused (and the field
//! kept as stored).

/// Tokens an expression may hold, at most (plugins use 3 to 5).
pub const MAX_TOKENS: usize = 64;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(f64),
    Field(String),
    Op(Op),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Min,
    Max,
    Limit,
    Abs,
    Floor,
    Ceil,
    Sqrt,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    If,
    Un,
    IsInf,
    AddNan,
    Unkn,
    Inf,
    NegInf,
    Dup,
    Pop,
    Exc,
}

impl Op {
    fn parse(t: &str) -> Option<Self> {
        Some(match t {
            "+" => Self::Add,
            "-" => Self::Sub,
            "*" => Self::Mul,
            "/" => Self::Div,
            "%" => Self::Mod,
            "MIN" => Self::Min,
            "MAX" => Self::Max,
            "LIMIT" => Self::Limit,
            "ABS" => Self::Abs,
            "FLOOR" => Self::Floor,
            "CEIL" => Self::Ceil,
            "SQRT" => Self::Sqrt,
            "LT" => Self::Lt,
            "LE" => Self::Le,
            "GT" => Self::Gt,
            "GE" => Self::Ge,
            "EQ" => Self::Eq,
            "NE" => Self::Ne,
            "IF" => Self::If,
            "UN" => Self::Un,
            "ISINF" => Self::IsInf,
            "ADDNAN" => Self::AddNan,
            "UNKN" => Self::Unkn,
            "INF" => Self::Inf,
            "NEGINF" => Self::NegInf,
            "DUP" => Self::Dup,
            "POP" => Self::Pop,
            "EXC" => Self::Exc,
            _ => return None,
        })
    }

    /// Operands taken, operands pushed.
    fn arity(self) -> (usize, usize) {
        match self {
            Self::Unkn | Self::Inf | Self::NegInf => (0, 1),
            Self::Abs | Self::Floor | Self::Ceil | Self::Sqrt | Self::Un | Self::IsInf => (1, 1),
            Self::Dup => (1, 2),
            Self::Pop => (1, 0),
            Self::Exc => (2, 2),
            Self::If | Self::Limit => (3, 1),
            _ => (2, 1),
        }
    }
}

/// A parsed `cdef`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cdef {
    tokens: Vec<Token>,
}

fn bool_f(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

impl Cdef {
    /// Reads `text`; an expression that cannot leave exactly one value
    /// (`in,*`), or holds an unknown operator, is refused with the reason.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        let mut depth: usize = 0;
        for t in text.trim().split(',') {
            let t = t.trim();
            if tokens.len() >= MAX_TOKENS {
                return Err(format!("more than {MAX_TOKENS} terms"));
            }
            let token = if let Some(op) = Op::parse(t) {
                let (take, give) = op.arity();
                if depth < take {
                    return Err(format!("{t} needs {take} operand(s)"));
                }
                depth = depth - take + give;
                Token::Op(op)
            } else if let Ok(n) = t.parse::<f64>() {
                if !n.is_finite() {
                    return Err(format!("{t:?} is not a number rrdtool reads"));
                }
                depth += 1;
                Token::Num(n)
            } else if !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                depth += 1;
                Token::Field(super::output::sanitise_field(t))
            } else {
                return Err(format!(
                    "{t:?} is neither a field, a number nor an operator"
                ));
            };
            tokens.push(token);
        }
        if depth != 1 {
            return Err(format!("leaves {depth} values, not one"));
        }
        Ok(Self { tokens })
    }

    /// The fields the expression reads.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().filter_map(|t| match t {
            Token::Field(f) => Some(f.as_str()),
            _ => None,
        })
    }

    /// The value, with `field` giving each field's value (`None`: unknown).
    /// `None` when the result is unknown.
    pub fn eval(&self, field: impl Fn(&str) -> Option<f64>) -> Option<f64> {
        let mut stack: Vec<f64> = Vec::with_capacity(8);
        for t in &self.tokens {
            match t {
                Token::Num(n) => stack.push(*n),
                Token::Field(f) => stack.push(field(f).unwrap_or(f64::NAN)),
                Token::Op(op) => apply(*op, &mut stack)?,
            }
        }
        let v = stack.pop()?;
        (!v.is_nan()).then_some(v)
    }
}

fn apply(op: Op, s: &mut Vec<f64>) -> Option<()> {
    let (take, _) = op.arity();
    if s.len() < take {
        return None;
    }
    let v = match op {
        Op::Unkn => f64::NAN,
        Op::Inf => f64::INFINITY,
        Op::NegInf => f64::NEG_INFINITY,
        Op::Abs => s.pop()?.abs(),
        Op::Floor => s.pop()?.floor(),
        Op::Ceil => s.pop()?.ceil(),
        Op::Sqrt => s.pop()?.sqrt(),
        Op::Un => bool_f(s.pop()?.is_nan()),
        Op::IsInf => bool_f(s.pop()?.is_infinite()),
        Op::Dup => *s.last()?,
        Op::Pop => {
            s.pop()?;
            return Some(());
        }
        Op::Exc => {
            let n = s.len();
            s.swap(n - 1, n - 2);
            return Some(());
        }
        Op::If => {
            let (b, a, c) = (s.pop()?, s.pop()?, s.pop()?);
            // rrdtool: A,B,C,IF is B when A is not 0 (nor unknown), else C.
            let (cond, then, otherwise) = (c, a, b);
            if cond.is_nan() {
                f64::NAN
            } else if cond != 0.0 {
                then
            } else {
                otherwise
            }
        }
        Op::Limit => {
            let (hi, lo, x) = (s.pop()?, s.pop()?, s.pop()?);
            if x.is_nan() || lo.is_nan() || hi.is_nan() || x < lo || x > hi {
                f64::NAN
            } else {
                x
            }
        }
        _ => {
            let (b, a) = (s.pop()?, s.pop()?);
            let unknown = a.is_nan() || b.is_nan();
            match op {
                Op::Add => a + b,
                Op::Sub => a - b,
                Op::Mul => a * b,
                Op::Div => a / b,
                Op::Mod => a % b,
                Op::Min if unknown => f64::NAN,
                Op::Min => a.min(b),
                Op::Max if unknown => f64::NAN,
                Op::Max => a.max(b),
                Op::AddNan => match (a.is_nan(), b.is_nan()) {
                    (true, true) => f64::NAN,
                    (true, false) => b,
                    (false, true) => a,
                    (false, false) => a + b,
                },
                _ if unknown => f64::NAN,
                Op::Lt => bool_f(a < b),
                Op::Le => bool_f(a <= b),
                Op::Gt => bool_f(a > b),
                Op::Ge => bool_f(a >= b),
                Op::Eq => bool_f(a == b),
                Op::Ne => bool_f(a != b),
                _ => return None,
            }
        }
    };
    s.push(v);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, vars: &[(&str, f64)]) -> Option<f64> {
        Cdef::parse(text)
            .unwrap()
            .eval(|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| *v))
    }

    #[test]
    fn the_expressions_of_munin_plugins_core() {
        // if_, cpu (scaleto100), ntp_offset, squid_requests, cpuspeed.
        assert_eq!(eval("up,8,*", &[("up", 125.0)]), Some(1000.0));
        assert_eq!(eval("user,4,/", &[("user", 200.0)]), Some(50.0));
        assert_eq!(eval("offset,1000,/", &[("offset", 5.0)]), Some(0.005));
        assert_eq!(
            eval(
                "requests,hits,-,errors,-",
                &[("requests", 10.0), ("hits", 6.0), ("errors", 1.0)]
            ),
            Some(3.0)
        );
        assert_eq!(
            eval("cpu0,1000,*,2400000,/", &[("cpu0", 1_200_000.0)]),
            Some(500.0)
        );
        // An unknown operand: unknown, no sample.
        assert_eq!(eval("up,8,*", &[]), None);
        assert_eq!(eval("a,b,-", &[("a", 1.0)]), None);
    }

    #[test]
    fn the_rest_of_the_common_set() {
        let v = [("a", 5.0), ("b", -2.0)];
        assert_eq!(eval("a,b,MAX", &v), Some(5.0));
        assert_eq!(eval("b,ABS", &v), Some(2.0));
        assert_eq!(eval("a,0,GT,a,0,IF", &v), Some(5.0));
        assert_eq!(eval("b,0,GT,b,0,IF", &v), Some(0.0));
        assert_eq!(eval("x,UN,0,x,IF", &v), Some(0.0));
        assert_eq!(eval("a,x,ADDNAN", &v), Some(5.0));
        assert_eq!(eval("a,0,4,LIMIT", &v), None);
        assert_eq!(eval("a,b,EXC,-", &v), Some(-7.0));
        assert_eq!(eval("a,DUP,*", &v), Some(25.0));
        assert_eq!(eval("a,7,%", &v), Some(5.0));
    }

    #[test]
    fn broken_expressions_are_refused_with_the_reason() {
        for (text, reason) in [
            ("in,*", "* needs 2 operand(s)"),
            ("in,8", "leaves 2 values, not one"),
            ("in,8,^", "\"^\" is neither"),
            ("", "\"\" is neither"),
            ("a b,1,+", "\"a b\" is neither"),
        ] {
            let err = Cdef::parse(text).unwrap_err();
            assert!(err.starts_with(reason), "{text}: {err}");
        }
        let long = vec!["1"; 100].join(",");
        assert!(Cdef::parse(&long).is_err());
    }
}
