//! A loaded SecLang configuration compiled into what the engine runs: rules per phase
//! in order (markers in every phase, for `skipAfter`), each with its operator compiled,
//! its transformations resolved (`t:none` clears the inherited ones), its disruptive
//! action resolved (`block` takes the phase's `SecDefaultAction`), and its message,
//! log data and `setvar`s parsed into templates. `SecRuleRemoveBy*` and
//! `SecRuleUpdateTargetBy*` apply to the rules loaded before them, as in ModSecurity.

use crate::actions::{Action, Ctl, EngineMode, IdRange, SetOp, Transform};
use crate::directive::{Directive, LimitAction, Rule};
use crate::error::ParseError;
use crate::load::Located;
use crate::macros::Template;
use crate::operators::{CompiledOp, DataFiles, Disk};
use crate::target::Target;
use crate::variables::Variable;
use std::path::Path;
use std::sync::Arc;

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disruptive {
    Pass,
    Deny,
    Drop,
    Allow,
    Redirect(Template),
}

/// A `setvar`, with its name and value as templates.
#[derive(Debug, Clone)]
pub struct SetVarOp {
    pub collection: String,
    pub name: Template,
    pub op: SetOp,
    pub value: Template,
}

/// A rule ready to run.
#[derive(Debug)]
pub struct CompiledRule {
    pub id: Option<u32>,
    pub phase: u8,
    pub variables: Vec<Variable>,
    pub operator: CompiledOp,
    pub transforms: Vec<Transform>,
    /// Only on the first rule of a chain (the chain's verdict).
    pub disruptive: Option<Disruptive>,
    pub status: Option<u16>,
    pub msg: Option<Template>,
    pub logdata: Option<Template>,
    pub tags: Vec<String>,
    pub severity: Option<u8>,
    pub setvars: Vec<SetVarOp>,
    pub ctls: Vec<RuleCtl>,
    /// `variables`, compiled (after every `SecRuleUpdateTarget*` has applied).
    pub targets: Vec<Target>,
    /// For each prefix of `transforms`, an id shared by every rule with the same
    /// prefix (the key of a transaction's transformation cache).
    pub prefix_ids: Vec<u32>,
    /// Literals every match of this rule's `@rx` contains, while compiling.
    literals: Option<Vec<Vec<u8>>>,
    /// The prefilter group (by transformation chain) and this rule's slot in it.
    pub prefilter: Option<(u32, u32)>,
    pub capture: bool,
    pub multi_match: bool,
    /// Set for a `TX`-only test that skips and does nothing else, when no rule that
    /// runs per request writes what it reads: whether it matches, known at load.
    pub fixed: Option<bool>,
    pub log: bool,
    pub audit_log: bool,
    pub skip_after: Option<String>,
    pub skip: Option<u32>,
    pub chained: Option<Box<CompiledRule>>,
    pub file: Arc<Path>,
    pub line: usize,
}

/// A `ctl:` action ready to run: target removals carry compiled targets.
#[derive(Debug, Clone)]
pub enum RuleCtl {
    Plain(Ctl),
    RemoveTargetById(IdRange, Vec<Target>),
    RemoveTargetByTag(String, Vec<Target>),
}

/// One step of a phase.
#[derive(Debug)]
pub enum Entry {
    Rule(Box<CompiledRule>),
    Marker(String),
}

/// A compiled configuration.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub engine: Option<EngineMode>,
    pub request_body_access: bool,
    pub response_body_access: bool,
    pub request_body_limit: Option<u64>,
    pub request_body_no_files_limit: Option<u64>,
    pub request_body_limit_action: Option<LimitAction>,
    pub response_body_limit: Option<u64>,
    pub response_body_limit_action: Option<LimitAction>,
    pub response_mime_types: Vec<String>,
    pub signatures: Vec<String>,
    /// Phases 1 to 5, at index 0 to 4.
    pub phases: [Vec<Entry>; 5],
    /// Literal prefilters of `@rx` rules, by the transformation chain they share.
    pub prefilters: rustc_hash::FxHashMap<u32, crate::prefilter::Group>,
    /// Phase 1's leading rules that read only `TX`, run once at compile time.
    pub prologue: crate::prologue::Prologue,
}

