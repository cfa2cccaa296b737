//! A rule's action list: `id:942100,phase:2,block,t:none,t:urlDecodeUni,msg:'...',
//! setvar:'tx.score=+%{tx.critical_anomaly_score}',chain`. Values may be in single
//! quotes (which may hold commas); names are checked, and so are the values the
//! engine relies on (ids, phases, severities, transformations, setvar and ctl forms).

use crate::error::Bad;
use crate::variables::{self, Variable};

names! {
    /// The transformations (`t:`).
    Transform {
        None => ["none"],
        Base64Decode => ["base64Decode"],
        Base64DecodeExt => ["base64DecodeExt"],
        Base64Encode => ["base64Encode"],
        CmdLine => ["cmdLine"],
        CompressWhitespace => ["compressWhitespace"],
        CssDecode => ["cssDecode"],
        EscapeSeqDecode => ["escapeSeqDecode"],
        HexDecode => ["hexDecode"],
        HexEncode => ["hexEncode"],
        HtmlEntityDecode => ["htmlEntityDecode"],
        JsDecode => ["jsDecode"],
        Length => ["length"],
        Lowercase => ["lowercase"],
        Md5 => ["md5"],
        NormalizePath => ["normalizePath", "normalisePath"],
        NormalizePathWin => ["normalizePathWin", "normalisePathWin"],
        ParityEven7bit => ["parityEven7bit"],
        ParityOdd7bit => ["parityOdd7bit"],
        ParityZero7bit => ["parityZero7bit"],
        RemoveComments => ["removeComments"],
        RemoveCommentsChar => ["removeCommentsChar"],
        RemoveNulls => ["removeNulls"],
        RemoveWhitespace => ["removeWhitespace"],
        ReplaceComments => ["replaceComments"],
        ReplaceNulls => ["replaceNulls"],
        Sha1 => ["sha1"],
        SqlHexDecode => ["sqlHexDecode"],
        Trim => ["trim"],
        TrimLeft => ["trimLeft"],
        TrimRight => ["trimRight"],
        Uppercase => ["uppercase"],
        UrlDecode => ["urlDecode"],
        UrlDecodeUni => ["urlDecodeUni"],
        UrlEncode => ["urlEncode"],
        Utf8ToUnicode => ["utf8toUnicode"],
    }
}

/// What `setvar` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetOp {
    Set(String),
    Add(String),
    Sub(String),
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetVar {
    /// The collection, lower case (`tx`, `ip`, `session`, ...).
    pub collection: String,
    /// The variable's name; may hold macros.
    pub name: String,
    pub op: SetOp,
}

/// The engine mode (`SecRuleEngine`, `ctl:ruleEngine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineMode {
    On,
    Off,
    DetectionOnly,
}

impl EngineMode {
    pub fn parse(s: &str) -> Option<EngineMode> {
        match s.to_ascii_lowercase().as_str() {
            "on" => Some(EngineMode::On),
            "off" => Some(EngineMode::Off),
            "detectiononly" => Some(EngineMode::DetectionOnly),
            _ => None,
        }
    }
}

/// An inclusive range of rule ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange(pub u32, pub u32);

impl IdRange {
    pub fn parse(s: &str) -> Option<IdRange> {
        let s = s.trim();
        match s.split_once('-') {
            Some((a, b)) => Some(IdRange(a.trim().parse().ok()?, b.trim().parse().ok()?)),
            None => s.parse().ok().map(|n| IdRange(n, n)),
        }
    }

    pub fn contains(&self, id: u32) -> bool {
        (self.0..=self.1).contains(&id)
    }
}

