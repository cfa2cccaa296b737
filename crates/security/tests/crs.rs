//! The whole OWASP CRS v4.28 (`../shared/crs`) loads: the setup file and every rule
//! file through one `Include` glob, with the rule counts and operator uses that CRS's
//! README states for these files.

use gatehouse_security::actions::Action;
use gatehouse_security::operator::OpName;
use gatehouse_security::operators::CompiledOp;
use gatehouse_security::{load_str, Directive, Rule};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn crs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/crs")
}

fn each_rule<'a>(r: &'a Rule, f: &mut impl FnMut(&'a Rule)) {
    f(r);
    if let Some(next) = &r.chained {
        each_rule(next, f);
    }
}

#[test]
fn the_core_rule_set_loads_whole() {
    let dir = crs();
    let main = "Include crs-setup.conf.example\nInclude rules/*.conf\n";
    let all = load_str(main, Path::new("main.conf"), &dir).unwrap_or_else(|e| panic!("{e}"));

    let in_rules = |file: &Path| file.parent().is_some_and(|p| p.ends_with("rules"));
    let (mut with_id, mut chained) = (0, 0);
    let mut ops: HashMap<OpName, usize> = HashMap::new();
    let mut files = std::collections::BTreeSet::new();
    for l in &all {
        if !in_rules(&l.file) {
            continue;
        }
        files.insert(l.file.to_path_buf());
        match &l.directive {
            Directive::Rule(r) => {
                if r.id().is_some() {
                    with_id += 1;
                }
                each_rule(r, &mut |x| {
                    *ops.entry(x.operator.name).or_default() += 1;
                    if !std::ptr::eq(x, r) {
                        chained += 1;
                    }
                });
            }
            Directive::Action { actions, .. }
                if actions.iter().any(|a| matches!(a, Action::Id(_))) =>
            {
                with_id += 1;
            }
            _ => {}
        }
    }
    assert_eq!(files.len(), 27, "rule files");
    assert_eq!(with_id, 629, "rules with an id");
    assert_eq!(chained, 73, "chained sub-rules");
    let expected = [
        (OpName::Rx, 318),
        (OpName::Lt, 190),
        (OpName::Eq, 53),
        (OpName::Ge, 42),
        (OpName::PmFromFile, 21),
        (OpName::Gt, 15),
        (OpName::Pm, 12),
        (OpName::Streq, 9),
        (OpName::Within, 9),
        (OpName::EndsWith, 6),
        (OpName::ValidateByteRange, 6),
        (OpName::Contains, 4),
        (OpName::IpMatch, 2),
        (OpName::DetectSqli, 2),
        (OpName::DetectXss, 2),
        (OpName::BeginsWith, 1),
        (OpName::UnconditionalMatch, 1),
        (OpName::ValidateUrlEncoding, 1),
        (OpName::ValidateUtf8Encoding, 1),
    ];
    for (op, n) in expected {
        assert_eq!(ops.get(&op).copied().unwrap_or(0), n, "{op:?}: {ops:?}");
    }

    // Every @rx compiles with byte semantics.
    let mut compiled = 0;
    for l in &all {
        if let Directive::Rule(r) = &l.directive {
            each_rule(r, &mut |x| {
                if x.operator.name == OpName::Rx {
                    gatehouse_security::pattern::compile(&x.operator.argument)
                        .unwrap_or_else(|e| panic!("{}:{}: {e:?}", x.file.display(), x.line));
                    compiled += 1;
                }
            });
        }
    }
    assert!(compiled >= 318, "{compiled} regexes");

    // Every operator compiles (phrase files read next to the rules).
    for l in &all {
        if let Directive::Rule(r) = &l.directive {
            each_rule(r, &mut |x| {
                let dir = x.file.parent().unwrap_or(Path::new("."));
                if let Err(e) =
                    CompiledOp::compile(&x.operator, dir, &gatehouse_security::operators::Disk)
                {
                    panic!("{}:{}: {e:?}", x.file.display(), x.line);
                }
            });
        }
    }
}

#[test]
fn the_core_rule_set_compiles() {
    let dir = crs();
    let main = "Include crs-setup.conf.example\nInclude rules/*.conf\n";
    let all = load_str(main, Path::new("main.conf"), &dir).unwrap_or_else(|e| panic!("{e}"));
    let set = gatehouse_security::ruleset::compile(all).unwrap_or_else(|e| panic!("{e}"));
    let per_phase: Vec<usize> = set
        .phases
        .iter()
        .map(|p| {
            p.iter()
                .filter(|e| matches!(e, gatehouse_security::ruleset::Entry::Rule(_)))
                .count()
        })
        .collect();
    assert!(
        per_phase[0] > 0 && per_phase[1] > 0 && per_phase[3] > 0,
        "{per_phase:?}"
    );
    // CRS blocks through its evaluation rule; its detection rules pass (SecDefaultAction).
    use gatehouse_security::ruleset::Disruptive;
    assert_eq!(
        set.rule(949110).and_then(|r| r.disruptive.clone()),
        Some(Disruptive::Deny)
    );
    assert_eq!(
        set.rule(942100).and_then(|r| r.disruptive.clone()),
        Some(Disruptive::Pass),
        "libinjection's SQLi rule"
    );
    assert_eq!(
        set.rule(942140).and_then(|r| r.disruptive.clone()),
        Some(Disruptive::Pass)
    );
    assert_eq!(set.signatures, vec!["OWASP_CRS/4.28.0".to_string()]);
}
