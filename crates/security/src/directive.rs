//! SecLang directives, checked: rules with their targets, operator and actions, and
//! the configuration directives CRS and its setup file use.

use crate::actions::{self, Action, EngineMode, IdRange};
use crate::error::Bad;
use crate::lexer::RawDirective;
use crate::operator::{self, Operator};
use crate::variables::{self, Variable};

/// `SecRule`, with the rules chained to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub variables: Vec<Variable>,
    pub operator: Operator,
    pub actions: Vec<Action>,
    /// The next rule of the chain (this rule has the `chain` action).
    pub chained: Option<Box<Rule>>,
    /// Where it is written.
    pub file: std::sync::Arc<std::path::Path>,
    pub line: usize,
}

impl Rule {
    pub fn id(&self) -> Option<u32> {
        self.actions.iter().find_map(|a| match a {
            Action::Id(n) => Some(*n),
            _ => None,
        })
    }

    pub fn starts_chain(&self) -> bool {
        self.actions.contains(&Action::Chain)
    }
}

/// What to do with a body over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitAction {
    Reject,
    ProcessPartial,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive {
    Rule(Rule),
    /// `SecAction`: actions that always run (a rule without a test).
    Action {
        actions: Vec<Action>,
        file: std::sync::Arc<std::path::Path>,
        line: usize,
    },
    Marker(String),
    RuleEngine(EngineMode),
    RequestBodyAccess(bool),
    ResponseBodyAccess(bool),
    RequestBodyLimit(u64),
    RequestBodyNoFilesLimit(u64),
    RequestBodyLimitAction(LimitAction),
    ResponseBodyLimit(u64),
    ResponseBodyLimitAction(LimitAction),
    ResponseBodyMimeType(Vec<String>),
    DefaultAction(Vec<Action>),
    RemoveById(Vec<IdRange>),
    RemoveByTag(String),
    RemoveByMsg(String),
    UpdateTargetById(IdRange, Vec<Variable>),
    UpdateTargetByTag(String, Vec<Variable>),
    UpdateActionById(u32, Vec<Action>),
    ComponentSignature(String),
    /// A directive about logging, storage or the host server, which changes no verdict.
    Ignored(String),
}

/// Directives accepted and ignored: they concern logs, files and the web server.
const IGNORED: &[&str] = &[
    "secargumentseparator",
    "secauditengine",
    "secauditlog",
    "secauditlog2",
    "secauditlogdirmode",
    "secauditlogfilemode",
    "secauditlogformat",
    "secauditlogparts",
    "secauditlogrelevantstatus",
    "secauditlogstoragedir",
    "secauditlogtype",
    "seccollectiontimeout",
    "seccookieformat",
    "secdatadir",
    "secdebuglog",
    "secdebugloglevel",
    "secgeolookupdb",
    "sechttpblkey",
    "secpcrematchlimit",
    "secpcrematchlimitrecursion",
    "secrequestbodyinmemorylimit",
    "secrequestbodyjsondepthlimit",
    "secargumentslimit",
    "secstatusengine",
    "sectmpdir",
    "sectmpsavefiles",
    "secunicodemapfile",
    "secuploaddir",
    "secuploadfilelimit",
    "secuploadfilemode",
    "secuploadkeepfiles",
    "secwebappid",
    "secxmlexternalentity",
];

fn one(d: &RawDirective) -> Result<&str, Bad> {
    match d.args.as_slice() {
        [a] => Ok(a),
        _ => Err(Bad::new(&d.name, format!("{} takes one argument", d.name))),
    }
}

fn on_off(d: &RawDirective) -> Result<bool, Bad> {
    let v = one(d)?;
    match v.to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(Bad::new(v, "expected On or Off")),
    }
}

fn number(d: &RawDirective) -> Result<u64, Bad> {
    let v = one(d)?;
    v.parse()
        .map_err(|_| Bad::new(v, "expected a number of bytes"))
}

fn limit_action(d: &RawDirective) -> Result<LimitAction, Bad> {
    let v = one(d)?;
    match v.to_ascii_lowercase().as_str() {
        "reject" => Ok(LimitAction::Reject),
        "processpartial" => Ok(LimitAction::ProcessPartial),
        _ => Err(Bad::new(v, "expected Reject or ProcessPartial")),
    }
}