/// `ctl:` changes to the current transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ctl {
    RuleEngine(EngineMode),
    RuleRemoveById(Vec<IdRange>),
    RuleRemoveByTag(String),
    RuleRemoveTargetById(IdRange, Vec<Variable>),
    RuleRemoveTargetByTag(String, Vec<Variable>),
    RequestBodyProcessor(String),
    RequestBodyAccess(bool),
    ResponseBodyAccess(bool),
    ForceRequestBodyVariable(bool),
    AuditEngine(String),
    AuditLogParts(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Id(u32),
    Phase(u8),
    Msg(String),
    LogData(String),
    Tag(String),
    Severity(u8),
    Ver(String),
    Rev(String),
    Maturity(String),
    Accuracy(String),
    T(Transform),
    SetVar(SetVar),
    Chain,
    SkipAfter(String),
    Skip(u32),
    Deny,
    Block,
    Pass,
    Drop,
    Allow,
    Redirect(String),
    Status(u16),
    Capture,
    MultiMatch,
    Log,
    NoLog,
    AuditLog,
    NoAuditLog,
    Ctl(Ctl),
    /// `expirevar`, `initcol`, `setenv`, `setuid`, `setsid`, `sanitise*`, `exec`,
    /// `append`, `prepend`, `xmlns`, `deprecatevar`: accepted, with their value.
    Other(&'static str, String),
}

/// Parses an action list.
pub fn parse(s: &str) -> Result<Vec<Action>, Bad> {
    split(s)?
        .into_iter()
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, value)| action(&name, value))
        .collect()
}

/// Cuts the list at commas outside single quotes, into names and unquoted values.
fn split(s: &str) -> Result<Vec<(String, Option<String>)>, Bad> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == ':' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let name = name.trim().to_string();
        if chars.peek() != Some(&':') {
            out.push((name, None));
            continue;
        }
        chars.next();
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '\\' && chars.peek() == Some(&'\'') {
                    value.push('\'');
                    chars.next();
                } else if c == '\'' {
                    closed = true;
                    break;
                } else {
                    value.push(c);
                }
            }
            if !closed {
                return Err(Bad::new(
                    format!("{name}:'{value}"),
                    "unterminated quoted value",
                ));
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek().is_some_and(|c| *c != ',') {
                return Err(Bad::new(
                    format!("{name}:'{value}'"),
                    "text after a quoted value",
                ));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim_end().to_string();
        }
        out.push((name, Some(value)));
    }
    Ok(out)
}

fn action(name: &str, value: Option<String>) -> Result<Action, Bad> {
    let lower = name.to_ascii_lowercase();
    let needs = |v: Option<String>| -> Result<String, Bad> {
        v.ok_or_else(|| Bad::new(name, format!("{name} needs a value")))
    };
    let flag = |a: Action, v: &Option<String>| -> Result<Action, Bad> {
        match v {
            None => Ok(a),
            Some(_) => Err(Bad::new(name, format!("{name} takes no value"))),
        }
    };
    Ok(match lower.as_str() {
        "id" => {
            let v = needs(value)?;
            match v.trim().parse::<u32>() {
                Ok(n) if n > 0 => Action::Id(n),
                _ => return Err(Bad::new(format!("id:{v}"), "an id is a positive integer")),
            }
        }
        "phase" => {
            let v = needs(value)?;
            let p = match v.trim().to_ascii_lowercase().as_str() {
                "request" => 2,
                "response" => 4,
                "logging" => 5,
                n => n.parse::<u8>().unwrap_or(0),
            };
            if !(1..=5).contains(&p) {
                return Err(Bad::new(format!("phase:{v}"), "phase is 1 to 5"));
            }
            Action::Phase(p)
        }
        "msg" => Action::Msg(needs(value)?),
        "logdata" => Action::LogData(needs(value)?),
        "tag" => Action::Tag(needs(value)?),
        "severity" => {
            let v = needs(value)?;
            let n = match v.trim().to_ascii_uppercase().as_str() {
                "EMERGENCY" => 0,
                "ALERT" => 1,
                "CRITICAL" => 2,
                "ERROR" => 3,
                "WARNING" => 4,
                "NOTICE" => 5,
                "INFO" => 6,
                "DEBUG" => 7,
                n => match n.parse::<u8>() {
                    Ok(n) if n <= 7 => n,
                    _ => return Err(Bad::new(format!("severity:{v}"), "unknown severity")),
                },
            };
            Action::Severity(n)
        }
        "ver" => Action::Ver(needs(value)?),
        "rev" => Action::Rev(needs(value)?),
        "maturity" => Action::Maturity(needs(value)?),
        "accuracy" => Action::Accuracy(needs(value)?),
        "t" => {
            let v = needs(value)?;
            Action::T(
                Transform::parse(v.trim())
                    .ok_or_else(|| Bad::new(format!("t:{v}"), "unknown transformation"))?,
            )
        }
        "setvar" => Action::SetVar(setvar(&needs(value)?)?),
        "chain" => flag(Action::Chain, &value)?,
        "skipafter" => Action::SkipAfter(needs(value)?),
        "skip" => {
            let v = needs(value)?;
            match v.trim().parse::<u32>() {
                Ok(n) if n > 0 => Action::Skip(n),
                _ => return Err(Bad::new(format!("skip:{v}"), "skip takes a positive count")),
            }
        }
        "deny" => flag(Action::Deny, &value)?,
        "block" => flag(Action::Block, &value)?,
        "pass" => flag(Action::Pass, &value)?,
        "drop" => flag(Action::Drop, &value)?,
        "allow" => Action::Allow,
        "redirect" => Action::Redirect(needs(value)?),
        "status" => {
            let v = needs(value)?;
            match v.trim().parse::<u16>() {
                Ok(n) if (100..=599).contains(&n) => Action::Status(n),
                _ => return Err(Bad::new(format!("status:{v}"), "status is an HTTP status")),
            }
        }
        "capture" => flag(Action::Capture, &value)?,
        "multimatch" => flag(Action::MultiMatch, &value)?,
        "log" => flag(Action::Log, &value)?,
        "nolog" => flag(Action::NoLog, &value)?,
        "auditlog" => flag(Action::AuditLog, &value)?,
        "noauditlog" => flag(Action::NoAuditLog, &value)?,
        "ctl" => Action::Ctl(ctl(&needs(value)?)?),
        other => {
            const ACCEPTED: &[&str] = &[
                "expirevar",
                "initcol",
                "setenv",
                "setuid",
                "setsid",
                "setrsc",
                "sanitisearg",
                "sanitisematched",
                "sanitisematchedbytes",
                "sanitiserequestheader",
                "sanitiseresponseheader",
                "exec",
                "append",
                "prepend",
                "xmlns",
                "deprecatevar",
                "proxy",
                "pause",
            ];
            match ACCEPTED.iter().find(|a| **a == other) {
                Some(a) => Action::Other(a, value.unwrap_or_default()),
                None => return Err(Bad::new(name, "unknown action")),
            }
        }
    })
}

