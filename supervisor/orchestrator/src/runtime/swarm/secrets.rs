//! The state directory's files a service reads, as Swarm secrets: what each kind gets, and
//! where it is mounted.

use super::*;

/// One file a relay reads, as a Swarm secret: where it appears in the container, and its
/// content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SecretFile {
    pub(super) target: String,
    pub(super) data: Vec<u8>,
}

impl SecretFile {
    /// The secret's name: the stack, where the file goes and a hash of its content, so a
    /// renewed file is a new secret and a relay's secrets never change under it.
    pub(super) fn name(&self, stack: &str) -> String {
        let hash = Sha256::digest(&self.data);
        let hash: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
        let slug: String = self
            .target
            .trim_start_matches(docker::MOUNT)
            .trim_start_matches('/')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let mut name = format!("ghost-{stack}-{slug}");
        // Swarm takes names of 64 characters at most.
        name.truncate(64 - hash.len() - 1);
        format!("{name}-{hash}")
    }
}

/// The files a `kind` service reads, read now from the state directory at `root`: each
/// file its flags name, and each file of a directory they name.
pub(super) fn secret_files(kind: Kind, root: &Path) -> Result<Vec<SecretFile>> {
    let state = StateDir::new(root);
    let mut out = Vec::new();
    for file in services::service(kind).files() {
        let path = file.path_in(&state);
        let target = docker::mount_point(file);
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(super::super::Error::io("reading", &path))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            entries.sort();
            for entry in entries {
                let Some(name) = entry.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                out.push(SecretFile {
                    target: format!("{target}/{name}"),
                    data: std::fs::read(&entry)
                        .map_err(super::super::Error::io("reading", &entry))?,
                });
            }
        } else {
            out.push(SecretFile {
                target,
                data: std::fs::read(&path).map_err(super::super::Error::io("reading", &path))?,
            });
        }
    }
    Ok(out)
}
