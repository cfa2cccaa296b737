//! A rule's operator: `"@name argument"`, `"!@name argument"`, or a bare pattern
//! (which means `@rx`).

use crate::error::Bad;

names! {
    /// The SecLang operators.
    OpName {
        BeginsWith => ["beginsWith"],
        Contains => ["contains"],
        ContainsWord => ["containsWord"],
        DetectSqli => ["detectSQLi"],
        DetectXss => ["detectXSS"],
        EndsWith => ["endsWith"],
        Eq => ["eq"],
        Ge => ["ge"],
        GeoLookup => ["geoLookup"],
        Gt => ["gt"],
        InspectFile => ["inspectFile"],
        IpMatch => ["ipMatch"],
        IpMatchFromFile => ["ipMatchFromFile", "ipMatchF"],
        Le => ["le"],
        Lt => ["lt"],
        NoMatch => ["noMatch"],
        Pm => ["pm"],
        PmFromFile => ["pmFromFile", "pmf"],
        Rbl => ["rbl"],
        Rx => ["rx"],
        RxGlobal => ["rxGlobal"],
        Streq => ["streq"],
        Strmatch => ["strmatch"],
        UnconditionalMatch => ["unconditionalMatch"],
        ValidateByteRange => ["validateByteRange"],
        ValidateDtd => ["validateDTD"],
        ValidateHash => ["validateHash"],
        ValidateSchema => ["validateSchema"],
        ValidateUrlEncoding => ["validateUrlEncoding"],
        ValidateUtf8Encoding => ["validateUtf8Encoding"],
        VerifyCc => ["verifyCC"],
        VerifyCpf => ["verifyCPF"],
        VerifySsn => ["verifySSN"],
        Within => ["within"],
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub name: OpName,
    pub negated: bool,
    /// As written (macros such as `%{tx.x}` are expanded when the rule runs).
    pub argument: String,
}

pub fn parse(s: &str) -> Result<Operator, Bad> {
    let mut rest = s.trim_start();
    let negated = match rest.strip_prefix('!') {
        Some(r) => {
            rest = r.trim_start();
            true
        }
        None => false,
    };
    let Some(op) = rest.strip_prefix('@') else {
        return Ok(Operator {
            name: OpName::Rx,
            negated,
            argument: rest.to_string(),
        });
    };
    let end = op.find(char::is_whitespace).unwrap_or(op.len());
    let word = &op[..end];
    let name = OpName::parse(word).ok_or_else(|| Bad::new(word, "unknown operator"))?;
    let argument = op[end..].strip_prefix(char::is_whitespace).unwrap_or("");
    let needs_argument = !matches!(
        name,
        OpName::DetectSqli
            | OpName::DetectXss
            | OpName::UnconditionalMatch
            | OpName::NoMatch
            | OpName::ValidateUrlEncoding
            | OpName::ValidateUtf8Encoding
            | OpName::GeoLookup
    );
    if needs_argument && argument.is_empty() {
        return Err(Bad::new(s, format!("@{word} needs an argument")));
    }
    Ok(Operator {
        name,
        negated,
        argument: argument.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let o = parse("!@rx ^(?:a b)$").expect("rx");
        assert_eq!(
            (o.name, o.negated, o.argument.as_str()),
            (OpName::Rx, true, "^(?:a b)$")
        );
        assert_eq!(parse("@detectSQLi").expect("bare").name, OpName::DetectSqli);
        assert_eq!(parse("foo|bar").expect("implicit").name, OpName::Rx);
        assert_eq!(
            parse("@pmf x.data").expect("alias").name,
            OpName::PmFromFile
        );
        assert_eq!(parse("@nope 1").expect_err("unknown").token, "nope");
        assert!(parse("@eq").is_err());
    }
}