impl RuleSet {
    pub fn rules(&self) -> impl Iterator<Item = &CompiledRule> {
        self.phases.iter().flatten().filter_map(|e| match e {
            Entry::Rule(r) => Some(&**r),
            Entry::Marker(_) => None,
        })
    }

    pub fn rule(&self, id: u32) -> Option<&CompiledRule> {
        self.rules().find(|r| r.id == Some(id))
    }
}

/// The defaults a phase's rules inherit (`SecDefaultAction`).
#[derive(Clone)]
struct Defaults {
    disruptive: Disruptive,
    log: bool,
    audit_log: bool,
    transforms: Vec<Transform>,
    status: Option<u16>,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            disruptive: Disruptive::Pass,
            log: true,
            audit_log: true,
            transforms: Vec::new(),
            status: None,
        }
    }
}

fn error(
    file: &Path,
    line: usize,
    token: impl Into<String>,
    message: impl Into<String>,
) -> ParseError {
    ParseError {
        file: file.to_path_buf(),
        line,
        token: token.into(),
        message: message.into(),
    }
}

/// Compiles loaded directives, reading `@pmFromFile` files from the disk.
pub fn compile(all: Vec<Located>) -> Result<RuleSet, ParseError> {
    compile_with(all, &Disk)
}

/// Compiles loaded directives, reading `@pmFromFile` files from `files`.
pub fn compile_with(all: Vec<Located>, files: &dyn DataFiles) -> Result<RuleSet, ParseError> {
    let mut set = RuleSet::default();
    let mut defaults: [Defaults; 5] = Default::default();
    for l in all {
        let (file, line) = (l.file.clone(), l.line);
        match l.directive {
            Directive::Rule(rule) => {
                let phase = phase_of(&rule.actions);
                let compiled = compile_rule(rule, &defaults[phase as usize - 1], true, files)?;
                set.phases[phase as usize - 1].push(Entry::Rule(Box::new(compiled)));
            }
            Directive::Action {
                actions,
                file,
                line,
            } => {
                let phase = phase_of(&actions);
                let rule = Rule {
                    variables: Vec::new(),
                    operator: crate::operator::Operator {
                        name: crate::operator::OpName::UnconditionalMatch,
                        negated: false,
                        argument: String::new(),
                    },
                    actions,
                    chained: None,
                    file,
                    line,
                };
                let compiled = compile_rule(rule, &defaults[phase as usize - 1], true, files)?;
                set.phases[phase as usize - 1].push(Entry::Rule(Box::new(compiled)));
            }
            Directive::Marker(name) => {
                for p in &mut set.phases {
                    p.push(Entry::Marker(name.clone()));
                }
            }
            Directive::DefaultAction(actions) => {
                let phase = phase_in(&actions).ok_or_else(|| {
                    error(
                        &file,
                        line,
                        "SecDefaultAction",
                        "SecDefaultAction needs a phase",
                    )
                })?;
                let d = &mut defaults[phase as usize - 1];
                *d = Defaults::default();
                for a in &actions {
                    match a {
                        Action::Log => d.log = true,
                        Action::NoLog => d.log = false,
                        Action::AuditLog => d.audit_log = true,
                        Action::NoAuditLog => d.audit_log = false,
                        Action::T(Transform::None) => d.transforms.clear(),
                        Action::T(t) => d.transforms.push(*t),
                        Action::Status(s) => d.status = Some(*s),
                        Action::Block => {
                            return Err(error(
                                &file,
                                line,
                                "block",
                                "SecDefaultAction cannot be block",
                            ))
                        }
                        a => {
                            if let Some(dis) = disruptive(a) {
                                d.disruptive = dis;
                            }
                        }
                    }
                }
            }
            Directive::RemoveById(ranges) => retain(&mut set, |r| {
                !r.id
                    .is_some_and(|id| ranges.iter().any(|range| range.contains(id)))
            }),
            Directive::RemoveByTag(tag) => retain(&mut set, |r| !r.tags.contains(&tag)),
            Directive::RemoveByMsg(msg) => retain(&mut set, |r| {
                r.msg
                    .as_ref()
                    .is_none_or(|m| m.expand(&crate::macros::NoVars).as_ref() != msg.as_bytes())
            }),
            Directive::UpdateTargetById(range, vars) => {
                for r in rules_mut(&mut set) {
                    if r.id.is_some_and(|id| range.contains(id)) {
                        r.variables.extend(vars.iter().cloned());
                    }
                }
            }
            Directive::UpdateTargetByTag(tag, vars) => {
                for r in rules_mut(&mut set) {
                    if r.tags.contains(&tag) {
                        r.variables.extend(vars.iter().cloned());
                    }
                }
            }
            Directive::UpdateActionById(id, actions) => {
                let found = rules_mut(&mut set).find(|r| r.id == Some(id));
                let Some(r) = found else {
                    return Err(error(&file, line, id.to_string(), "no rule with this id"));
                };
                let d = defaults[r.phase as usize - 1].clone();
                update_actions_with(r, &actions, &d);
            }
            Directive::RuleEngine(m) => set.engine = Some(m),
            Directive::RequestBodyAccess(b) => set.request_body_access = b,
            Directive::ResponseBodyAccess(b) => set.response_body_access = b,
            Directive::RequestBodyLimit(n) => set.request_body_limit = Some(n),
            Directive::RequestBodyNoFilesLimit(n) => set.request_body_no_files_limit = Some(n),
            Directive::RequestBodyLimitAction(a) => set.request_body_limit_action = Some(a),
            Directive::ResponseBodyLimit(n) => set.response_body_limit = Some(n),
            Directive::ResponseBodyLimitAction(a) => set.response_body_limit_action = Some(a),
            Directive::ResponseBodyMimeType(types) => set.response_mime_types = types,
            Directive::ComponentSignature(s) => set.signatures.push(s),
            Directive::Ignored(_) => {}
        }
    }
    let mut prefixes = std::collections::HashMap::new();
    for p in &mut set.phases {
        for e in p {
            if let Entry::Rule(r) = e {
                finish(r, &mut prefixes)?;
            }
        }
    }
    group_prefilters(&mut set);
    set.prologue = crate::prologue::Prologue::of(&set);
    crate::prologue::fold(&mut set);
    Ok(set)
}

