//! The checks every config section makes of one field, each problem naming
//! the field: a number within its range, the environment variable it names.
//!
//! Each check names its problem with the field as the caller gives it: the
//! sources are given where they sit and name theirs from the root
//! (`sources.pagerduty.auth[0].secret_env`); the genesys and itsm sections
//! name theirs within the section (`limits.burst`), and the config puts
//! them under it with [`FieldError::under`].

use std::fmt;

use crate::envvar::{self, Env};
use crate::problem::FieldError;

/// `v`, with a problem named `field` pushed when it is outside `min..=max`.
/// The value is returned either way, so the checks that depend on it still
/// run and the config is refused with all its problems at once.
pub fn in_range<T: PartialOrd + fmt::Display + Copy>(
    field: &str,
    v: T,
    min: T,
    max: T,
    problems: &mut Vec<FieldError>,
) -> T {
    if v < min || v > max {
        problems.push(FieldError::new(
            field,
            format!("must be between {min} and {max}, got {v}"),
        ));
    }
    v
}

/// What a variable may hold around its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spaces {
    /// Trimmed away (the Genesys and ITSM credentials).
    Trim,
    /// Refused (the secrets and credentials the intake checks deliveries
    /// against): they are compared byte for byte, so a stray space or line
    /// break would make every delivery fail, and is not guessed away.
    Refuse,
}

/// The value of the environment variable `var` that config `field` names,
/// or `None` with a problem pushed that names the field and the variable,
/// never the value ([`envvar::read`] says what is wrong with a variable).
pub fn read_env(
    env: Env<'_>,
    field: &str,
    var: &str,
    spaces: Spaces,
    problems: &mut Vec<FieldError>,
) -> Option<String> {
    let value = envvar::read(env, var)
        .map_err(|message| problems.push(FieldError::new(field, message)))
        .ok()?;
    match spaces {
        Spaces::Trim => Some(value.trim().to_owned()),
        Spaces::Refuse if value.trim() != value => {
            problems.push(FieldError::new(
                field,
                format!("environment variable {var} has leading or trailing whitespace"),
            ));
            None
        }
        Spaces::Refuse => Some(value),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn a_value_out_of_range_is_named_and_still_returned() {
        let mut problems = Vec::new();
        assert_eq!(in_range("a", 5_u32, 1, 10, &mut problems), 5);
        assert_eq!(in_range("a", 1_u32, 1, 10, &mut problems), 1);
        assert_eq!(in_range("a", 10_u32, 1, 10, &mut problems), 10);
        assert!(problems.is_empty());
        assert_eq!(in_range("limits.burst", 0_u32, 1, 300, &mut problems), 0);
        assert_eq!(
            problems,
            [FieldError::new(
                "limits.burst",
                "must be between 1 and 300, got 0"
            )]
        );
    }

    #[test]
    fn a_variable_is_trimmed_or_refused_with_spaces_as_its_field_says() {
        let env = |k: &str| match k {
            "PADDED" => Some(" value\n".to_owned()),
            "PLAIN" => Some("value".to_owned()),
            _ => None,
        };
        let mut problems = Vec::new();
        let trimmed = read_env(&env, "a_env", "PADDED", Spaces::Trim, &mut problems);
        assert_eq!(trimmed.as_deref(), Some("value"));
        let plain = read_env(&env, "a_env", "PLAIN", Spaces::Refuse, &mut problems);
        assert_eq!(plain.as_deref(), Some("value"));
        assert!(problems.is_empty());
        assert_eq!(
            read_env(&env, "b_env", "PADDED", Spaces::Refuse, &mut problems),
            None
        );
        assert_eq!(
            read_env(&env, "c_env", "MISSING", Spaces::Trim, &mut problems),
            None
        );
        assert_eq!(problems.len(), 2);
        assert_eq!(
            problems[0],
            FieldError::new(
                "b_env",
                "environment variable PADDED has leading or trailing whitespace"
            )
        );
        assert_eq!(problems[1].field, "c_env");
        assert_eq!(problems[1].message, envvar::not_set("MISSING"));
    }
}