fn ranges(args: &[String]) -> Result<Vec<IdRange>, Bad> {
    args.iter()
        .flat_map(|a| a.split_whitespace())
        .map(|r| IdRange::parse(r).ok_or_else(|| Bad::new(r, "expected an id or id range")))
        .collect()
}

/// Checks one directive. `Include` is the loader's, not handled here.
pub fn parse(d: &RawDirective, file: &std::sync::Arc<std::path::Path>) -> Result<Directive, Bad> {
    let name = d.name.to_ascii_lowercase();
    Ok(match name.as_str() {
        "secrule" => {
            let (vars, op, acts) = match d.args.as_slice() {
                [v, o] => (v, o, None),
                [v, o, a] => (v, o, Some(a)),
                _ => {
                    return Err(Bad::new(
                        &d.name,
                        "SecRule takes VARIABLES OPERATOR [ACTIONS]",
                    ))
                }
            };
            Directive::Rule(Rule {
                variables: variables::parse(vars)?,
                operator: operator::parse(op)?,
                actions: acts
                    .map(|a| actions::parse(a))
                    .transpose()?
                    .unwrap_or_default(),
                chained: None,
                file: file.clone(),
                line: d.line,
            })
        }
        "secaction" => Directive::Action {
            actions: actions::parse(one(d)?)?,
            file: file.clone(),
            line: d.line,
        },
        "secmarker" => Directive::Marker(one(d)?.to_string()),
        "secruleengine" => {
            let v = one(d)?;
            Directive::RuleEngine(
                EngineMode::parse(v)
                    .ok_or_else(|| Bad::new(v, "expected On, Off or DetectionOnly"))?,
            )
        }
        "secrequestbodyaccess" => Directive::RequestBodyAccess(on_off(d)?),
        "secresponsebodyaccess" => Directive::ResponseBodyAccess(on_off(d)?),
        "secrequestbodylimit" => Directive::RequestBodyLimit(number(d)?),
        "secrequestbodynofileslimit" => Directive::RequestBodyNoFilesLimit(number(d)?),
        "secrequestbodylimitaction" => Directive::RequestBodyLimitAction(limit_action(d)?),
        "secresponsebodylimit" => Directive::ResponseBodyLimit(number(d)?),
        "secresponsebodylimitaction" => Directive::ResponseBodyLimitAction(limit_action(d)?),
        "secresponsebodymimetype" => Directive::ResponseBodyMimeType(
            d.args
                .iter()
                .flat_map(|a| a.split_whitespace())
                .map(str::to_string)
                .collect(),
        ),
        "secdefaultaction" => Directive::DefaultAction(actions::parse(one(d)?)?),
        "secruleremovebyid" => Directive::RemoveById(ranges(&d.args)?),
        "secruleremovebytag" => Directive::RemoveByTag(one(d)?.to_string()),
        "secruleremovebymsg" => Directive::RemoveByMsg(one(d)?.to_string()),
        "secruleupdatetargetbyid" | "secruleupdatetargetbytag" => {
            let [what, targets] = d.args.as_slice() else {
                return Err(Bad::new(
                    &d.name,
                    format!("{} takes a rule and targets", d.name),
                ));
            };
            let targets = variables::parse(targets)?;
            match name.as_str() {
                "secruleupdatetargetbyid" => Directive::UpdateTargetById(
                    IdRange::parse(what).ok_or_else(|| Bad::new(what, "expected an id"))?,
                    targets,
                ),
                _ => Directive::UpdateTargetByTag(what.to_string(), targets),
            }
        }
        "secruleupdateactionbyid" => {
            let [id, acts] = d.args.as_slice() else {
                return Err(Bad::new(
                    &d.name,
                    "SecRuleUpdateActionById takes an id and actions",
                ));
            };
            Directive::UpdateActionById(
                id.parse().map_err(|_| Bad::new(id, "expected an id"))?,
                actions::parse(acts)?,
            )
        }
        "seccomponentsignature" => Directive::ComponentSignature(one(d)?.to_string()),
        n if IGNORED.contains(&n) => Directive::Ignored(d.name.clone()),
        _ => return Err(Bad::new(&d.name, "unknown directive")),
    })
}