/// Compiles a rule's (and its chain's) targets and `ctl` target lists, once every
/// directive that changes them has applied.
fn finish(
    r: &mut CompiledRule,
    prefixes: &mut std::collections::HashMap<Vec<Transform>, u32>,
) -> Result<(), ParseError> {
    r.prefix_ids = (1..=r.transforms.len())
        .map(|n| {
            let next = prefixes.len() as u32;
            *prefixes.entry(r.transforms[..n].to_vec()).or_insert(next)
        })
        .collect();
    let (file, line) = (r.file.clone(), r.line);
    let targets = |vars: &[Variable]| -> Result<Vec<Target>, ParseError> {
        vars.iter()
            .map(|v| Target::compile(v).map_err(|b| error(&file, line, b.token, b.message)))
            .collect()
    };
    r.targets = targets(&r.variables)?;
    for c in &mut r.ctls {
        let compiled = match &*c {
            RuleCtl::Plain(Ctl::RuleRemoveTargetById(range, vars)) => {
                RuleCtl::RemoveTargetById(*range, targets(vars)?)
            }
            RuleCtl::Plain(Ctl::RuleRemoveTargetByTag(tag, vars)) => {
                RuleCtl::RemoveTargetByTag(tag.clone(), targets(vars)?)
            }
            other => other.clone(),
        };
        *c = compiled;
    }
    if let Some(next) = &mut r.chained {
        finish(next, prefixes)?;
    }
    Ok(())
}

fn phase_in(actions: &[Action]) -> Option<u8> {
    actions.iter().find_map(|a| match a {
        Action::Phase(p) => Some(*p),
        _ => None,
    })
}

/// A rule's phase: its own, else 2 (ModSecurity's default).
fn phase_of(actions: &[Action]) -> u8 {
    phase_in(actions).unwrap_or(2)
}

fn disruptive(a: &Action) -> Option<Disruptive> {
    Some(match a {
        Action::Pass => Disruptive::Pass,
        Action::Deny => Disruptive::Deny,
        Action::Drop => Disruptive::Drop,
        Action::Allow => Disruptive::Allow,
        Action::Redirect(to) => Disruptive::Redirect(Template::parse(to)),
        _ => return None,
    })
}

