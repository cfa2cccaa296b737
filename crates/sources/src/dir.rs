//! Loads every manifest (`*.yaml`, `*.yml`, `*.json`) under a directory, recursively,
//! in a stable order, into objects; reports every error of every file at once.

use gatehouse_model::manifest::parse_manifest;
use gatehouse_model::{ConfigError, ObjectKey, ObjectStore, StoredObject};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What a directory held.
#[derive(Debug)]
pub struct Loaded {
    pub store: ObjectStore,
    pub files: usize,
    /// Documents of kinds Gatehouse does not read (Deployments and the like).
    pub skipped: usize,
}

fn manifest_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let name = name.to_string_lossy();
        // Editors' swap and backup files are not manifests.
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        let path = e.path();
        if e.file_type()?.is_dir() {
            manifest_files(&path, out)?;
        } else if name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json") {
            out.push(path);
        }
    }
    Ok(())
}

/// Loads a directory; any error fails the whole load.
pub fn load_dir(dir: &Path) -> Result<Loaded, Vec<ConfigError>> {
    let (loaded, errors) = load_dir_partial(dir);
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

/// Loads a directory, returning the objects that parsed and every error found. Every
/// file is parsed even after an error, so a user sees all problems at once; an object
/// defined twice is an error naming both places.
pub fn load_dir_partial(dir: &Path) -> (Loaded, Vec<ConfigError>) {
    let shown = dir.display().to_string();
    let mut files = Vec::new();
    if let Err(e) = manifest_files(dir, &mut files) {
        let empty = Loaded {
            store: ObjectStore::new(),
            files: 0,
            skipped: 0,
        };
        return (
            empty,
            vec![ConfigError::file(
                &shown,
                None,
                format!("cannot read directory: {e}"),
            )],
        );
    }
    let mut errors = Vec::new();
    let mut objects: Vec<StoredObject> = Vec::new();
    let mut skipped = 0;
    for path in &files {
        let name = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(ConfigError::file(
                    &name,
                    None,
                    format!("cannot read file: {e}"),
                ));
                continue;
            }
        };
        match parse_manifest(&name, &text) {
            Ok(p) => {
                objects.extend(p.objects);
                skipped += p.skipped;
            }
            Err(es) => errors.extend(es),
        }
    }
    let mut seen: HashMap<ObjectKey, String> = HashMap::new();
    for o in &objects {
        let place = o
            .origin
            .as_ref()
            .map(|or| format!("{}:{}", or.file, or.start_line))
            .unwrap_or_default();
        if let Some(first) = seen.insert(o.key(), place) {
            errors.push(o.error(
                "metadata.name",
                format!("{} is defined twice (also at {first})", o.key()),
            ));
        }
    }
    (
        Loaded {
            store: ObjectStore::from_objects(objects),
            files: files.len(),
            skipped,
        },
        errors,
    )
}
