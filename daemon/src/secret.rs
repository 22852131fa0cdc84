//! A string that must never be printed: tokens, codes, verifiers, client secrets.

use std::fmt;

/// Holds a secret value. `Debug` prints `Secret(***)`, there is no `Display`, and the only
/// way to the value is [`Secret::expose`], so a secret reaches a log or an error message
/// only through a call that says so.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The value is wiped from memory when dropped (the DPoP private key is one of them).
impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("rt_very-secret-value");
        let printed = format!("{s:?} {:?} {:#?}", Some(&s), vec![s.clone()]);
        assert!(!printed.contains("very-secret"), "{printed}");
        assert_eq!(s.expose(), "rt_very-secret-value");
    }
}