fn compile_rule(
    rule: Rule,
    d: &Defaults,
    first: bool,
    files: &dyn DataFiles,
) -> Result<CompiledRule, ParseError> {
    let dir = rule.file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let operator = CompiledOp::compile(&rule.operator, &dir, files)
        .map_err(|b| error(&rule.file, rule.line, b.token, b.message))?;
    let mut c = CompiledRule {
        id: None,
        phase: phase_of(&rule.actions),
        variables: rule.variables,
        operator,
        transforms: d.transforms.clone(),
        disruptive: first.then(|| d.disruptive.clone()),
        status: d.status,
        msg: None,
        logdata: None,
        tags: Vec::new(),
        severity: None,
        setvars: Vec::new(),
        ctls: Vec::new(),
        targets: Vec::new(),
        prefix_ids: Vec::new(),
        literals: match (rule.operator.name, rule.operator.negated) {
            (crate::operator::OpName::Rx, _) => {
                crate::prefilter::required_literals(&rule.operator.argument)
            }
            _ => None,
        },
        prefilter: None,
        capture: false,
        multi_match: false,
        fixed: None,
        log: d.log,
        audit_log: d.audit_log,
        skip_after: None,
        skip: None,
        chained: None,
        file: rule.file.clone(),
        line: rule.line,
    };
    update_actions_with(&mut c, &rule.actions, d);
    if let Some(next) = rule.chained {
        c.chained = Some(Box::new(compile_rule(*next, d, false, files)?));
    }
    Ok(c)
}

fn update_actions_with(c: &mut CompiledRule, actions: &[Action], d: &Defaults) {
    for a in actions {
        match a {
            Action::Id(n) => c.id = Some(*n),
            Action::Phase(p) => c.phase = *p,
            Action::Msg(m) => c.msg = Some(Template::parse(m)),
            Action::LogData(m) => c.logdata = Some(Template::parse(m)),
            Action::Tag(t) => c.tags.push(t.clone()),
            Action::Severity(s) => c.severity = Some(*s),
            Action::T(Transform::None) => c.transforms.clear(),
            Action::T(t) => c.transforms.push(*t),
            Action::SetVar(s) => c.setvars.push(SetVarOp {
                collection: s.collection.clone(),
                name: Template::parse(&s.name),
                value: Template::parse(match &s.op {
                    SetOp::Set(v) | SetOp::Add(v) | SetOp::Sub(v) => v,
                    SetOp::Delete => "",
                }),
                op: s.op.clone(),
            }),
            Action::Ctl(ctl) => c.ctls.push(RuleCtl::Plain(ctl.clone())),
            Action::Capture => c.capture = true,
            Action::MultiMatch => c.multi_match = true,
            Action::Log => c.log = true,
            Action::NoLog => c.log = false,
            Action::AuditLog => c.audit_log = true,
            Action::NoAuditLog => c.audit_log = false,
            Action::SkipAfter(m) => c.skip_after = Some(m.clone()),
            Action::Skip(n) => c.skip = Some(*n),
            Action::Status(s) => c.status = Some(*s),
            Action::Block => c.disruptive = Some(d.disruptive.clone()),
            a => {
                if let Some(dis) = disruptive(a) {
                    c.disruptive = Some(dis);
                }
            }
        }
    }
}

/// The key of a rule's whole transformation chain.
pub fn chain_key(r: &CompiledRule) -> u32 {
    r.prefix_ids.last().copied().unwrap_or(u32::MAX)
}

/// Gives every `@rx` rule with literals (not `multiMatch`) a slot in the prefilter of
/// its transformation chain.
fn group_prefilters(set: &mut RuleSet) {
    let mut sets: std::collections::HashMap<u32, Vec<Vec<Vec<u8>>>> = Default::default();
    fn each(r: &mut CompiledRule, f: &mut dyn FnMut(&mut CompiledRule)) {
        f(r);
        if let Some(n) = &mut r.chained {
            each(n, f);
        }
    }
    for p in &mut set.phases {
        for e in p {
            if let Entry::Rule(r) = e {
                each(r, &mut |r| {
                    if let (Some(lits), false) = (r.literals.take(), r.multi_match) {
                        let key = chain_key(r);
                        let group = sets.entry(key).or_default();
                        if group.len() < crate::prefilter::MAX_SLOTS {
                            r.prefilter = Some((key, group.len() as u32));
                            group.push(lits);
                        }
                    }
                });
            }
        }
    }
    for (key, group) in sets {
        if let Some(g) = crate::prefilter::Group::build(&group) {
            set.prefilters.insert(key, g);
        }
    }
}

