//! Lenient value coercions the reference asks for (booleans written as
//! strings, hardware sizes written as floats or strings).

use toml::Value;

/// The TOML type of a value, for messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// `enabled`-style flags. Hand-edited manifests and env-templated ones
/// write booleans as strings, so the reference accepts
/// "true"/"false"/"yes"/"no"/"on"/"off"/"1"/"0" (any case, surrounding
/// blanks ignored) and, for the same reason, the integers 1 and 0.
pub(crate) fn boolean(value: &Value) -> Result<bool, String> {
    match value {
        Value::Boolean(b) => Ok(*b),
        Value::Integer(1) => Ok(true),
        Value::Integer(0) => Ok(false),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(format!(
                "expected a boolean or one of \"true\"/\"false\"/\"yes\"/\"no\"/\"on\"/\"off\"/\"1\"/\"0\", found {s:?}"
            )),
        },
        other => Err(format!("expected a boolean, found {}", type_name(other))),
    }
}

/// A whole number from an integer, a float (rounded down) or a string
/// holding either. Saturates instead of overflowing, so a huge value still
/// clamps to the ceiling. NaN and non-numbers are errors: there is no
/// sensible size to pick for them.
pub(crate) fn whole_number(value: &Value) -> Result<i64, String> {
    match value {
        Value::Integer(n) => Ok(*n),
        Value::Float(f) => float_to_whole(*f),
        Value::String(s) => {
            let t = s.trim();
            if let Ok(n) = t.parse::<i64>() {
                return Ok(n);
            }
            match t.parse::<f64>() {
                // Rust also parses "inf"/"nan"; nobody means those in a string.
                Ok(f) if f.is_finite() => float_to_whole(f),
                _ => Err(format!("expected a whole number, found {s:?}")),
            }
        }
        other => Err(format!(
            "expected a whole number, found {}",
            type_name(other)
        )),
    }
}

fn float_to_whole(f: f64) -> Result<i64, String> {
    if f.is_nan() {
        return Err("expected a whole number, found nan".to_owned());
    }
    // `as` saturates at i64::MIN/MAX (and maps ±inf there), which is exactly
    // what clamping wants.
    Ok(f.floor() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boolean_strings() {
        for s in ["true", "yes", "on", "1", "TRUE", " Yes "] {
            assert_eq!(boolean(&Value::String(s.into())), Ok(true), "{s}");
        }
        for s in ["false", "no", "off", "0", "Off"] {
            assert_eq!(boolean(&Value::String(s.into())), Ok(false), "{s}");
        }
        assert!(boolean(&Value::String("maybe".into())).is_err());
        assert!(boolean(&Value::Integer(2)).is_err());
        assert!(boolean(&Value::Float(1.0)).is_err());
    }

    #[test]
    fn whole_numbers() {
        assert_eq!(whole_number(&Value::Integer(4)), Ok(4));
        assert_eq!(whole_number(&Value::Float(4.9)), Ok(4));
        assert_eq!(whole_number(&Value::String(" 8 ".into())), Ok(8));
        assert_eq!(whole_number(&Value::String("2.5".into())), Ok(2));
        assert_eq!(whole_number(&Value::Float(f64::INFINITY)), Ok(i64::MAX));
        assert_eq!(whole_number(&Value::Float(1e300)), Ok(i64::MAX));
        assert!(whole_number(&Value::Float(f64::NAN)).is_err());
        assert!(whole_number(&Value::String("four".into())).is_err());
        assert!(whole_number(&Value::String("inf".into())).is_err());
        assert!(whole_number(&Value::Boolean(true)).is_err());
    }
}