fn setvar(v: &str) -> Result<SetVar, Bad> {
    let v = v.trim();
    // `=+n` adds, `=-n` subtracts, `=v` sets, `!` deletes; no value sets 1.
    let (target, op) = if let Some(rest) = v.strip_prefix('!') {
        (rest, SetOp::Delete)
    } else {
        match v.split_once('=') {
            Some((t, val)) => match (val.strip_prefix('+'), val.strip_prefix('-')) {
                (Some(n), _) => (t, SetOp::Add(n.to_string())),
                (_, Some(n)) => (t, SetOp::Sub(n.to_string())),
                _ => (t, SetOp::Set(val.to_string())),
            },
            None => (v, SetOp::Set("1".to_string())),
        }
    };
    let Some((collection, name)) = target.split_once('.') else {
        return Err(Bad::new(
            format!("setvar:{v}"),
            "setvar needs collection.name",
        ));
    };
    if collection.is_empty() || name.is_empty() {
        return Err(Bad::new(
            format!("setvar:{v}"),
            "setvar needs collection.name",
        ));
    }
    Ok(SetVar {
        collection: collection.to_ascii_lowercase(),
        name: name.to_string(),
        op,
    })
}

fn on_off(name: &str, v: &str) -> Result<bool, Bad> {
    match v.trim().to_ascii_lowercase().as_str() {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(Bad::new(format!("ctl:{name}={v}"), "expected On or Off")),
    }
}