fn rules_mut(set: &mut RuleSet) -> impl Iterator<Item = &mut CompiledRule> {
    set.phases.iter_mut().flatten().filter_map(|e| match e {
        Entry::Rule(r) => Some(&mut **r),
        Entry::Marker(_) => None,
    })
}

fn retain(set: &mut RuleSet, keep: impl Fn(&CompiledRule) -> bool) {
    for p in &mut set.phases {
        p.retain(|e| match e {
            Entry::Rule(r) => keep(r),
            Entry::Marker(_) => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_str;

    fn set(text: &str) -> RuleSet {
        compile(load_str(text, Path::new("t.conf"), Path::new(".")).expect("loads"))
            .expect("compiles")
    }

    #[test]
    fn defaults_block_and_transformations() {
        let s = set(concat!(
            "SecDefaultAction \"phase:2,log,auditlog,deny,status:403,t:lowercase\"\n",
            "SecRule ARGS \"@rx a\" \"id:1,phase:2,block,t:urlDecode\"\n",
            "SecRule ARGS \"@rx a\" \"id:2,phase:2,pass,t:none,t:trim,nolog\"\n",
            "SecRule ARGS \"@rx a\" \"id:3,phase:1,block\"\n",
        ));
        let r1 = s.rule(1).expect("1");
        assert_eq!(r1.disruptive, Some(Disruptive::Deny));
        assert_eq!(r1.status, Some(403));
        assert_eq!(
            r1.transforms,
            vec![Transform::Lowercase, Transform::UrlDecode]
        );
        let r2 = s.rule(2).expect("2");
        assert_eq!(
            (r2.disruptive.clone(), r2.log),
            (Some(Disruptive::Pass), false)
        );
        assert_eq!(r2.transforms, vec![Transform::Trim]);
        assert_eq!(
            s.rule(3).expect("3").disruptive,
            Some(Disruptive::Pass),
            "phase 1 has its own default"
        );
    }

    #[test]
    fn removals_and_target_updates_apply_to_rules_before_them() {
        let s = set(concat!(
            "SecRule ARGS \"@rx a\" \"id:10,phase:2,pass,tag:'x'\"\n",
            "SecRule ARGS \"@rx a\" \"id:11,phase:2,pass,tag:'y'\"\n",
            "SecRule ARGS \"@rx a\" \"id:12,phase:2,pass\"\n",
            "SecRuleRemoveById 10\n",
            "SecRuleRemoveByTag y\n",
            "SecRuleUpdateTargetById 12 \"!ARGS:secret\"\n",
            "SecRule ARGS \"@rx a\" \"id:10,phase:2,pass\"\n",
        ));
        let ids: Vec<_> = s.rules().filter_map(|r| r.id).collect();
        assert_eq!(ids, vec![12, 10], "the later rule 10 stays");
        let r12 = s.rule(12).expect("12");
        assert_eq!(r12.variables.len(), 2);
        assert!(r12.variables[1].exclude);
    }

    #[test]
    fn markers_go_to_every_phase_and_chains_keep_their_verdict_first() {
        let s = set(concat!(
            "SecRule ARGS \"@rx a\" \"id:20,phase:1,deny,chain\"\n",
            "SecRule ARGS \"@rx b\" \"t:lowercase,setvar:'tx.x=+1'\"\n",
            "SecMarker END-X\n",
        ));
        assert!(s
            .phases
            .iter()
            .all(|p| matches!(p.last(), Some(Entry::Marker(m)) if m == "END-X")));
        let r = s.rule(20).expect("20");
        let next = r.chained.as_ref().expect("chained");
        assert_eq!(r.disruptive, Some(Disruptive::Deny));
        assert_eq!(next.disruptive, None);
        assert_eq!(next.setvars.len(), 1);
    }
}
