//! The north-south security engine, independent of the proxy: a SecLang (ModSecurity
//! rule language) engine that loads the OWASP Core Rule Set unmodified and judges HTTP
//! exchanges with it (`Transaction`), phase by phase.

/// An enum of SecLang names, each with its spellings (matched ignoring case), and its
/// `parse`.
macro_rules! names {
    ($(#[$doc:meta])* $enum:ident { $($name:ident => [$($text:literal),+]),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $enum { $($name),* }

        impl $enum {
            pub fn parse(s: &str) -> Option<$enum> {
                $($(if s.eq_ignore_ascii_case($text) { return Some($enum::$name); })+)*
                None
            }
        }
    };
}

pub mod actions;
pub mod adaptive;
pub mod body;
pub mod directive;
pub mod error;
pub mod exchange;
pub mod ipacl;
pub mod lexer;
pub mod load;
pub mod macros;
pub mod matched;
pub mod operator;
pub mod operators;
pub mod pattern;
pub mod prefilter;
pub mod prologue;
pub mod ratelimit;
pub mod ruleset;
pub mod store;
pub mod target;
pub mod transaction;
pub mod transform;
pub mod variables;

pub use directive::{Directive, Rule};
pub use error::ParseError;
pub use load::{load_file, load_str, Located};
pub use ruleset::RuleSet;
pub use transaction::{InterruptAction, Interruption, Transaction};