fn ctl(v: &str) -> Result<Ctl, Bad> {
    let bad = |m: &str| Bad::new(format!("ctl:{v}"), m.to_string());
    let (name, value) = v
        .split_once('=')
        .ok_or_else(|| bad("ctl needs name=value"))?;
    let target_of = |value: &str| -> Result<(String, Vec<Variable>), Bad> {
        let (what, targets) = value
            .split_once(';')
            .ok_or_else(|| bad("expected `rule;TARGETS`"))?;
        Ok((what.to_string(), variables::parse(targets)?))
    };
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "ruleengine" => {
            Ctl::RuleEngine(EngineMode::parse(value).ok_or_else(|| bad("unknown engine mode"))?)
        }
        "ruleremovebyid" => Ctl::RuleRemoveById(
            value
                .split_whitespace()
                .map(|r| IdRange::parse(r).ok_or_else(|| bad("expected ids or id ranges")))
                .collect::<Result<_, _>>()?,
        ),
        "ruleremovebytag" => Ctl::RuleRemoveByTag(value.to_string()),
        "ruleremovetargetbyid" => {
            let (id, targets) = target_of(value)?;
            Ctl::RuleRemoveTargetById(
                IdRange::parse(&id).ok_or_else(|| bad("expected an id"))?,
                targets,
            )
        }
        "ruleremovetargetbytag" => {
            let (tag, targets) = target_of(value)?;
            Ctl::RuleRemoveTargetByTag(tag, targets)
        }
        "requestbodyprocessor" => Ctl::RequestBodyProcessor(value.trim().to_ascii_uppercase()),
        "requestbodyaccess" => Ctl::RequestBodyAccess(on_off(name, value)?),
        "responsebodyaccess" => Ctl::ResponseBodyAccess(on_off(name, value)?),
        "forcerequestbodyvariable" => Ctl::ForceRequestBodyVariable(on_off(name, value)?),
        "auditengine" => Ctl::AuditEngine(value.to_string()),
        "auditlogparts" => Ctl::AuditLogParts(value.to_string()),
        _ => return Err(bad("unknown ctl")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crs_action_list() {
        let a = parse("id:942100,    phase:2,block,capture,t:none,t:urlDecodeUni,msg:'SQL Injection, via libinjection',logdata:'Matched Data: %{TX.0} found within %{MATCHED_VAR_NAME}: %{MATCHED_VAR}',tag:'paranoia-level/1',severity:'CRITICAL',setvar:'tx.sql_injection_score=+%{tx.critical_anomaly_score}',setvar:'tx.inbound_anomaly_score_pl1=+%{tx.critical_anomaly_score}',ctl:ruleRemoveTargetById=942100;ARGS:foo,chain").expect("parses");
        assert_eq!(a[0], Action::Id(942100));
        assert_eq!(a[1], Action::Phase(2));
        assert_eq!(a[5], Action::T(Transform::UrlDecodeUni));
        assert_eq!(a[6], Action::Msg("SQL Injection, via libinjection".into()));
        assert_eq!(a[9], Action::Severity(2));
        assert_eq!(
            a[10],
            Action::SetVar(SetVar {
                collection: "tx".into(),
                name: "sql_injection_score".into(),
                op: SetOp::Add("%{tx.critical_anomaly_score}".into())
            })
        );
        assert!(matches!(
            a[12],
            Action::Ctl(Ctl::RuleRemoveTargetById(IdRange(942100, 942100), _))
        ));
        assert_eq!(a[13], Action::Chain);
    }

    #[test]
    fn setvar_forms() {
        let op = |s: &str| setvar(s).expect("setvar").op;
        assert_eq!(op("tx.a=1"), SetOp::Set("1".into()));
        assert_eq!(op("tx.a=+5"), SetOp::Add("5".into()));
        assert_eq!(op("tx.a=-5"), SetOp::Sub("5".into()));
        assert_eq!(op("tx.a=-%{tx.b}"), SetOp::Sub("%{tx.b}".into()));
        assert_eq!(op("!tx.a"), SetOp::Delete);
        assert_eq!(op("tx.a"), SetOp::Set("1".into()));
        assert!(setvar("nodot=1").is_err());
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(parse("id:1,bogus").expect_err("unknown").token, "bogus");
        assert!(parse("id:0").is_err());
        assert!(parse("phase:9").is_err());
        assert!(parse("t:nonsense").is_err());
        assert!(parse("msg:'open").is_err());
        assert!(parse("ctl:ruleEngine=Maybe").is_err());
        assert_eq!(
            parse("ctl:ruleRemoveById=920100-920199 942100").expect("ranges"),
            vec![Action::Ctl(Ctl::RuleRemoveById(vec![
                IdRange(920100, 920199),
                IdRange(942100, 942100)
            ]))]
        );
    }
}
