//! Environment variables a config names: the one place that says what is
//! wrong with one.
//!
//! Secrets and credentials are never written in the config itself; a field
//! names the variable (`secret_env`, `client_id_env`, …) and the value is
//! read at start. In Envoy a Wasm VM sees only the variables listed under
//! `vm_config.environment_variables.host_env_keys`, so a variable set in the
//! shell but missing from that list reads as unset: the message says both.
//! A message names the variable, never its value.

use crate::placeholder;

/// Reads an environment variable (in the VM, `std::env::var`).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Where Envoy lists the variables a Wasm VM may read.
pub const HOST_ENV_KEYS: &str = "vm_config.environment_variables.host_env_keys";

/// The value of `var`, or why it cannot be used: the name is blank, the
/// variable is unset, empty, or still a placeholder. The value is returned
/// as read; whitespace is for the caller to judge.
pub fn read(env: Env<'_>, var: &str) -> Result<String, String> {
    if var.trim().is_empty() {
        return Err("must name an environment variable".to_owned());
    }
    let Some(value) = env(var) else {
        return Err(not_set(var));
    };
    if value.trim().is_empty() {
        return Err(format!("environment variable {var} is empty"));
    }
    if placeholder::is_placeholder(&value) {
        return Err(format!(
            "environment variable {var} still holds a placeholder ({}…): set it to the real value",
            placeholder::MARKER
        ));
    }
    Ok(value)
}

/// The message for a variable the VM does not see.
pub fn not_set(var: &str) -> String {
    format!(
        "environment variable {var} is not set: set it in Envoy's environment and list it \
         under {HOST_ENV_KEYS} (the filter sees only the variables listed there)"
    )
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn each_way_a_variable_fails_is_told_without_its_value() {
        let env = |k: &str| match k {
            "GOOD" => Some(" a value ".to_owned()),
            "BLANK" => Some("  ".to_owned()),
            "TODO" => Some("replace-with-the-client-secret".to_owned()),
            _ => None,
        };
        assert_eq!(read(&env, "GOOD").unwrap(), " a value ");
        assert_eq!(
            read(&env, " ").unwrap_err(),
            "must name an environment variable"
        );
        assert_eq!(
            read(&env, "MISSING").unwrap_err(),
            "environment variable MISSING is not set: set it in Envoy's environment and list \
             it under vm_config.environment_variables.host_env_keys (the filter sees only the \
             variables listed there)"
        );
        assert_eq!(
            read(&env, "BLANK").unwrap_err(),
            "environment variable BLANK is empty"
        );
        let e = read(&env, "TODO").unwrap_err();
        assert!(e.contains("TODO still holds a placeholder"), "{e}");
        assert!(!e.contains("client-secret"), "{e}");
    }
}
