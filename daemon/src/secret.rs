//! A string that must never be printed: tokens, codes, verifiers, client secrets.

use std::fmt;

/// Holds a secret value. `Debug` prints `Secret(***)`, there is no `Display`, and the only
/// way to the value is [`Secret::expose`], so a secret reaches a log or an error message
/// only through a call that says so. Its bytes are zeroed when it is dropped, so a freed
/// token does not linger in the heap (or a swap page) until reused.
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

impl Secret {
    /// Overwrites the value with zeros in place (what `drop` does).
    fn wipe(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.wipe();
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

    #[test]
    fn the_value_is_zeroed_on_drop() {
        let mut s = Secret::new("rt_very-secret-value");
        let (ptr, len) = (s.0.as_ptr(), s.0.len());
        // What drop runs; the buffer stays allocated until `s` itself goes.
        s.wipe();
        // SAFETY: ptr..ptr+len lies in the live allocation of `s.0` (zeroize keeps the
        // capacity), and every byte of it was written by the wipe.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
        assert!(bytes.iter().all(|&b| b == 0), "{bytes:?}");
        drop(s);
    }
}
